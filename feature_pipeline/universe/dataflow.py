"""The universe graph: candles of many tickers -> per-ticker features -> feature store.

One stateful step per candle, in Quix state keyed by pair (the message key):
the ticker's last close and window of log returns (`transforms.universe_features`),
one state per interval. Rejected candles are counted and dead-lettered; end
markers ride through to the sink, which tells a finite run when all is stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pandas as pd
from quixstreams import Application
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink
from quixstreams.state import State

from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END, INTERVALS_SECONDS
from coinflow.settings import Settings
from coinflow.streaming import json_topic, topic_config
from feature_pipeline.transforms.universe_features import UniverseParams, new_ticker_state, update_ticker
from feature_repo.names import universe_view

UNDEFINED_HURST = "undefined_hurst"  # counted, not dead-lettered: the row is written with a NaN Hurst


def universe_params(settings: Settings, interval: str) -> UniverseParams:
    universe = settings.universe
    return UniverseParams(
        interval_ms=INTERVALS_SECONDS[interval] * 1000,
        volatility_window=universe.volatility_window,
        hurst_window=universe.hurst_window,
        max_gap=universe.max_gap_intervals,
    )


def universe_candle_reason(record: object, key: str | None) -> str | None:
    """Why a record of the universe candles topic cannot be used (what the features read: its pair, known
    interval, close time and a positive finite close), or None. Full candles of the candles topic pass too."""
    if not isinstance(record, dict):
        return "not_an_object"
    if not isinstance(record.get("pair"), str) or record.get("interval") not in INTERVALS_SECONDS:
        return "missing_pair_or_interval"
    if key is not None and record["pair"] != key:
        return "key_mismatch"
    end, close = record.get("window_end_ms"), record.get("close")
    if not isinstance(end, int) or isinstance(end, bool):
        return "bad_timestamp"
    if not isinstance(close, int | float) or isinstance(close, bool) or not (math.isfinite(close) and close > 0):
        return "non_positive_or_nan"
    return None


def compute_universe_features(settings: Settings, rejects: Rejects, hurst: Rejects) -> Callable:
    """The stateful step: a candle -> its ticker's feature row (pair, interval, window_end_ms, features), an end
    marker as it came, or the dead-letter record of a rejected candle; undefined Hurst values are counted in
    `hurst`."""
    params = {interval: universe_params(settings, interval) for interval in INTERVALS_SECONDS}

    def step(record: dict, key: str | None, timestamp: int, headers, state: State) -> dict:
        if isinstance(record, dict) and record.get("control") == CONTROL_END:
            return record
        reason = universe_candle_reason(record, key)
        if reason is not None:
            return rejects.reject(reason, record)
        state_key = f"universe:{record['interval']}"
        ticker = state.get(state_key) or new_ticker_state()
        out = update_ticker(ticker, record["window_end_ms"], float(record["close"]), params[record["interval"]])
        if isinstance(out, str):
            return rejects.reject(out, record)
        values, undefined = out
        if undefined:
            hurst.add({UNDEFINED_HURST: 1})
        state.set(state_key, ticker)
        return {
            "pair": record["pair"],
            "interval": record["interval"],
            "window_end_ms": record["window_end_ms"],
            **values,
        }

    return step


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


def is_dead_letter(record: dict) -> bool:
    return "stage" in record


def build_universe_dataflow(
    app: Application, candles: Topic, dead_letters: Topic, settings: Settings, sink: BaseSink
) -> tuple[Rejects, Rejects]:
    """Wire the universe graph into `app`; returns its reject counters and its undefined-Hurst counter."""
    rejects, hurst = Rejects("universe_dataflow"), Rejects("universe_hurst")
    outputs = app.dataframe(candles).apply(
        compute_universe_features(settings, rejects, hurst), stateful=True, metadata=True
    )
    outputs.filter(is_dead_letter).to_topic(dead_letters)
    outputs.filter(lambda r: not is_dead_letter(r)).sink(sink)
    return rejects, hurst
