"""Run the order-book pipeline: services, one Quix application, the book graph (and the candle graph), a source."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from coinflow.books import book_state_schema
from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.streaming import new_application, pipeline_topics, run_application
from feature_pipeline.books.dataflow import book_topics, build_book_dataflow, on_book_end
from feature_pipeline.candles.dataflow import build_dataflow
from feature_pipeline.candles.sink import CandleFeastSink
from feature_pipeline.runtime import Completion, dead_letter_writer, prepare
from feature_pipeline.sinks.feast_sink import FeastSink, single_view
from feature_pipeline.sinks.parquet_sink import ParquetSink
from feature_pipeline.sources.book_source import BookSource
from feature_pipeline.sources.process import SourceRelay
from feature_repo.names import ORDERBOOK_VIEW

logger = logging.getLogger(__name__)


@dataclass
class BookRunSummary:
    seconds: float
    rows_written: dict[str, int]
    rejects: list[Rejects]  # the dataflows'
    book_records_out: int | None
    source_rejects: list[Rejects] = field(default_factory=list)  # counted in the source's process, one per stage
    sink_rejects: list[Rejects] = field(default_factory=list)  # rows the feature store could not take, per sink

    @property
    def stages(self) -> list[Rejects]:
        """Every stage's rejects, in the order data meets them: the source's, the dataflows', the sinks'."""
        return [*self.source_rejects, *self.rejects, *self.sink_rejects]


def run_book_pipeline(
    settings: Settings,
    source: BookSource,
    *,
    candles: bool = True,
    book_out: Path | None = None,
) -> BookRunSummary:
    """Run the book graph (and, with ``candles``, the candle graph over the source's trades).

    A finite source (one with a run id) stops the run once its end markers
    have been written for every book and pair; otherwise it runs until stopped.
    """
    broker = prepare(settings)
    broker_wait_s = (
        settings.services.broker_wait_s if source.run_id is not None else None
    )  # live runs wait for the broker
    app = new_application(settings, broker, consumer_group=settings.books.consumer_group, broker_wait_s=broker_wait_s)
    completion = None
    if source.run_id is not None:
        books, pairs = source.end_keys()
        completion = Completion(source.run_id, set(books) | (set(pairs) if candles else set()), app.stop)
    out_sink = ParquetSink(book_out, book_state_schema()) if book_out else None
    dead_letters = dead_letter_writer(app, settings.topics.dead_letters)
    book_sink = FeastSink(
        lambda: feature_store(settings),
        single_view(ORDERBOOK_VIEW),
        retries=settings.stream.sink_retries,
        on_end=on_book_end(completion.on_end) if completion else None,
        dead_letter=dead_letters,
        stage="feast_sink_books",
    )
    topics = book_topics(app, settings)
    book_rejects, _ = build_book_dataflow(app, topics, settings, book_sink, out_sink)
    sinks, rejects = [book_sink], [book_rejects]
    if candles:
        candle_sink = CandleFeastSink(
            lambda: feature_store(settings),
            settings.stream.online_window_length,
            retries=settings.stream.sink_retries,
            on_end=completion.on_end if completion else None,
            dead_letter=dead_letters,
        )
        rejects.append(build_dataflow(app, pipeline_topics(app, settings), settings, candle_sink))
        sinks.append(candle_sink)
    else:
        source.trades_topic = None
    relay = SourceRelay()
    relay.attach(source)
    app.add_source(source, topic=topics.updates)
    started = time.monotonic()
    try:
        with relay:
            run_application(app, broker, broker_wait_s)
    finally:
        if out_sink is not None:
            out_sink.close()
    rows: dict[str, int] = {}
    for sink in sinks:
        rows.update(sink.rows_written)
    return BookRunSummary(
        time.monotonic() - started,
        rows,
        rejects,
        out_sink.rows if out_sink else None,
        relay.rejects,
        [sink.rejects for sink in sinks],
    )
