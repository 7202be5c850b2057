"""What the book sources share: the integrity gate in front of the book-updates topic, and the Quix source shell.

`BookGate` keeps the sources' own copy of each book, so that what leaves a
source is known to be a consistent book: a snapshot replaces the book, an
update is applied and the result must not be crossed (and, for Kraken, must
match the exchange's checksum, checked by the caller). Any failure drops the
book, tells the pipeline (a ``reset`` control record) and asks for a fresh
snapshot; updates that arrive before it are discarded. A broken book is
rebuilt, never patched. Every resync is counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Counter as PromCounter

from coinflow.books import (
    CONTROL_RESET,
    FRAME_SNAPSHOT,
    FRAME_UPDATE,
    BookFrame,
    Level,
    OrderBook,
    book_key,
    wire_levels,
)
from coinflow.quality import DEAD_LETTER_MAX_BYTES
from coinflow.schemas import CONTROL_END, Trade
from feature_pipeline.sources.base import RecordSource

logger = logging.getLogger(__name__)

RESYNCS_TOTAL = PromCounter(
    "coinflow_book_resyncs_total",
    "Books dropped and rebuilt from a fresh snapshot, by exchange, product and reason.",
    ["exchange", "product", "reason"],
)
SNAPSHOT_CHUNK_LEVELS = 5000  # keeps every message far below the broker's 1 MB default


class BookGate:
    """The books of one exchange connection, checked before they are passed on.

    ``emit`` receives every `BookFrame` and control record (``reset``) to
    produce; ``resubscribe`` is called with a product whose book was dropped.
    """

    def __init__(
        self,
        exchange: str,
        emit: Callable[[str, Mapping[str, Any]], None],
        resubscribe: Callable[[str, str], None],
        depth: int | None = None,
    ) -> None:
        self.exchange = exchange
        self.depth = depth
        self.books: dict[str, OrderBook] = {}
        self.resyncs: Counter[str] = Counter()
        self.discarded = 0
        self.level_updates = 0
        self.last_time_ms: dict[str, int] = {}
        self._emit = emit
        self._resubscribe = resubscribe

    def snapshot(
        self,
        product: str,
        bids: list[Level],
        asks: list[Level],
        timestamp_ms: int,
        sequence_num: int | None = None,
        checksum: Callable[[OrderBook], bool] | None = None,
    ) -> OrderBook | None:
        """Replace the product's book; returns it, or None when the snapshot itself is unusable (then resyncs)."""
        book = OrderBook(self.depth)
        book.apply(bids, asks)
        self.level_updates += len(bids) + len(asks)
        checksum_ok = checksum(book) if checksum else None
        if checksum_ok is False or book.crossed():
            self.books.pop(product, None)
            self.resync(product, "bad_checksum" if checksum_ok is False else "crossed", timestamp_ms)
            return None
        self.books[product] = book
        self.last_time_ms[product] = timestamp_ms
        self._emit_snapshot(product, book, timestamp_ms, sequence_num, checksum_ok)
        return book

    def update(
        self,
        product: str,
        bids: list[Level],
        asks: list[Level],
        timestamp_ms: int,
        sequence_num: int | None = None,
        checksum: Callable[[OrderBook], bool] | None = None,
    ) -> bool:
        """Apply an update; False when it was discarded (no book yet) or broke the book (then resyncs)."""
        book = self.books.get(product)
        if book is None:
            self.discarded += 1
            return False
        self.level_updates += book.apply(bids, asks)
        checksum_ok = checksum(book) if checksum else None
        if checksum_ok is False or book.crossed():
            self.drop(product, "bad_checksum" if checksum_ok is False else "crossed", timestamp_ms)
            return False
        self.last_time_ms[product] = timestamp_ms
        frame = BookFrame(
            exchange=self.exchange,
            product=product,
            kind=FRAME_UPDATE,
            bids=wire_levels(bids),
            asks=wire_levels(asks),
            sequence_num=sequence_num,
            checksum_ok=checksum_ok,
            timestamp_ms=timestamp_ms,
        )
        self._emit(book_key(self.exchange, product), frame)
        return True

    def drop(self, product: str, reason: str, timestamp_ms: int | None = None) -> None:
        """Drop a broken book and ask for a fresh snapshot."""
        self.books.pop(product, None)
        self.resync(product, reason, timestamp_ms)

    def resync(self, product: str, reason: str, timestamp_ms: int | None = None) -> None:
        self.resyncs[reason] += 1
        RESYNCS_TOTAL.labels(self.exchange, product, reason).inc()
        logger.warning("%s %s book dropped (%s); resubscribing for a fresh snapshot", self.exchange, product, reason)
        self.reset(product, timestamp_ms)
        self._resubscribe(product, reason)

    def reset(self, product: str, timestamp_ms: int | None = None) -> None:
        """Tell the pipeline the product's book is gone as of ``timestamp_ms`` (its last known time by default)."""
        self.books.pop(product, None)
        ts = timestamp_ms if timestamp_ms is not None else self.last_time_ms.get(product)
        if ts is not None:
            self._emit(
                book_key(self.exchange, product),
                {"control": CONTROL_RESET, "exchange": self.exchange, "product": product, "timestamp_ms": ts},
            )

    def reset_all(self) -> None:
        """The connection is gone: every book is unknown from its last known time on."""
        for product in list(self.books):
            self.reset(product)

    def _emit_snapshot(
        self, product: str, book: OrderBook, timestamp_ms: int, sequence_num: int | None, checksum_ok: bool | None
    ) -> None:
        bids, asks = list(book.top_bids(len(book.bids))), list(book.top_asks(len(book.asks)))
        chunks = max(1, -(-max(len(bids), len(asks)) // SNAPSHOT_CHUNK_LEVELS))
        for i in range(chunks):
            part = slice(i * SNAPSHOT_CHUNK_LEVELS, (i + 1) * SNAPSHOT_CHUNK_LEVELS)
            frame = BookFrame(
                exchange=self.exchange,
                product=product,
                kind=FRAME_SNAPSHOT if i == 0 else FRAME_UPDATE,
                bids=wire_levels(bids[part]),
                asks=wire_levels(asks[part]),
                sequence_num=sequence_num,
                checksum_ok=checksum_ok,
                timestamp_ms=timestamp_ms,
            )
            if i < chunks - 1:
                frame["partial"] = True
            self._emit(book_key(self.exchange, product), frame)


class BookSource(RecordSource):
    """A Quix source running one exchange client: book frames to its topic, trades to the trades topic.

    With ``run_id`` set the source is finite (a recorded session): when the
    client stops by itself, it sends an end marker per book and per traded
    pair, carrying the run id, and returns. Its dead letters are at most
    ``dead_letter_max_bytes`` (the source's process is configured with it).
    """

    def __init__(
        self,
        name: str,
        dead_letter_topic: str,
        trades_topic: str | None,
        run_id: str | None,
        trade_close_after_ms: int = 0,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(name, dead_letter_topic, dead_letter_max_bytes=dead_letter_max_bytes)
        self.trades_topic = trades_topic
        self.run_id = run_id
        self.trade_close_after_ms = trade_close_after_ms
        self._last_trade_ms: dict[str, int] = {}
        self._last_book_ms: dict[str, int] = {}

    def run(self) -> None:
        asyncio.run(self._run())

    def make_client(self):
        """The exchange client (a `ReconnectingClient`) this source runs."""
        raise NotImplementedError

    def summary(self, client: Any) -> str:
        return str(client.stats)

    async def _run(self) -> None:
        client = self.make_client()
        task = asyncio.create_task(client.run())
        try:
            while self.running and not task.done():
                await asyncio.sleep(0.1)
        finally:
            client.stop()
            await task
        if self.run_id is not None and self.running:
            self._produce_end_markers()
        self.flush()
        logger.info("%s stopped: %s", self.name, self.summary(client))

    def emit(self, key: str, record: Mapping[str, Any]) -> None:
        """Produce a book frame or book control record to the book-updates topic."""
        if "control" not in record:
            self._last_book_ms[key] = max(self._last_book_ms.get(key, 0), record["timestamp_ms"])
        self.produce_record(key, record, record["timestamp_ms"])

    def emit_trades(self, trades: Iterable[Trade]) -> None:
        if self.trades_topic is None:
            return
        for trade in trades:
            pair = trade["pair"]
            self._last_trade_ms[pair] = max(self._last_trade_ms.get(pair, 0), trade["timestamp_ms"])
            self.produce_to(self.trades_topic, pair, json.dumps(trade).encode(), trade["timestamp_ms"])

    def end_keys(self) -> tuple[list[str], list[str]]:
        """The book keys and trade pairs a finite run ends (every configured one, traded or not)."""
        raise NotImplementedError

    def _produce_end_markers(self) -> None:
        books, pairs = self.end_keys()
        last_ms = max([*self._last_book_ms.values(), *self._last_trade_ms.values(), 0])
        for key in books:
            exchange, _, product = key.partition(":")
            end_ms = self._last_book_ms.get(key, last_ms)
            self.produce_record(
                key,
                {
                    "control": CONTROL_END,
                    "exchange": exchange,
                    "product": product,
                    "timestamp_ms": end_ms,
                    "run_id": self.run_id,
                },
                end_ms,
            )
        if not self.trades_topic:
            return
        for pair in pairs:
            end_ms = self._last_trade_ms.get(pair, last_ms) + self.trade_close_after_ms
            self.produce_to(
                self.trades_topic,
                pair,
                json.dumps(
                    {"control": CONTROL_END, "pair": pair, "timestamp_ms": end_ms, "run_id": self.run_id}
                ).encode(),
                end_ms,
            )
