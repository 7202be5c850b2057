"""Kraken WebSocket v2 trades: a reconnecting asyncio client and the Quix source around it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection

from coinflow.books import OrderBook, book_key
from coinflow.quality import DEAD_LETTER_MAX_BYTES, Rejects
from coinflow.schemas import CONTROL_TICK, Control, Trade
from feature_pipeline.sources.base import RecordSource
from feature_pipeline.sources.book_source import BookGate, BookSource
from feature_pipeline.sources.kraken_protocol import (
    EXCHANGE,
    BookBatch,
    Heartbeat,
    Rejected,
    Status,
    SubscribeAck,
    TradeBatch,
    book_checksum,
    book_request,
    parse_message,
    subscribe_request,
)
from feature_pipeline.sources.ws_client import ConnectionStats, ReconnectingClient, backoff_delay

__all__ = [
    "KrakenBookSource",
    "KrakenBookStream",
    "KrakenTradeSource",
    "KrakenTradeStream",
    "StreamStats",
    "backoff_delay",
]

logger = logging.getLogger(__name__)

_LOGGED_CHARS = 500


@dataclass
class StreamStats(ConnectionStats):
    """What a `KrakenTradeStream` has been through, for logs, metrics and tests (see `ConnectionStats`)."""

    subscribe_requests: int = 0
    subscribe_acks: int = 0
    subscribe_failures: Counter[str] = field(default_factory=Counter)
    trades: int = 0
    heartbeats: int = 0
    system_status: str | None = None


class KrakenTradeStream(ReconnectingClient[StreamStats]):
    """Trades of several pairs over one Kraken v2 connection, reconnecting until stopped.

    Every connection subscribes to all pairs (snapshot included, so a reconnect
    repeats up to 50 trades per pair; consumers deduplicate by trade_id). A
    disconnect, a failed handshake or ``silence_timeout_s`` without any frame
    leads to a new connection after a full-jitter exponential delay that starts
    at ``reconnect_initial_s``, doubles up to ``reconnect_max_s`` and resets once
    a connection has carried a successful ack or data. Trades go to
    ``on_trades``; malformed or unknown frames, bad trade entries and trades of
    pairs not asked for to ``rejects``. Use from one event loop: `run` until `stop`.
    """

    name = "Kraken"

    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        on_trades: Callable[[list[Trade]], None],
        rejects: Rejects,
        *,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if not pairs:
            raise ValueError("KrakenTradeStream needs at least one pair")
        super().__init__(
            url,
            StreamStats(),
            rejects,
            reconnect_initial_s=reconnect_initial_s,
            reconnect_max_s=reconnect_max_s,
            silence_timeout_s=silence_timeout_s,
            open_timeout_s=open_timeout_s,
            draw=draw,
        )
        self.pairs = list(pairs)
        self._known = frozenset(pairs)
        self._on_trades = on_trades
        self._subscribed: set[str] = set()

    @property
    def subscribed(self) -> frozenset[str]:
        """Pairs acknowledged on the current connection (empty while disconnected)."""
        return frozenset(self._subscribed)

    def _connection_ended(self) -> None:
        self._subscribed.clear()

    async def _session(self, ws: ClientConnection) -> None:
        self.stats.subscribe_requests += 1
        await ws.send(subscribe_request(self.pairs, req_id=self.stats.subscribe_requests))
        async for frame in self._frames(ws):
            self._handle(frame)

    def _dispatch(self, frame: str | bytes) -> None:
        message = parse_message(frame, self._known)
        if isinstance(message, TradeBatch):
            for reason, entry in message.rejects:
                self._rejects.reject(reason, entry)
            if message.trades:
                self._connection_proved_good()
                self.stats.trades += len(message.trades)
                self._on_trades(message.trades)
        elif isinstance(message, SubscribeAck):
            self._on_ack(message, frame)
        elif isinstance(message, Heartbeat):
            self.stats.heartbeats += 1
        elif isinstance(message, Status):
            self.stats.system_status = message.system
            log = logger.info if message.system == "online" else logger.warning
            log("Kraken system status: %s (version %s)", message.system, message.version)
        elif isinstance(message, Rejected):
            self._rejects.reject(message.reason, frame)
        # A Pong needs nothing: the connection's liveness is judged by any frame.

    def _on_ack(self, ack: SubscribeAck, frame: str | bytes) -> None:
        if ack.success and ack.symbol:
            self._connection_proved_good()
            self.stats.subscribe_acks += 1
            self._subscribed.add(ack.symbol)
            return
        symbol = ack.symbol or "?"
        self.stats.subscribe_failures[symbol] += 1
        logger.warning(
            "Kraken refused the trade subscription of %s: %s (%s)",
            symbol,
            ack.error,
            (frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))[:_LOGGED_CHARS],
        )


class KrakenTradeSource(RecordSource):
    """Live Kraken trades onto the trades topic, keyed by pair, stamped with the trade time.

    Every ``tick_interval_s`` it also produces a ``tick`` control record (wall
    clock) for each pair subscribed on the current connection, closing the
    windows of quiet pairs; none while disconnected, when quiet is not known.
    Rejected frames go to ``dead_letter_topic`` as dead-letter records of at
    most ``dead_letter_max_bytes`` (the source's process is configured with it).
    Stops when ``running`` turns False; the base class then flushes the producer.
    """

    def __init__(
        self,
        url: str,
        pairs: Sequence[str],
        dead_letter_topic: str,
        *,
        tick_interval_s: float = 1.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 10.0,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
        name: str = "kraken-trades",
        shutdown_timeout: float = 10.0,
    ) -> None:
        super().__init__(name, dead_letter_topic, shutdown_timeout, dead_letter_max_bytes)
        self.url = url
        self.pairs = list(pairs)
        self.tick_interval_s = tick_interval_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.silence_timeout_s = silence_timeout_s

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        rejects = Rejects("kraken_ws", forward=self.produce_dead_letter)
        stream = KrakenTradeStream(
            self.url,
            self.pairs,
            self._produce_trades,
            rejects,
            reconnect_initial_s=self.reconnect_initial_s,
            reconnect_max_s=self.reconnect_max_s,
            silence_timeout_s=self.silence_timeout_s,
        )
        task = asyncio.create_task(stream.run())
        next_tick = time.monotonic() + self.tick_interval_s
        try:
            while self.running and not task.done():
                await asyncio.sleep(min(0.1, max(0.0, next_tick - time.monotonic())))
                if time.monotonic() >= next_tick:
                    self._produce_ticks(stream.subscribed)
                    next_tick = time.monotonic() + self.tick_interval_s
        finally:
            stream.stop()
            await task
            logger.info("Kraken stream stopped: %s; %s", stream.stats, rejects.summary())

    def _produce_trades(self, trades: list[Trade]) -> None:
        for trade in trades:
            self.produce_record(trade["pair"], trade, trade["timestamp_ms"])

    def _produce_ticks(self, pairs: frozenset[str]) -> None:
        now_ms = int(time.time() * 1000)
        for pair in sorted(pairs):
            tick = Control(control=CONTROL_TICK, pair=pair, timestamp_ms=now_ms)
            self.produce_record(pair, tick, now_ms)


@dataclass
class BookStreamStats(ConnectionStats):
    subscribe_requests: int = 0
    subscribe_acks: int = 0
    book_messages: int = 0
    checksum_failures: int = 0
    heartbeats: int = 0


class KrakenBookStream(ReconnectingClient[BookStreamStats]):
    """Kraken v2 ``book`` of several symbols at ``depth`` over one connection, every update checksummed.

    After every message the CRC32 of the top 10 levels of the rebuilt book
    must equal the exchange's; a mismatch, a bad level or a crossed book drops
    that symbol's book and resubscribes it (unsubscribe, subscribe: a fresh
    snapshot). Heartbeats become ``tick`` records (wall clock less
    ``tick_lag_ms``: Kraken's heartbeats carry no time) closing quiet windows.
    """

    name = "Kraken"

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        depth: int,
        emit: Callable[[str, Mapping[str, Any]], None],
        rejects: Rejects,
        *,
        tick_lag_ms: int = 1000,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if not symbols:
            raise ValueError("KrakenBookStream needs at least one symbol")
        super().__init__(
            url,
            BookStreamStats(),
            rejects,
            reconnect_initial_s=reconnect_initial_s,
            reconnect_max_s=reconnect_max_s,
            silence_timeout_s=silence_timeout_s,
            open_timeout_s=open_timeout_s,
            draw=draw,
        )
        self.symbols = list(symbols)
        self.depth = depth
        self._known = frozenset(symbols)
        self._emit = emit
        self._tick_lag_ms = tick_lag_ms
        self._resync_due: set[str] = set()
        self.gate = BookGate(EXCHANGE, emit, lambda symbol, reason: self._resync_due.add(symbol), depth=depth)

    def _connection_ended(self) -> None:
        self._resync_due.clear()
        self.gate.reset_all()

    def _request(self, symbols: Sequence[str], unsubscribe: bool = False) -> str:
        self.stats.subscribe_requests += 0 if unsubscribe else 1
        return book_request(symbols, self.depth, req_id=self.stats.subscribe_requests, unsubscribe=unsubscribe)

    async def _session(self, ws: ClientConnection) -> None:
        await ws.send(self._request(self.symbols))
        async for frame in self._frames(ws):
            self._handle(frame)
            if self._resync_due:
                symbols = sorted(self._resync_due)
                self._resync_due.clear()
                await ws.send(self._request(symbols, unsubscribe=True))
                await ws.send(self._request(symbols))

    def _dispatch(self, frame: str | bytes) -> None:
        message = parse_message(frame, self._known)
        if isinstance(message, BookBatch):
            for reason, entry in message.rejects:
                self._rejects.reject(reason, entry)
            for book in message.books:
                self._on_book(book, frame)
        elif isinstance(message, SubscribeAck):
            if message.success:
                self.stats.subscribe_acks += 1
                self._connection_proved_good()
            else:
                logger.warning("Kraken refused a book request for %s: %s", message.symbol, message.error)
        elif isinstance(message, Heartbeat):
            self.stats.heartbeats += 1
            now_ms = int(time.time() * 1000) - self._tick_lag_ms
            for symbol in self.gate.books:
                self._emit(
                    book_key(EXCHANGE, symbol),
                    {"control": CONTROL_TICK, "exchange": EXCHANGE, "product": symbol, "timestamp_ms": now_ms},
                )
        elif isinstance(message, Rejected):
            self._rejects.reject(message.reason, frame)
        # Status, pongs and trade frames carry nothing for books.

    def _on_book(self, message, frame: str | bytes) -> None:
        self.stats.book_messages += 1
        timestamp_ms = message.timestamp_ms or int(time.time() * 1000)
        if message.reject is not None:
            self._rejects.reject(message.reject, frame)
            self.gate.drop(message.symbol, message.reject, timestamp_ms)
            return

        def verified(book: OrderBook) -> bool:
            ok = book_checksum(book) == message.checksum
            self.stats.checksum_failures += not ok
            return ok

        if message.snapshot:
            self.gate.snapshot(message.symbol, message.bids, message.asks, timestamp_ms, checksum=verified)
        else:
            self.gate.update(message.symbol, message.bids, message.asks, timestamp_ms, checksum=verified)


class KrakenBookSource(BookSource):
    """Kraken v2 books onto the book-updates topic (Kraken trades come from `KrakenTradeSource`)."""

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        depth: int,
        dead_letter_topic: str,
        *,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
        name: str = "kraken-books",
    ) -> None:
        super().__init__(
            name, dead_letter_topic, trades_topic=None, run_id=None, dead_letter_max_bytes=dead_letter_max_bytes
        )
        self.url = url
        self.symbols = list(symbols)
        self.depth = depth
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s

    def make_client(self) -> KrakenBookStream:
        self._rejects = Rejects("kraken_book_ws", forward=self.produce_dead_letter)
        return KrakenBookStream(
            self.url,
            self.symbols,
            self.depth,
            self.emit,
            self._rejects,
            reconnect_initial_s=self.reconnect_initial_s,
            reconnect_max_s=self.reconnect_max_s,
        )

    def summary(self, client: KrakenBookStream) -> str:
        return f"{client.stats}; resyncs {dict(client.gate.resyncs)}; {self._rejects.summary()}"

    def end_keys(self) -> tuple[list[str], list[str]]:
        return [book_key(EXCHANGE, s) for s in self.symbols], []
