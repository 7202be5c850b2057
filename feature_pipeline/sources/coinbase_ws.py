"""Coinbase Advanced Trade: level2 books, market trades and heartbeats over one reconnecting connection.

Every connection subscribes to ``heartbeats``, ``market_trades`` and
``level2`` for all products right after the handshake (Coinbase closes a
connection that has not subscribed within 5 s). ``sequence_num`` counts every
message of the connection: a gap (or a step back) means a lost message that
cannot be attributed to one product, so every book of the connection is
dropped and ``level2`` is resubscribed, which brings fresh snapshots. A level2
event with a bad level, or an update that crosses the book, drops that
product's book the same way. Heartbeats carry the server's clock: they become
``tick`` records per book, closing the feature windows of quiet products.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from coinflow.books import book_key
from coinflow.coinbase_auth import cdp_jwt, cdp_signing_key
from coinflow.quality import DEAD_LETTER_MAX_BYTES, Rejects
from coinflow.schemas import CONTROL_TICK, Trade
from feature_pipeline.sources.book_source import BookGate, BookSource
from feature_pipeline.sources.coinbase_protocol import (
    EXCHANGE,
    HEARTBEATS,
    LEVEL2,
    MARKET_TRADES,
    SUBSCRIPTIONS,
    Frame,
    Rejected,
    ServerError,
    pair_of,
    parse_message,
    subscribe_message,
)
from feature_pipeline.sources.ws_client import ConnectionStats, ReconnectingClient

logger = logging.getLogger(__name__)


@dataclass
class CoinbaseStats(ConnectionStats):
    frames: int = 0
    sequence_gaps: int = 0
    book_events: int = 0
    trades: int = 0
    heartbeats: int = 0
    server_errors: int = 0
    subscriptions: dict[str, list[str]] = field(default_factory=dict)


class CoinbaseStream(ReconnectingClient[CoinbaseStats]):
    """Books and trades of several products from Coinbase Advanced Trade, reconnecting until stopped.

    Book frames and ``reset``/``tick`` records go to ``emit(key, record)``,
    trades to ``on_trades``, bad input to ``rejects``. With ``finite`` the
    stream stops when the server closes the connection normally (the end of a
    replayed recording) instead of reconnecting.
    """

    name = "Coinbase"

    def __init__(
        self,
        url: str,
        products: Sequence[str],
        emit: Callable[[str, Mapping[str, Any]], None],
        on_trades: Callable[[list[Trade]], None],
        rejects: Rejects,
        *,
        jwt: Callable[[], str] | None = None,
        finite: bool = False,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if not products:
            raise ValueError("CoinbaseStream needs at least one product")
        super().__init__(
            url,
            CoinbaseStats(),
            rejects,
            reconnect_initial_s=reconnect_initial_s,
            reconnect_max_s=reconnect_max_s,
            silence_timeout_s=silence_timeout_s,
            open_timeout_s=open_timeout_s,
            draw=draw,
        )
        self.products = list(products)
        self._known = frozenset(products)
        self._emit = emit
        self._on_trades = on_trades
        self._jwt = jwt
        self._finite = finite
        self._ws: ClientConnection | None = None
        self._last_seq: int | None = None
        self._resync_due: set[str] = set()
        self.gate = BookGate(EXCHANGE, emit, self._schedule_resubscribe)

    def _schedule_resubscribe(self, product: str, reason: str) -> None:
        self._resync_due.add(product)

    def _subscribe_requests(
        self, products: Sequence[str], channels: Sequence[str], unsubscribe: bool = False
    ) -> list[str]:
        token = self._jwt() if self._jwt else None
        return [
            subscribe_message(channel, [] if channel == HEARTBEATS else products, token, unsubscribe=unsubscribe)
            for channel in channels
        ]

    def _connection_ended(self) -> None:
        self._ws = None
        self._last_seq = None
        self._resync_due.clear()
        self.gate.reset_all()

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = ws
        for request in self._subscribe_requests(self.products, (HEARTBEATS, MARKET_TRADES, LEVEL2)):
            await ws.send(request)
        try:
            async for frame in self._frames(ws):
                self._handle(frame)
                if self._resync_due:
                    await self._resubscribe_books(ws)
        except ConnectionClosedOK:
            if not self._finite:
                raise
            logger.info("%s closed the connection normally: end of the recorded session", self.url)
            self.stop()

    async def _resubscribe_books(self, ws: ClientConnection) -> None:
        products = sorted(self._resync_due)
        self._resync_due.clear()
        requests = self._subscribe_requests(products, (LEVEL2,), unsubscribe=True)
        requests += self._subscribe_requests(products, (LEVEL2,))
        try:
            for request in requests:
                await ws.send(request)
        except ConnectionClosed:
            pass  # frames already received are still read; the next connection subscribes afresh

    def _dispatch(self, text: str | bytes) -> None:
        message = parse_message(text, self._known)
        if isinstance(message, Rejected):
            self._rejects.reject(message.reason, text)
            return
        if isinstance(message, ServerError):
            self.stats.server_errors += 1
            self._rejects.reject("server_error", text)
            return
        self.stats.frames += 1
        for reason, raw in message.rejects:
            self._rejects.reject(reason, raw)
        gap = self._last_seq is not None and message.sequence_num != self._last_seq + 1
        self._last_seq = message.sequence_num
        if gap:
            self.stats.sequence_gaps += 1
            # A lost message may have been any product's (even its snapshot): rebuild them all.
            for product in self.products:
                self.gate.drop(product, "sequence_gap", message.timestamp_ms)
        if message.channel == HEARTBEATS:
            self.stats.heartbeats += 1
            self._tick(message.timestamp_ms)
        elif message.channel == SUBSCRIPTIONS:
            self.stats.subscriptions = message.subscriptions or {}
            if set(self.products) <= set(self.stats.subscriptions.get(LEVEL2, ())):
                self._connection_proved_good()
        elif message.trades:
            self.stats.trades += len(message.trades)
            self._on_trades(message.trades)
        if message.books and not gap:
            self._on_books(message)

    def _on_books(self, frame: Frame) -> None:
        for event in frame.books:
            self.stats.book_events += 1
            if event.reject is not None:
                if event.product in self.gate.books or event.snapshot:
                    self.gate.drop(event.product, event.reject, frame.timestamp_ms)
            elif event.snapshot:
                self.gate.snapshot(event.product, event.bids, event.asks, frame.timestamp_ms, frame.sequence_num)
            else:
                self.gate.update(event.product, event.bids, event.asks, frame.timestamp_ms, frame.sequence_num)

    def _tick(self, timestamp_ms: int) -> None:
        for product in self.gate.books:
            self._emit(
                book_key(EXCHANGE, product),
                {"control": CONTROL_TICK, "exchange": EXCHANGE, "product": product, "timestamp_ms": timestamp_ms},
            )


class CoinbaseSource(BookSource):
    """Coinbase books onto the book-updates topic and market trades onto the trades topic.

    Raises ValueError when ``api_secret`` is not the EC private key (PEM) a CDP API key signs with.
    """

    def __init__(
        self,
        url: str,
        products: Sequence[str],
        dead_letter_topic: str,
        trades_topic: str | None,
        *,
        run_id: str | None = None,
        trade_close_after_ms: int = 0,
        api_key: str | None = None,
        api_secret: str | None = None,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 10.0,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
        name: str = "coinbase",
    ) -> None:
        super().__init__(name, dead_letter_topic, trades_topic, run_id, trade_close_after_ms, dead_letter_max_bytes)
        if api_key and api_secret:
            cdp_signing_key(api_secret)  # here, before the source's process starts: a bad key is one clear error
        self.url = url
        self.products = list(products)
        self.api_key = api_key
        self.api_secret = api_secret
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.silence_timeout_s = silence_timeout_s

    def make_client(self) -> CoinbaseStream:
        jwt = None
        if self.api_key and self.api_secret:
            key, secret = self.api_key, self.api_secret

            def jwt() -> str:
                return cdp_jwt(key, secret, int(time.time()))

        self._rejects = Rejects("coinbase_ws", forward=self.produce_dead_letter)
        return CoinbaseStream(
            self.url,
            self.products,
            self.emit,
            self.emit_trades,
            self._rejects,
            jwt=jwt,
            finite=self.run_id is not None,
            reconnect_initial_s=self.reconnect_initial_s,
            reconnect_max_s=self.reconnect_max_s,
            silence_timeout_s=self.silence_timeout_s,
        )

    def summary(self, client: CoinbaseStream) -> str:
        return f"{client.stats}; {self._rejects.summary()}"

    def end_keys(self) -> tuple[list[str], list[str]]:
        return [book_key(EXCHANGE, p) for p in self.products], sorted({pair_of(p) for p in self.products})
