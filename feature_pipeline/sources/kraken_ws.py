"""Kraken WebSocket v2 trades: a reconnecting asyncio client and the Quix source around it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from feature_pipeline.sources.base import RecordSource
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_TICK, Control, Trade
from feature_pipeline.sources.kraken_protocol import (
    Heartbeat,
    Rejected,
    Status,
    SubscribeAck,
    TradeBatch,
    parse_message,
    subscribe_request,
)

logger = logging.getLogger(__name__)

# What ends one connection and calls for the next; anything else is a bug and propagates.
_CONNECTION_ERRORS = (OSError, TimeoutError, ConnectionClosed, InvalidHandshake)


def backoff_delay(attempt: int, initial_s: float, max_s: float, draw: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: ``draw() * min(max_s, initial_s * 2**attempt)``."""
    return draw() * min(max_s, initial_s * 2**attempt)


@dataclass
class StreamStats:
    """What a `KrakenTradeStream` has been through, for logs, metrics and tests.

    ``connects`` counts opened connections, ``reconnects`` those after the first;
    ``delays`` holds every reconnect delay drawn.
    """

    connects: int = 0
    reconnects: int = 0
    subscribe_requests: int = 0
    subscribe_acks: int = 0
    subscribe_failures: Counter[str] = field(default_factory=Counter)
    trades: int = 0
    heartbeats: int = 0
    silences: int = 0
    system_status: str | None = None
    delays: list[float] = field(default_factory=list)


class KrakenTradeStream:
    """Trades of several pairs over one Kraken v2 connection, reconnecting until stopped.

    Every connection subscribes to all pairs (snapshot included, so a reconnect
    repeats up to 50 trades per pair; consumers deduplicate by trade_id). A
    disconnect, a failed handshake or ``silence_timeout_s`` without any frame
    leads to a new connection after a full-jitter exponential delay that starts
    at ``reconnect_initial_s``, doubles up to ``reconnect_max_s`` and resets once
    a connection has carried a successful ack or data. Trades go to
    ``on_trades``; malformed or unknown frames and bad trade entries to
    ``rejects``. Use from one event loop: `run` until `stop`.
    """

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
        self.url = url
        self.pairs = list(pairs)
        self.stats = StreamStats()
        self._on_trades = on_trades
        self._rejects = rejects
        self._initial_s = reconnect_initial_s
        self._max_s = reconnect_max_s
        self._silence_s = silence_timeout_s
        self._open_timeout_s = open_timeout_s
        self._draw = draw
        self._attempt = 0
        self._subscribed: set[str] = set()
        self._stopped = asyncio.Event()

    @property
    def subscribed(self) -> frozenset[str]:
        """Pairs acknowledged on the current connection (empty while disconnected)."""
        return frozenset(self._subscribed)

    def stop(self) -> None:
        """Ask `run` to close the connection and return."""
        self._stopped.set()

    async def run(self) -> None:
        """Connect, subscribe and dispatch frames, reconnecting until `stop` is called."""
        while not self._stopped.is_set():
            try:
                async with connect(self.url, open_timeout=self._open_timeout_s, close_timeout=1.0) as ws:
                    self.stats.connects += 1
                    if self.stats.connects > 1:
                        self.stats.reconnects += 1
                    logger.info("Connected to %s (connection %d)", self.url, self.stats.connects)
                    await self._until_stopped(self._session(ws))
            except _CONNECTION_ERRORS as exc:
                logger.warning("Kraken connection to %s ended: %r", self.url, exc)
            finally:
                self._subscribed.clear()
            if self._stopped.is_set():
                break
            delay = backoff_delay(self._attempt, self._initial_s, self._max_s, self._draw)
            self._attempt += 1
            self.stats.delays.append(delay)
            logger.info("Reconnecting to %s in %.2f s", self.url, delay)
            await self._until_stopped(asyncio.sleep(delay))

    async def _until_stopped(self, work: Awaitable[None]) -> None:
        """Await ``work`` unless `stop` comes first (then cancel it); its errors propagate."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stopped):
                pending.cancel()
            await asyncio.gather(stopped, return_exceptions=True)
        if task.done() and not task.cancelled():
            task.result()
        else:
            await asyncio.gather(task, return_exceptions=True)

    async def _session(self, ws: ClientConnection) -> None:
        self.stats.subscribe_requests += 1
        await ws.send(subscribe_request(self.pairs, req_id=self.stats.subscribe_requests))
        while True:
            try:
                async with asyncio.timeout(self._silence_s):
                    frame = await ws.recv()
            except TimeoutError:
                self.stats.silences += 1
                logger.warning("No frame from %s for %.1f s; reconnecting", self.url, self._silence_s)
                return
            self._dispatch(frame)

    def _dispatch(self, frame: str | bytes) -> None:
        message = parse_message(frame)
        if isinstance(message, TradeBatch):
            for reason, entry in message.rejects:
                self._rejects.reject(reason, entry)
            if message.trades:
                self._attempt = 0
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
            self._attempt = 0
            self.stats.subscribe_acks += 1
            self._subscribed.add(ack.symbol)
            return
        symbol = ack.symbol or "?"
        self.stats.subscribe_failures[symbol] += 1
        logger.warning(
            "Kraken refused the trade subscription of %s: %s (%s)",
            symbol,
            ack.error,
            frame if isinstance(frame, str) else frame.decode("utf-8", "replace"),
        )


class KrakenTradeSource(RecordSource):
    """Live Kraken trades onto the trades topic, keyed by pair, stamped with the trade time.

    Every ``tick_interval_s`` it also produces a ``tick`` control record (wall
    clock) for each pair subscribed on the current connection, closing the
    windows of quiet pairs; none while disconnected, when quiet is not known.
    Rejected frames go to ``dead_letter_topic`` as dead-letter records. Stops
    when ``running`` turns False; the base class then flushes the producer.
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
        name: str = "kraken-trades",
        shutdown_timeout: float = 10.0,
    ) -> None:
        super().__init__(name, dead_letter_topic, shutdown_timeout)
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

