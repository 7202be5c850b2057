"""The order-book graph: book frames -> books -> book-state records and order-book features.

book-updates topic (normalised frames from the Coinbase and Kraken sources,
keyed by ``<exchange>:<product>``): each frame is parsed and applied to that
key's in-memory `OrderBook`; every complete frame yields a book-state record
on the ``book`` topic, and the key's `BookSampler` turns the book into feature
rows at the end of each 4 s window, for the feature-store sink and the
``book-features`` topic (which live trading decides on; a finite run's end
markers follow the rows there too). Ticks move
the feature clock of quiet books, ``reset`` drops a book (the source is
rebuilding it), end markers of a finite run pass to the sink after the rows.

Books live in process memory, not in Quix state: they are rebuilt from the
exchange's snapshot whenever the pipeline (and so its source) starts.
Updates for a book without a snapshot, unusable levels and crossed books are
rejected (counted, dead-lettered); a book that breaks is dropped until the
next snapshot, never patched. A snapshot of a book that is still there (a
source of full snapshots only, such as a file of them) replaces its levels
but not its feature clock: its averages go on as over updates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.models.topics import Topic
from quixstreams.sinks import BaseSink

from coinflow.books import (
    CONTROL_RESET,
    FRAME_SNAPSHOT,
    FRAME_UPDATE,
    OrderBook,
    book_key,
    book_state,
    frame_sides,
)
from coinflow.quality import Rejects, dead_letter
from coinflow.schemas import CONTROL_END, CONTROL_TICK
from coinflow.settings import Settings
from coinflow.streaming import json_topic, topic_config
from feature_pipeline.transforms.book_features import BookSampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BookTopics:
    updates: Topic
    book: Topic
    features: Topic
    dead_letters: Topic


def book_topics(app: Application, settings: Settings) -> BookTopics:
    """The order-book topics: frames read as raw bytes (the dataflow parses and counts bad ones)."""
    config = topic_config(settings)
    return BookTopics(
        updates=json_topic(app, settings.topics.book_updates, config, "bytes"),
        book=json_topic(app, settings.topics.book, config),
        features=json_topic(app, settings.topics.book_features, config),
        dead_letters=json_topic(app, settings.topics.dead_letters, config, "bytes"),
    )


class BookProcessor:
    """The books and feature clocks of every key this process consumes; `step` handles one message."""

    def __init__(self, settings: Settings, rejects: Rejects) -> None:
        self.books: dict[str, OrderBook] = {}
        self.samplers: dict[str, BookSampler] = {}
        self.level_updates = 0
        self._sample_ms = settings.books.sample_ms
        self._imbalance_levels = settings.books.imbalance_levels
        self._rejects = rejects

    def step(self, raw: bytes, key: str | None, timestamp: int, headers) -> Sequence[Mapping[str, Any]]:
        """Outputs of one message: feature rows due, then a book-state record, an end marker or a reject."""
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [self._reject("malformed_json", raw)]
        if not isinstance(record, dict) or not isinstance(key, str):
            return [self._reject("not_an_object" if isinstance(key, str) else "missing_key", raw)]
        ts = record.get("timestamp_ms")
        if not isinstance(ts, int) or isinstance(ts, bool):
            return [self._reject("bad_timestamp", raw)]
        sampler = self.samplers.get(key)
        if sampler is None:
            sampler = self.samplers[key] = BookSampler(key, self._sample_ms, self._imbalance_levels)
        if "control" in record:
            return self._control(record, key, ts, sampler, raw)
        kind = record.get("kind")
        if kind not in (FRAME_SNAPSHOT, FRAME_UPDATE):
            return [self._reject("bad_frame_kind", raw)]
        sides = frame_sides(record.get("bids"), record.get("asks"))
        rows = sampler.advance(self.books.get(key), ts)
        if isinstance(sides, str):
            self._drop(key, sampler)
            return [*rows, self._reject(sides, raw)]
        if kind == FRAME_SNAPSHOT:  # the book refreshed: its averages go on (those of a dropped one were reset)
            self.books[key] = OrderBook()
        book = self.books.get(key)
        if book is None:
            return [*rows, self._reject("update_without_snapshot", raw)]
        self.level_updates += book.apply(*sides)
        if record.get("partial"):
            return rows
        state = book_state(
            book,
            record.get("exchange", ""),
            record.get("product", ""),
            ts,
            self._imbalance_levels,
            record.get("sequence_num"),
            record.get("checksum_ok"),
        )
        if state is None:
            self._drop(key, sampler)
            return [*rows, self._reject("crossed_or_one_sided_book", raw)]
        return [*rows, state]

    def _control(self, record: dict, key: str, ts: int, sampler: BookSampler, raw: bytes) -> list[dict]:
        control = record["control"]
        if control not in (CONTROL_TICK, CONTROL_RESET, CONTROL_END):
            return [self._reject("bad_control_record", raw)]
        rows = sampler.advance(self.books.get(key), ts)
        if control == CONTROL_RESET:
            self._drop(key, sampler)
        elif control == CONTROL_END:
            rows.append(record)
        return rows

    def _drop(self, key: str, sampler: BookSampler) -> None:
        self.books.pop(key, None)
        sampler.reset()

    def _reject(self, reason: str, raw: bytes) -> dict:
        self._rejects.reject(reason, raw)
        return {"reject": reason, "raw": raw}


def is_book_state(record: dict) -> bool:
    return "best_bid" in record


def is_feature_row(record: dict) -> bool:
    return "window_end_ms" in record


def for_the_sink(record: dict) -> bool:
    return is_feature_row(record) or record.get("control") == CONTROL_END


def build_book_dataflow(
    app: Application,
    topics: BookTopics,
    settings: Settings,
    sink: BaseSink,
    book_out: BaseSink | None = None,
) -> tuple[Rejects, BookProcessor]:
    """Wire the order-book graph into `app`; returns its reject counters and the processor (for its books)."""
    rejects = Rejects("book_dataflow")
    processor = BookProcessor(settings, rejects)
    outputs = app.dataframe(topics.updates).apply(processor.step, expand=True, metadata=True)
    states = outputs.filter(is_book_state)
    states.to_topic(topics.book)
    if book_out is not None:
        states.sink(book_out)
    outputs.filter(for_the_sink).sink(sink)
    outputs.filter(for_the_sink).to_topic(topics.features)
    outputs.filter(lambda r: "reject" in r).apply(
        lambda r: dead_letter("book_dataflow", r["reject"], r["raw"])
    ).to_topic(topics.dead_letters)
    return rejects, processor


def on_book_end(on_end: Callable[[dict], None]) -> Callable[[dict], None]:
    """Pass order-book end markers on in the form `Completion` reads (their book key as ``pair``)."""
    return lambda marker: on_end({**marker, "pair": book_key(marker["exchange"], marker["product"])})
