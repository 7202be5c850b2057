"""Run the universe pipeline: services, the Quix application, the universe graph, a source, the Feast sink."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.streaming import new_application, run_application
from feature_pipeline.runtime import Completion, dead_letter_writer, prepare
from feature_pipeline.sinks.feast_sink import FeastSink
from feature_pipeline.sources.file_sources import UniverseFilesSource
from feature_pipeline.sources.process import SourceRelay
from feature_pipeline.universe.dataflow import build_universe_dataflow, universe_routes, universe_topics


@dataclass
class UniverseRunSummary:
    seconds: float
    rows_written: dict[str, int]
    rejects: list[Rejects]  # the dataflow's, then its undefined-Hurst count
    source_rejects: list[Rejects] = field(default_factory=list)
    sink_rejects: list[Rejects] = field(default_factory=list)

    @property
    def stages(self) -> list[Rejects]:
        return [*self.source_rejects, *self.rejects, *self.sink_rejects]


def run_universe_pipeline(settings: Settings, source: UniverseFilesSource) -> UniverseRunSummary:
    """Run the universe graph with `source` feeding the universe candles topic; stops once every pair's end
    marker has been written (everything of the run is in both stores)."""
    broker = prepare(settings)
    broker_wait_s = settings.services.broker_wait_s
    app = new_application(
        settings, broker, consumer_group=settings.universe.consumer_group, broker_wait_s=broker_wait_s
    )
    completion = Completion(source.run_id, set(source.pairs()), app.stop)
    candles, dead_letters = universe_topics(app, settings)
    sink = FeastSink(
        lambda: feature_store(settings),
        universe_routes,
        retries=settings.stream.sink_retries,
        on_end=completion.on_end,
        dead_letter=dead_letter_writer(app, dead_letters.name),
        stage="feast_sink_universe",
    )
    rejects = build_universe_dataflow(app, candles, dead_letters, settings, sink)
    relay = SourceRelay()
    relay.attach(source)
    app.add_source(source, topic=candles)
    started = time.monotonic()
    with relay:
        run_application(app, broker, broker_wait_s)
    return UniverseRunSummary(
        time.monotonic() - started, dict(sink.rows_written), list(rejects), relay.rejects, [sink.rejects]
    )
