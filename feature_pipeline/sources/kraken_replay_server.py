"""A local WebSocket server that speaks Kraken v2 and replays recorded trades.

It stands in for ``wss://ws.kraken.com/v2`` in tests and demos: a ``status``
on connect, one ack per symbol of a ``trade`` subscription (errors for unknown
symbols, channels and methods), a ``snapshot`` of the last 50 trades already
published, then ``update`` messages, a ``heartbeat`` each idle second and
``pong`` for ``ping``.

Each symbol's trades are published once, in order, paced at ``speed`` times
real time (None or 0: as fast as the subscribers read, in batches), and only
while someone is subscribed: a client that is dropped and resubscribes gets a
snapshot repeating trades it had, then the trades that follow, none skipped
(provided fewer than 50 were lost in flight at the drop). ``inject`` adds
frames of any content (hostile ones, for tests), each sent once, verbatim, to a
pair's subscribers just before the trade at a given position among the pair's.

Use it in a test with ``url = await server.start()`` ... ``await server.stop()``;
from synchronous code with ``with run_in_thread(trades) as url:``; from a CLI
with `serve` (blocks until Ctrl-C).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from coinflow.exchange_files import read_trades_csv
from coinflow.quality import Rejects
from coinflow.schemas import Trade
from feature_pipeline.sources.kraken_protocol import (
    SNAPSHOT_SIZE,
    TRADE_CHANNEL,
    Request,
    format_error,
    format_heartbeat,
    format_pong,
    format_status,
    format_subscribe_ack,
    format_trades,
    parse_request,
)

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    symbols: set[str] = field(default_factory=set)
    last_sent: float = field(default_factory=time.monotonic)

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send(frame)
        self.last_sent = time.monotonic()


@dataclass(eq=False)
class _Feed:
    trades: list[Trade]
    published: int = 0
    subscribers: set[_Client] = field(default_factory=set)
    active: asyncio.Event = field(default_factory=asyncio.Event)
    pauses: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    inject: dict[int, list[str | bytes]] = field(default_factory=dict)


class KrakenReplayServer:
    """Serves ``trades`` (any pairs) over the Kraken v2 protocol on ``host:port`` (0: any free port).

    ``inject`` maps ``(pair, position)`` to frames sent before the pair's trade at that position.
    """

    def __init__(
        self,
        trades: Sequence[Trade],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float | None = 1.0,
        batch_size: int = 50,
        heartbeat_interval_s: float = 1.0,
        inject: Mapping[tuple[str, int], Sequence[str | bytes]] | None = None,
    ) -> None:
        by_pair: dict[str, list[Trade]] = {}
        for trade in trades:
            by_pair.setdefault(trade["pair"], []).append(trade)
        self._feeds = {
            pair: _Feed(sorted(ts, key=lambda t: (t["timestamp_ms"], t["trade_id"]))) for pair, ts in by_pair.items()
        }
        for (pair, position), frames in (inject or {}).items():
            self._feeds[pair].inject[position] = list(frames)
        self.host = host
        self.port = port
        self.speed = speed or None
        self._seconds_per_ms = 1 / (1000.0 * self.speed) if self.speed else 0.0
        self.batch_size = batch_size
        self.heartbeat_interval_s = heartbeat_interval_s
        self.connections = 0
        self.subscriptions = 0
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._publishers: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v2"

    def published(self, pair: str) -> int:
        """How many of the pair's trades have been sent so far."""
        return self._feeds[pair].published

    async def start(self) -> str:
        """Listen and start publishing; returns the URL (with the bound port)."""
        self._server = await ws_serve(self._serve_client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._publishers = [asyncio.create_task(self._publish(feed)) for feed in self._feeds.values()]
        logger.info(
            "Kraken replay server on %s: %s",
            self.url,
            ", ".join(f"{pair} ({len(feed.trades)} trades)" for pair, feed in self._feeds.items()),
        )
        return self.url

    async def stop(self) -> None:
        """Stop publishing and close every connection (code 1001)."""
        for task in self._publishers:
            task.cancel()
        await asyncio.gather(*self._publishers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def drop_connections(self) -> int:
        """Cut every connection abruptly, as a network failure would; returns how many."""
        clients = list(self._clients)
        for client in clients:
            self._forget(client)
            client.ws.transport.abort()
        await asyncio.sleep(0)
        return len(clients)

    async def _serve_client(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self.connections += 1
        heartbeat = asyncio.create_task(self._heartbeat(client))
        try:
            await client.send(format_status(connection_id=self.connections))
            async for frame in ws:
                await self._answer(client, frame)
        except ConnectionClosed:
            pass
        finally:
            heartbeat.cancel()
            self._forget(client)

    async def _answer(self, client: _Client, frame: str | bytes) -> None:
        request = parse_request(frame)
        if request is None:
            await client.send(format_error("Malformed request", _now_ms()))
        elif request.method == "ping":
            await client.send(format_pong(_now_ms(), request.req_id))
        elif request.method != "subscribe":
            await client.send(
                format_error(f"Method not found: {request.method}", _now_ms(), request.method, request.req_id)
            )
        elif request.channel != TRADE_CHANNEL:
            await client.send(
                format_error(f"Channel not supported: {request.channel}", _now_ms(), "subscribe", request.req_id)
            )
        elif not request.symbols:
            await client.send(format_error("Missing symbol", _now_ms(), "subscribe", request.req_id))
        else:
            for symbol in request.symbols:
                await self._subscribe(client, symbol, request)

    async def _subscribe(self, client: _Client, symbol: str, request: Request) -> None:
        feed = self._feeds.get(symbol)
        if feed is None or symbol in client.symbols:
            error = "Already subscribed" if feed else f"Currency pair not supported {symbol}"
            await client.send(format_subscribe_ack(symbol, _now_ms(), error=error, req_id=request.req_id))
            return
        async with feed.lock:
            ack = format_subscribe_ack(symbol, _now_ms(), req_id=request.req_id, snapshot=request.snapshot)
            await client.send(ack)
            if request.snapshot:
                recent = feed.trades[max(0, feed.published - SNAPSHOT_SIZE) : feed.published]
                await client.send(format_trades(recent, "snapshot"))
            client.symbols.add(symbol)
            feed.subscribers.add(client)
            feed.active.set()
            self.subscriptions += 1

    def _forget(self, client: _Client) -> None:
        self._clients.discard(client)
        for symbol in client.symbols:
            feed = self._feeds[symbol]
            feed.subscribers.discard(client)
            if not feed.subscribers and feed.active.is_set():
                feed.active.clear()
                feed.pauses += 1
        client.symbols.clear()

    async def _publish(self, feed: _Feed) -> None:
        """Send the feed's trades to its subscribers, paced, pausing while there are none."""
        anchor: tuple[float, int] | None = None  # (monotonic s, trade ms) that pacing counts from
        pauses = feed.pauses
        while feed.published < len(feed.trades):
            await feed.active.wait()
            if feed.pauses != pauses or anchor is None:
                pauses = feed.pauses
                anchor = (time.monotonic(), feed.trades[feed.published]["timestamp_ms"])
            end = self._batch_end(feed, anchor)
            if end == feed.published:
                due = self._due(anchor, feed.trades[end]["timestamp_ms"])
                await asyncio.sleep(due - time.monotonic())
                continue
            async with feed.lock:
                batch = feed.trades[feed.published : end]
                frames = [*feed.inject.pop(feed.published, ()), format_trades(batch, "update")]
                feed.published = end
                for client in list(feed.subscribers):
                    try:
                        for frame in frames:
                            await client.send(frame)
                    except ConnectionClosed:
                        self._forget(client)
            await asyncio.sleep(0)

    def _batch_end(self, feed: _Feed, anchor: tuple[float, int]) -> int:
        """End of the next batch: the trades due by now, at most ``batch_size``, none past an injection."""
        limit = min(
            len(feed.trades),
            feed.published + self.batch_size,
            *(position for position in feed.inject if position > feed.published),
        )
        now = time.monotonic()
        end = feed.published
        while end < limit and self._due(anchor, feed.trades[end]["timestamp_ms"]) <= now:
            end += 1
        return end

    def _due(self, anchor: tuple[float, int], timestamp_ms: int) -> float:
        """When a trade is due (monotonic s); unpaced, everything is due at once."""
        return anchor[0] + (timestamp_ms - anchor[1]) * self._seconds_per_ms

    async def _heartbeat(self, client: _Client) -> None:
        try:
            while True:
                idle_for = time.monotonic() - client.last_sent
                if idle_for < self.heartbeat_interval_s:
                    await asyncio.sleep(self.heartbeat_interval_s - idle_for)
                elif client.symbols:
                    await client.send(format_heartbeat())
                else:
                    await asyncio.sleep(self.heartbeat_interval_s)
        except ConnectionClosed:
            pass


@contextmanager
def run_in_thread(trades: Sequence[Trade], **options: Any) -> Iterator[str]:
    """Run a `KrakenReplayServer` on its own event loop in a thread; yields its URL."""
    with server_thread(KrakenReplayServer(trades, **options)) as url:
        yield url


@contextmanager
def server_thread(server: Any) -> Iterator[str]:
    """Run a replay server (``start``/``stop`` coroutines) on its own event loop in a thread; yields its URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=type(server).__name__, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def serve(path: Path, pair: str, host: str = "127.0.0.1", port: int = 0, speed: float | None = 1.0) -> None:
    """Replay a trades CSV (`read_trades_csv`) as ``pair`` over Kraken v2 until interrupted."""
    rejects = Rejects("replay_csv")
    trades = read_trades_csv(Path(path), pair, rejects)
    if rejects.counts:
        logger.warning(rejects.summary())
    server = KrakenReplayServer(trades, host=host, port=port, speed=speed)
    try:
        asyncio.run(server.serve_forever())
    except KeyboardInterrupt:
        logger.info("Kraken replay server stopped")
