"""Run the feature pipeline: services, the Quix application, the dataflow, a source, the sink."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.streaming import new_application, pipeline_topics, run_application
from feature_pipeline.candles.dataflow import build_dataflow
from feature_pipeline.candles.sink import CandleFeastSink
from feature_pipeline.runtime import Completion, dead_letter_writer, prepare
from feature_pipeline.sources.base import RecordSource
from feature_pipeline.sources.process import SourceRelay

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    seconds: float
    rows_written: dict[str, int]
    rejects: Rejects  # the dataflow's
    source_rejects: list[Rejects] = field(default_factory=list)  # counted in the source's process, one per stage
    sink_rejects: list[Rejects] = field(default_factory=list)  # rows the feature store could not take

    @property
    def stages(self) -> list[Rejects]:
        """Every stage's rejects, in the order data meets them: the source's, the dataflow's, the sink's."""
        return [*self.source_rejects, self.rejects, *self.sink_rejects]


def run_pipeline(
    settings: Settings,
    source: RecordSource | None,
    into_candles: bool = False,
    finite_pairs: set[str] | None = None,
    run_id: str | None = None,
) -> RunSummary:
    """Run the dataflow with `source` feeding the trades (or candles) topic.

    A finite run (`finite_pairs` and `run_id` given) stops once the end marker
    of that run has been written for every pair; otherwise it runs until
    stopped (SIGINT/SIGTERM), flushing what is in flight.
    """
    broker = prepare(settings)
    broker_wait_s = settings.services.broker_wait_s if finite_pairs else None  # live runs wait for the broker
    app = new_application(settings, broker, broker_wait_s=broker_wait_s)
    topics = pipeline_topics(app, settings)
    completion = Completion(run_id, finite_pairs, app.stop) if finite_pairs and run_id is not None else None
    sink = CandleFeastSink(
        lambda: feature_store(settings),
        settings.stream.online_window_length,
        retries=settings.stream.sink_retries,
        on_end=completion.on_end if completion else None,
        dead_letter=dead_letter_writer(app, topics.dead_letters.name),
    )
    rejects = build_dataflow(app, topics, settings, sink)
    relay = SourceRelay()
    if source is not None:
        relay.attach(source)
        app.add_source(source, topic=topics.candles if into_candles else topics.trades)
    started = time.monotonic()
    with relay:
        run_application(app, broker, broker_wait_s)
    return RunSummary(time.monotonic() - started, dict(sink.rows_written), rejects, relay.rejects, [sink.rejects])
