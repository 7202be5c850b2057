"""The universe graph: candles of many tickers -> per-ticker features -> feature store.

The universe job (`job.py`, hooks of `coinflow.jobs`) run by the job framework: one stateful step per candle, in
Quix state keyed by pair (the message key). Rejected candles are counted and dead-lettered; end markers ride
through to the sink, which tells a finite run when all is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd
from quixstreams import Application
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink
from quixstreams.state import State

from coinflow.jobs import Job, build_job_dataflow, job_step
from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.streaming import json_topic, topic_config
from feature_pipeline.universe import job
from feature_pipeline.universe.job import UNDEFINED_HURST, UniverseConfig, universe_candle_reason, universe_params
from feature_repo.names import universe_view

__all__ = ["UNDEFINED_HURST", "universe_candle_reason", "universe_params"]  # the job's, kept importable here

UNIVERSE_JOB = Job.from_module(job, "universe")


def compute_universe_features(settings: Settings, rejects: Rejects, hurst: Rejects) -> Callable:
    """The job's step as one function: a candle -> its ticker's feature row, an end marker as it came, or the
    dead-letter record of a rejected candle; undefined Hurst values are counted in `hurst`."""
    step = job_step(UNIVERSE_JOB, UniverseConfig(job.setup(settings).params, hurst), rejects)

    def features(record: dict, key: str | None, timestamp: int, headers, state: State) -> dict | None:
        out = step(record, key, timestamp, headers, state)
        return None if out is None else out[1]

    return features


def universe_routes(frame: pd.DataFrame) -> Iterable[tuple[tuple[str, ...], pd.DataFrame]]:
    """Universe feature rows feed the view of their interval."""
    for interval, group in frame.groupby("interval", sort=False):
        yield (universe_view(str(interval)),), group


def universe_topics(app: Application, settings: Settings) -> tuple[Topic, Topic]:
    """The universe candles topic and the dead-letter topic."""
    config = topic_config(settings)
    return (
        json_topic(app, settings.universe.candles_topic, config),
        json_topic(app, settings.topics.dead_letters, config, "bytes"),
    )


def build_universe_dataflow(
    app: Application, candles: Topic, dead_letters: Topic, settings: Settings, sink: BaseSink
) -> tuple[Rejects, Rejects]:
    """Wire the universe job into `app`; returns its reject counters and its undefined-Hurst counter."""
    run = build_job_dataflow(
        app, UNIVERSE_JOB, settings, candles, dead_letters, sink=sink, rejects=Rejects("universe_dataflow")
    )
    return run.rejects, run.config.hurst
