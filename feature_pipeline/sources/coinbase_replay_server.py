"""A local WebSocket server that speaks Coinbase Advanced Trade and replays a recorded session verbatim.

It stands in for ``wss://advanced-trade-ws.coinbase.com`` in tests, demos and
`replay-session`. Every connection gets the whole recording from its start:
once the client has subscribed (and ``start_delay_s`` has passed, so that its
subscriptions made right after the handshake all count), each recorded frame
whose channel and product the client is subscribed to is sent byte for byte,
except for ``sequence_num``, which counts the messages of this connection as
the real server's does. Recorded ``subscriptions`` messages are replaced by
the server's own answer to each request. Frames are paced at ``speed`` times
the recorded pace (None or 0: as fast as the client reads); after the last one
the server closes the connection normally (code 1000).

The server keeps its own copy of every book from the recorded level2 frames,
so a client that resubscribes to ``level2`` mid-session gets a fresh snapshot
of the book at that point, as from the real server. ``lose`` names recorded
frames (by position among the received ones) that are never sent, to test
how clients handle a lost message; ``inject`` adds frames of any content
(hostile ones, for tests), sent once, to the first connection that reaches a
position, just before the recorded frame there: text with the connection's
``sequence_num`` (where it has the field), bytes verbatim, each counted as a
message of the connection.

The recording format is the one of ``data/coinbase/*.jsonl.gz`` (see
`read_session`).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from coinflow.books import OrderBook, to_level
from feature_pipeline.sources.coinbase_protocol import (
    DATA_CHANNEL,
    HEARTBEATS,
    LEVEL2,
    SUBSCRIPTIONS,
    Request,
    format_l2_snapshot,
    format_subscriptions,
    frame_products,
    parse_request,
    with_sequence_num,
)

logger = logging.getLogger(__name__)

_CHANNEL_OF_DATA = {data: channel for channel, data in DATA_CHANNEL.items()}


@dataclass(frozen=True)
class RecordedFrame:
    """One received frame of a recording: when it was received (Unix s) and its raw text."""

    ts: float
    data: str


def read_session(path: Path) -> list[RecordedFrame]:
    """The received frames of a recorded session (JSON lines, gzip or plain: ``{"t": "recv", "ts", "data"}``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    frames = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line") from exc
            if entry.get("t") == "recv":
                if not isinstance(entry.get("data"), str) or not isinstance(entry.get("ts"), int | float):
                    raise ValueError(f"{path}:{number}: a recv entry needs a string 'data' and a numeric 'ts'")
                frames.append(RecordedFrame(float(entry["ts"]), entry["data"]))
    if not frames:
        raise ValueError(f"{path}: no received frames in this recording")
    return frames


@dataclass(frozen=True)
class _Entry:
    frame: RecordedFrame
    channel: str | None
    products: frozenset[str]
    l2_events: tuple[tuple[str, bool, tuple], ...] = ()


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    subscriptions: dict[str, set[str]] = field(default_factory=dict)
    books: dict[str, OrderBook] = field(default_factory=dict)
    snapshot_seen: set[str] = field(default_factory=set)
    heartbeats: bool = False
    sequence_num: int = 0
    streaming: asyncio.Task | None = None

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send(with_sequence_num(frame, self.sequence_num) if isinstance(frame, str) else frame)
        self.sequence_num += 1


class CoinbaseReplayServer:
    """Serves a recorded Coinbase Advanced Trade session on ``host:port`` (0: any free port)."""

    def __init__(
        self,
        frames: Sequence[RecordedFrame],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float | None = None,
        start_delay_s: float = 0.2,
        lose: Collection[int] = (),
        inject: Mapping[int, Sequence[str | bytes]] | None = None,
    ) -> None:
        self._entries = [self._index(frame) for frame in frames]
        self.products = frozenset(p for e in self._entries for p in e.products)
        self.host = host
        self.port = port
        self.speed = speed or None
        self.start_delay_s = start_delay_s
        self.lose = frozenset(lose)
        self._inject = {position: list(frames) for position, frames in (inject or {}).items()}
        self.connections = 0
        self.requests: list[Request] = []
        self.sent = 0
        self.finished = 0
        self._server: Server | None = None
        self._clients: set[_Connection] = set()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @staticmethod
    def _index(frame: RecordedFrame) -> _Entry:
        try:
            message = json.loads(frame.data)
        except ValueError:
            return _Entry(frame, None, frozenset())
        if not isinstance(message, dict):
            return _Entry(frame, None, frozenset())
        channel = message.get("channel")
        l2: tuple[tuple[str, bool, tuple], ...] = ()
        if channel == DATA_CHANNEL[LEVEL2]:
            l2 = tuple(
                (
                    event["product_id"],
                    event.get("type") == "snapshot",
                    tuple((u["side"], u["price_level"], u["new_quantity"]) for u in event.get("updates", [])),
                )
                for event in message.get("events", [])
                if isinstance(event, dict) and "product_id" in event
            )
        return _Entry(frame, channel if isinstance(channel, str) else None, frozenset(frame_products(message)), l2)

    async def start(self) -> str:
        """Listen; returns the URL (with the bound port)."""
        self._server = await ws_serve(self._serve_client, self.host, self.port, max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(
            "Coinbase replay server on %s: %d frames of %s",
            self.url,
            len(self._entries),
            ", ".join(sorted(self.products)),
        )
        return self.url

    async def stop(self) -> None:
        for client in list(self._clients):
            if client.streaming is not None:
                client.streaming.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def _serve_client(self, ws: ServerConnection) -> None:
        client = _Connection(ws)
        self._clients.add(client)
        self.connections += 1
        try:
            async for text in ws:
                await self._answer(client, text)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            if client.streaming is not None:
                client.streaming.cancel()

    async def _answer(self, client: _Connection, text: str | bytes) -> None:
        request = parse_request(text)
        if request is None or request.channel is None:
            await client.ws.send(json.dumps({"type": "error", "message": "Malformed request"}))
            return
        self.requests.append(request)
        unknown = [p for p in request.products if p not in self.products]
        if unknown:
            await client.ws.send(json.dumps({"type": "error", "message": f"Failed to subscribe: unknown {unknown}"}))
            return
        if request.channel == HEARTBEATS:
            client.heartbeats = request.kind == "subscribe"
        held = client.subscriptions.setdefault(request.channel, set())
        fresh = set(request.products) - held
        if request.kind == "unsubscribe":
            held.difference_update(request.products)
        else:
            held.update(request.products)
        await client.send(format_subscriptions(client.subscriptions, 0, _now_ms()))
        if request.kind == "subscribe" and request.channel == LEVEL2:
            for product in sorted(fresh & client.snapshot_seen):
                await client.send(format_l2_snapshot(product, client.books[product], 0, _now_ms()))
        if request.kind == "subscribe" and client.streaming is None:
            client.streaming = asyncio.create_task(self._stream(client))

    def _wanted(self, client: _Connection, entry: _Entry) -> bool:
        if entry.channel is None or entry.channel == SUBSCRIPTIONS:
            return False
        if entry.channel == HEARTBEATS:
            return client.heartbeats
        channel = _CHANNEL_OF_DATA.get(entry.channel, entry.channel)
        return bool(entry.products & client.subscriptions.get(channel, set()))

    async def _stream(self, client: _Connection) -> None:
        await asyncio.sleep(self.start_delay_s)
        first_ts = self._entries[0].frame.ts
        started = time.monotonic()
        try:
            for position, entry in enumerate(self._entries):
                if self.speed:
                    due = started + (entry.frame.ts - first_ts) / self.speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                for frame in self._inject.pop(position, ()):
                    await client.send(frame)
                wanted = self._wanted(client, entry)
                self._apply(client, entry)
                if wanted and position in self.lose:
                    client.sequence_num += 1  # lost on the way: the client sees a gap
                elif wanted:
                    await client.send(entry.frame.data)
                    self.sent += 1
                elif not self.speed and position % 64 == 0:
                    await asyncio.sleep(0)
            self.finished += 1
            await client.ws.close(1000, "end of the recorded session")
        except ConnectionClosed:
            pass

    @staticmethod
    def _apply(client: _Connection, entry: _Entry) -> None:
        """Keep the connection's copy of the recorded books current (for snapshots on resubscription)."""
        for product, snapshot, updates in entry.l2_events:
            if snapshot:
                client.books[product] = OrderBook()
                client.snapshot_seen.add(product)
            book = client.books.get(product)
            if book is None:
                continue
            for side, price, qty in updates:
                level = to_level(price, qty)
                if not isinstance(level, str):
                    book.set_level("bid" if side == "bid" else "ask", *level)


def _now_ms() -> int:
    return int(time.time() * 1000)


def serve(path: Path, host: str = "127.0.0.1", port: int = 0, speed: float | None = 1.0) -> None:
    """Serve a recorded session until interrupted."""
    server = CoinbaseReplayServer(read_session(path), host=host, port=port, speed=speed)
    try:
        asyncio.run(server.serve_forever())
    except KeyboardInterrupt:
        logger.info("Coinbase replay server stopped")
