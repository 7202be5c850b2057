"""The live Kraken client against the local replay server: reconnects lose no trade.

Real trades from the Kraken file are served over the v2 protocol by
`KrakenReplayServer`; `KrakenTradeStream` reads them, is cut off mid-stream,
reconnects and resubscribes. No Kafka: the Source is driven with a fake producer.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from quixstreams.models.topics import Topic
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import connect as sync_connect

from coinflow.exchange_files import read_trades_csv
from coinflow.quality import Rejects
from coinflow.schemas import Trade
from feature_pipeline.sources.kraken_protocol import format_status, subscribe_request
from feature_pipeline.sources.kraken_replay_server import KrakenReplayServer, run_in_thread
from feature_pipeline.sources.kraken_ws import KrakenTradeSource, KrakenTradeStream, backoff_delay
from tests.support.paths import DATA

KRAKEN_DATA = DATA / "kraken"
TRADES_CSV = KRAKEN_DATA / "btcusd_trades_2019-07-01T00.csv"
PAIR = "BTC/USD"

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def trades() -> list[Trade]:
    rejects = Rejects("test_csv")
    # Served as Kraken's own trades: their ids are the exchange's, not a file's time keys (no id_space).
    loaded = [{k: v for k, v in t.items() if k != "id_space"} for t in read_trades_csv(TRADES_CSV, PAIR, rejects)[:500]]
    assert len(loaded) == 500 and not rejects.counts
    return loaded


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _first_of_each_id(received: list[Trade]) -> list[Trade]:
    seen: set[int] = set()
    unique = []
    for trade in received:
        if trade["trade_id"] not in seen:
            seen.add(trade["trade_id"])
            unique.append(trade)
    return unique


def test_forced_disconnect_mid_stream_loses_and_reorders_nothing(trades: list[Trade]) -> None:
    received: list[Trade] = []
    rejected: list[dict] = []
    state: dict[str, Any] = {}

    async def scenario() -> None:
        # 500 trades span ~354 s of the hour: at 300x they take ~1.2 s.
        server = KrakenReplayServer(trades, speed=300)
        url = await server.start()
        loop = asyncio.get_running_loop()

        def on_trades(batch: list[Trade]) -> None:
            received.extend(batch)
            if len(received) >= 200 and "drop" not in state:
                state["subscribed_before_drop"] = stream.subscribed
                state["received_at_drop"] = len(received)
                state["drop"] = loop.create_task(server.drop_connections())

        stream = KrakenTradeStream(
            url,
            [PAIR, "DOGE/USD"],  # the server has no DOGE trades: its ack fails, BTC goes on
            on_trades,
            Rejects("test_ws", forward=rejected.append),
            reconnect_initial_s=0.05,
            reconnect_max_s=0.2,
            silence_timeout_s=5.0,
        )
        task = asyncio.create_task(stream.run())
        try:
            await _until(lambda: len({t["trade_id"] for t in received}) >= len(trades), 15, "all trades")
            state["dropped"] = await state["drop"]
        finally:
            stream.stop()
            await asyncio.wait_for(task, 5)
            await server.stop()
        state["stats"] = stream.stats
        state["server_subscriptions"] = server.subscriptions
        state["server_connections"] = server.connections

    asyncio.run(scenario())

    unique = _first_of_each_id(received)
    assert unique == trades  # every trade once, in order, every field intact
    assert state["dropped"] == 1
    assert state["subscribed_before_drop"] == {PAIR}
    stats = state["stats"]
    assert stats.reconnects >= 1 and stats.connects == stats.reconnects + 1
    assert stats.subscribe_requests == stats.connects  # resubscribed on every connection
    assert state["server_subscriptions"] == stats.connects  # and the server acked BTC each time
    assert state["server_connections"] == stats.connects
    assert stats.subscribe_failures["DOGE/USD"] == stats.connects
    assert stats.system_status == "online"
    # The resubscription's snapshot repeated trades the client already had (as Kraken does).
    assert len(received) > len(trades)
    assert received[state["received_at_drop"] :] != unique[state["received_at_drop"] :]
    assert rejected == []


async def _refusing_port() -> tuple[str, Callable[[], Awaitable[None]]]:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def nothing() -> None:
        return None

    return f"ws://127.0.0.1:{port}/v2", nothing


async def _tcp_hangup() -> tuple[str, Callable[[], Awaitable[None]]]:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return f"ws://127.0.0.1:{port}/v2", close


async def _ws_server(
    handler: Callable[[ServerConnection], Awaitable[None]],
) -> tuple[str, Callable[[], Awaitable[None]]]:
    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return f"ws://127.0.0.1:{port}/v2", close


async def _ws_close_after_status() -> tuple[str, Callable[[], Awaitable[None]]]:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(format_status())

    return await _ws_server(handler)


async def _ws_silent() -> tuple[str, Callable[[], Awaitable[None]]]:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    return await _ws_server(handler)


@pytest.mark.parametrize(
    "make_server",
    [_refusing_port, _tcp_hangup, _ws_close_after_status, _ws_silent],
    ids=["connection-refused", "tcp-hangup", "ws-closes-after-status", "ws-silent"],
)
def test_failing_server_gives_growing_bounded_backoff_not_a_crash(
    make_server: Callable[[], Awaitable[tuple[str, Callable[[], Awaitable[None]]]]],
) -> None:
    async def scenario() -> Any:
        url, close = await make_server()
        stream = KrakenTradeStream(
            url,
            [PAIR],
            lambda batch: pytest.fail("no trades expected"),
            Rejects("test_ws"),
            reconnect_initial_s=0.01,
            reconnect_max_s=0.08,
            silence_timeout_s=0.1,
            draw=lambda: 1.0,  # the top of each jitter range, to see the ceiling
        )
        task = asyncio.create_task(stream.run())
        try:
            await _until(lambda: len(stream.stats.delays) >= 7 or task.done(), 10, "seven reconnect delays")
            assert not task.done(), "the stream gave up or crashed"
        finally:
            stream.stop()
            await asyncio.wait_for(task, 5)  # stops cleanly, raising nothing
            await close()
        return stream.stats

    stats = asyncio.run(scenario())
    assert stats.delays[:7] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08])
    assert stats.trades == 0


def test_backoff_has_full_jitter_under_a_doubling_bounded_ceiling() -> None:
    draw = random.Random(7).random
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 30.0, draw) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9  # spread over the full range


def test_replay_server_protocol_in_a_thread(trades: list[Trade]) -> None:
    with run_in_thread(trades[:120], speed=0) as url, sync_connect(url) as ws:
        status = json.loads(ws.recv(timeout=5))
        assert status["channel"] == "status" and status["data"][0]["system"] == "online"

        ws.send(json.dumps({"method": "ping", "req_id": 9}))
        assert json.loads(ws.recv(timeout=5))["method"] == "pong"
        ws.send(json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": [PAIR]}}))
        assert json.loads(ws.recv(timeout=5))["success"] is False
        ws.send(json.dumps({"method": "frobnicate"}))
        assert json.loads(ws.recv(timeout=5))["error"].startswith("Method not found")

        ws.send(subscribe_request([PAIR, "ETH/USD"], req_id=1))
        ack = json.loads(ws.recv(timeout=5))
        assert ack["success"] is True and ack["result"]["symbol"] == PAIR and ack["req_id"] == 1
        snapshot = json.loads(ws.recv(timeout=5))
        assert (snapshot["channel"], snapshot["type"], snapshot["data"]) == ("trade", "snapshot", [])
        refused = json.loads(ws.recv(timeout=5))
        assert refused["success"] is False and refused["symbol"] == "ETH/USD"

        ids: list[int] = []
        while len(ids) < 120:
            message = json.loads(ws.recv(timeout=5))
            if message["channel"] == "trade":
                assert message["type"] == "update" and len(message["data"]) <= 50
                ids.extend(entry["trade_id"] for entry in message["data"])
        assert ids == [t["trade_id"] for t in trades[:120]]
        assert json.loads(ws.recv(timeout=3)) == {"channel": "heartbeat"}  # idle now

        ws.send(subscribe_request([PAIR], req_id=2))
        assert json.loads(ws.recv(timeout=5))["error"] == "Already subscribed"


class _FakeProducer:
    """Records what a Source produces (the InternalProducer calls it makes)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.flushes = 0
        self._lock = threading.Lock()

    def produce(self, topic: str, value: Any = None, key: Any = None, timestamp: int | None = None, **_: Any) -> None:
        with self._lock:
            self.messages.append({"topic": topic, "key": key, "value": value, "timestamp": timestamp})

    def flush(self, timeout: float | None = None) -> int:
        self.flushes += 1
        return 0

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["topic"] == topic]


def _trades_topic() -> Topic:
    return Topic("trades", key_serializer="string", value_serializer="json")


def _run_source(source: KrakenTradeSource, producer: _FakeProducer, done: Callable[[], bool]) -> None:
    source.configure(_trades_topic(), producer)
    thread = threading.Thread(target=source.start, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the source did not stop when running turned False"
    assert done(), "the source did not produce what was expected in time"


def test_source_produces_trades_keyed_by_pair_and_ticks_for_subscribed_pairs(trades: list[Trade]) -> None:
    producer = _FakeProducer()

    def values(kind: str) -> list[dict]:
        decoded = [json.loads(m["value"]) for m in producer.on("trades")]
        return [v for v in decoded if ("control" in v) == (kind == "control")]

    with run_in_thread(trades[:100], speed=0) as url:
        source = KrakenTradeSource(
            url, [PAIR, "DOGE/USD"], "dead-letters", tick_interval_s=0.05, reconnect_initial_s=0.05
        )
        started_ms = int(time.time() * 1000)
        _run_source(source, producer, lambda: len(values("trade")) >= 100 and len(values("control")) >= 3)

    trade_messages = [m for m in producer.on("trades") if "control" not in json.loads(m["value"])]
    assert [json.loads(m["value"]) for m in trade_messages] == trades[:100]
    assert all(m["key"] == PAIR.encode() for m in trade_messages)
    assert [m["timestamp"] for m in trade_messages] == [t["timestamp_ms"] for t in trades[:100]]
    ticks = [(json.loads(m["value"]), m) for m in producer.on("trades") if "control" in json.loads(m["value"])]
    assert {tick["pair"] for tick, _ in ticks} == {PAIR}  # DOGE was refused: no ticks for it
    assert all(tick["control"] == "tick" and m["key"] == PAIR.encode() for tick, m in ticks)
    assert all(started_ms <= tick["timestamp_ms"] == m["timestamp"] <= time.time() * 1000 for tick, m in ticks)
    assert producer.on("dead-letters") == []
    assert producer.flushes >= 1  # Source.cleanup flushed on stop


def test_source_sends_rejected_frames_to_the_dead_letter_topic() -> None:
    good = {
        "symbol": PAIR,
        "side": "buy",
        "price": 10749.4,
        "qty": 0.5,
        "ord_type": "limit",
        "trade_id": 77,
        "timestamp": "2019-07-01T00:00:03.172000Z",
    }
    frames = [
        format_status(),
        '{"method": "subscribe", "result": {"channel": "trade", "snapshot": true, "symbol": "BTC/USD"}, "success": true}',
        '{"channel": "trade", "type": "update", "data": [',
        '{"channel": "ohlc", "type": "update", "data": []}',
        json.dumps({"channel": "trade", "type": "update", "data": [dict(good, price=-3, trade_id=76), good]}),
    ]

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async def serve_garbage(ready: threading.Event, stop: threading.Event, box: dict) -> None:
        url, close = await _ws_server(handler)
        box["url"] = url
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await close()

    ready, stop, box = threading.Event(), threading.Event(), {}
    server_thread = threading.Thread(target=asyncio.run, args=(serve_garbage(ready, stop, box),), daemon=True)
    server_thread.start()
    assert ready.wait(5)
    producer = _FakeProducer()
    try:
        source = KrakenTradeSource(box["url"], [PAIR], "dead-letters", tick_interval_s=10)
        _run_source(source, producer, lambda: len(producer.messages) >= 4)
    finally:
        stop.set()
        server_thread.join(5)

    [trade] = [json.loads(m["value"]) for m in producer.on("trades")]
    assert trade["trade_id"] == 77 and trade["timestamp_ms"] == 1561939203172
    dead = [json.loads(m["value"]) for m in producer.on("dead-letters")]
    assert [(d["stage"], d["reason"]) for d in dead] == [
        ("kraken_ws", "malformed_json"),
        ("kraken_ws", "unknown_channel"),
        ("kraken_ws", "non_positive_or_nan"),
    ]
    assert dead[0]["raw"] == frames[2]
    assert json.loads(dead[2]["raw"])["trade_id"] == 76
