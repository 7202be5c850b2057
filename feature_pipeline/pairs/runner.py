"""Run the pair jobs: services, the Quix application, the pair graph, the Feast sink; until stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.streaming import new_application, run_application
from feature_pipeline.pairs.dataflow import VIEW, build_pairs_dataflow, pair_topics
from feature_pipeline.runtime import dead_letter_writer, prepare
from feature_pipeline.sinks.feast_sink import FeastSink, single_view


@dataclass
class PairsRunSummary:
    seconds: float
    rows_written: dict[str, int]
    rejects: list[Rejects]  # the candidates', the candles', then the jobs' skips
    sink_rejects: list[Rejects] = field(default_factory=list)

    @property
    def stages(self) -> list[Rejects]:
        return [*self.rejects, *self.sink_rejects]


def run_pairs_pipeline(settings: Settings) -> PairsRunSummary:
    """Run the pair jobs over the pair_candidates and candles topics until the application is stopped (Ctrl-C,
    SIGTERM)."""
    broker = prepare(settings)
    app = new_application(settings, broker, consumer_group=settings.pair_jobs.consumer_group)
    topics = pair_topics(app, settings)
    sink = FeastSink(
        lambda: feature_store(settings),
        single_view(VIEW),
        retries=settings.stream.sink_retries,
        dead_letter=dead_letter_writer(app, topics.dead_letters.name),
        stage="feast_sink_pairs",
    )
    rejects = build_pairs_dataflow(app, topics, settings, sink)
    started = time.monotonic()
    run_application(app, broker, None)
    return PairsRunSummary(time.monotonic() - started, dict(sink.rows_written), rejects, [sink.rejects])
