"""Run the feature pipeline: services, the Quix application, the dataflow, a source, the sink."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.services import stream_state_dir
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


def log_end(marker: dict) -> None:
    """What a worker does with an end-of-input marker: says that all data of its pair is in the feature store."""
    logger.info("All data of %s (run %s) is in the feature store", marker.get("pair"), marker.get("run_id"))


def run_pipeline(
    settings: Settings,
    source: RecordSource | None,
    into_candles: bool = False,
    finite_pairs: set[str] | None = None,
    run_id: str | None = None,
    worker_id: int | None = None,
    process: bool = True,
) -> RunSummary:
    """Run the dataflow with `source` feeding the trades (or candles) topic.

    A finite run (`finite_pairs` and `run_id` given) stops once the end marker
    of that run has been written for every pair; otherwise it runs until
    stopped (SIGINT/SIGTERM), flushing what is in flight.

    A worker (`worker_id` given, no source) is one of the processes of the
    pipeline's consumer group: the partitions of the trades and candles topics
    are shared out among them, and its state is kept in changelog topics (on
    the embedded broker too), so that a partition's windows and indicators move
    with it to another worker when one stops or dies. Each worker id has a
    local state directory of its own. With `process` False only the source
    runs (the ingest of a group of workers), until it ends or is stopped.
    """
    broker = prepare(settings)
    finite = finite_pairs is not None and run_id is not None
    broker_wait_s = settings.services.broker_wait_s if finite else None  # live runs wait for the broker
    state_dir = stream_state_dir(settings, broker)
    app = new_application(
        settings,
        broker,
        broker_wait_s=broker_wait_s,
        changelogs=True if worker_id is not None else None,
        state_dir=state_dir if worker_id is None else state_dir / f"worker-{worker_id}",
    )
    topics = pipeline_topics(app, settings)
    completion = (
        Completion(run_id, finite_pairs, app.stop)
        if finite_pairs is not None and run_id is not None and process
        else None
    )
    sink = CandleFeastSink(
        lambda: feature_store(settings),
        settings.stream.online_window_length,
        retries=settings.stream.sink_retries,
        on_end=completion.on_end if completion else log_end,
        dead_letter=dead_letter_writer(app, topics.dead_letters.name),
    )
    rejects = build_dataflow(app, topics, settings, sink) if process else Rejects("dataflow")
    relay = SourceRelay()
    if source is not None:
        relay.attach(source)
        app.add_source(source, topic=topics.candles if into_candles else topics.trades)
    started = time.monotonic()
    with relay:
        run_application(app, broker, broker_wait_s)
    return RunSummary(time.monotonic() - started, dict(sink.rows_written), rejects, relay.rejects, [sink.rejects])
