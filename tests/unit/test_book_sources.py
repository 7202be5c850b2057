"""The book sources against local servers: Coinbase (the recorded session, verbatim) and Kraken v2 (captured levels).

No broker: the sources' output goes straight into the dataflow's `BookProcessor`,
the same code the pipeline runs behind the topic.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pandas as pd
from websockets.asyncio.server import ServerConnection, serve

from coinflow.books import OrderBook
from coinflow.quality import Rejects
from coinflow.settings import Settings
from feature_pipeline.books.dataflow import BookProcessor
from feature_pipeline.sources.coinbase_protocol import LEVEL2
from feature_pipeline.sources.coinbase_replay_server import CoinbaseReplayServer, read_session
from feature_pipeline.sources.coinbase_ws import CoinbaseStream
from feature_pipeline.sources.kraken_protocol import (
    book_checksum,
    format_book,
    format_subscribe_ack,
    parse_request,
)
from feature_pipeline.sources.kraken_ws import KrakenBookStream
from tests.support.book_sessions import agreement, recorded_tickers
from tests.support.paths import COINBASE_SESSION, DATA


async def replay(server: CoinbaseReplayServer, processor: BookProcessor) -> tuple[CoinbaseStream, list[dict], list]:
    url = await server.start()
    outputs: list[dict] = []
    trades: list = []

    def emit(key: str, record: dict) -> None:
        outputs.extend(processor.step(json.dumps(record).encode(), key, 0, None))

    stream = CoinbaseStream(url, ["ETH-USD"], emit, trades.extend, Rejects("test_coinbase"), finite=True)
    try:
        await asyncio.wait_for(stream.run(), 60)
    finally:
        await server.stop()
    return stream, outputs, trades


def book_states(outputs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([o for o in outputs if "best_bid" in o])


def test_recorded_session_rebuilds_the_book_the_ticker_shows():
    processor = BookProcessor(Settings(_env_file=None), Rejects("test_dataflow"))
    stream, outputs, trades = asyncio.run(replay(CoinbaseReplayServer(read_session(COINBASE_SESSION)), processor))
    states = book_states(outputs)
    assert stream.stats.sequence_gaps == 0 and not stream.gate.resyncs
    assert len(states) == 375  # the snapshot and every level2 update
    assert (states.best_bid < states.best_ask).all()
    assert agreement(states, recorded_tickers()) >= 0.9
    assert len(trades) == 132 and {t["pair"] for t in trades} == {"ETH/USD"}
    assert all(t["exchange"] == "coinbase" for t in trades)
    assert [t["trade_id"] for t in trades] == sorted(t["trade_id"] for t in trades)
    features = [o for o in outputs if "window_end_ms" in o]
    assert [f["window_end_ms"] % 4000 for f in features] == [0] * len(features) and len(features) >= 5


def test_a_lost_message_drops_the_book_and_a_fresh_snapshot_rebuilds_it():
    frames = read_session(COINBASE_SESSION)
    lost = next(i for i, f in enumerate(frames) if '"l2_data"' in f.data and i > len(frames) // 3)
    server = CoinbaseReplayServer(frames, speed=8, lose=[lost])
    processor = BookProcessor(Settings(_env_file=None), Rejects("test_dataflow"))
    stream, outputs, _ = asyncio.run(replay(server, processor))
    assert stream.stats.sequence_gaps == 1 and stream.gate.resyncs == {"sequence_gap": 1}
    level2 = [(r.kind, r.channel) for r in server.requests if r.channel == LEVEL2]
    assert level2 == [("subscribe", LEVEL2), ("unsubscribe", LEVEL2), ("subscribe", LEVEL2)]
    states = book_states(outputs)
    assert (states.best_bid < states.best_ask).all()
    assert agreement(states, recorded_tickers()) >= 0.9  # the rebuilt book agrees again
    after = states[states.timestamp_ms > states.timestamp_ms.iloc[0]]
    assert after.levels.iloc[-1] > 20_000  # a whole fresh snapshot, not a patched book


def test_bad_coinbase_input_is_counted_and_a_broken_book_is_rebuilt():
    rejects = Rejects("test_coinbase")
    emitted: list[tuple[str, dict]] = []
    stream = CoinbaseStream("ws://unused", ["ETH-USD"], lambda k, r: emitted.append((k, r)), lambda t: None, rejects)

    def frame(seq: int, channel: str, events: list) -> str:
        return json.dumps(
            {"channel": channel, "timestamp": "2026-08-09T21:05:48.1Z", "sequence_num": seq, "events": events}
        )

    def l2(kind: str, product: str, *updates: tuple[str, str, str]) -> dict:
        return {
            "type": kind,
            "product_id": product,
            "updates": [{"side": s, "price_level": p, "new_quantity": q} for s, p, q in updates],
        }

    stream._dispatch(frame(0, "l2_data", [l2("snapshot", "ETH-USD", ("bid", "100", "1"), ("offer", "101", "1"))]))
    stream._dispatch("{not json")
    stream._dispatch(frame(1, "status", []))
    stream._dispatch(frame(2, "l2_data", [l2("update", "BTC-USD", ("bid", "5", "1"))]))
    assert "ETH-USD" in stream.gate.books
    stream._dispatch(frame(3, "l2_data", [l2("update", "ETH-USD", ("bid", "100.5", "-1"))]))
    assert "ETH-USD" not in stream.gate.books  # dropped, not patched
    stream._dispatch(frame(4, "l2_data", [l2("snapshot", "ETH-USD", ("bid", "100", "1"), ("offer", "101", "1"))]))
    stream._dispatch(frame(5, "l2_data", [l2("update", "ETH-USD", ("offer", "1O1", "1"))]))
    stream._dispatch(frame(6, "l2_data", [l2("snapshot", "ETH-USD", ("bid", "100", "1"), ("offer", "101", "1"))]))
    stream._dispatch(frame(7, "l2_data", [l2("update", "ETH-USD", ("bid", "102", "1"))]))  # would cross the book
    assert rejects.counts == {
        "malformed_json": 1,
        "unknown_channel": 1,
        "unsubscribed_symbol": 1,
        "negative_qty": 1,
        "not_a_decimal": 1,
    }
    assert stream.gate.resyncs == {"negative_qty": 1, "not_a_decimal": 1, "crossed": 1}
    assert [r.get("kind") or r["control"] for _, r in emitted] == [
        "snapshot",
        "reset",
        "snapshot",
        "reset",
        "snapshot",
        "reset",
    ]


# --- Kraken v2 book: captured levels and Kraken's own checksums -------------------------------


def captured_kraken_book(pair: str = "XBT/CHF") -> tuple[list, list[tuple[list, list, int]]]:
    """The snapshot and the checksummed updates of one pair of the captured v1 session."""
    snapshot, updates = None, []
    for line in (DATA / "kraken" / "ws_v1_2021-04-17" / "book.log").read_text().splitlines():
        _, sep, body = line.partition(": ")
        if not sep or not body.startswith("[") or not body.endswith(f'"{pair}"]'):
            continue
        parts = json.loads(body)[1:-2]
        levels = {
            k: [(Decimal(p), Decimal(q)) for part in parts for p, q, *_ in part.get(k, [])]
            for k in ("bs", "as", "b", "a")
        }
        if levels["bs"] or levels["as"]:
            snapshot = (levels["bs"], levels["as"])
        else:
            updates.append((levels["b"], levels["a"], int(next(p["c"] for p in parts if "c" in p))))
    return snapshot, updates


class FakeKrakenBookServer:
    """Serves a pair's captured book as v2 ``book`` messages; corrupts one update on the first connection's first pass."""

    def __init__(self, pair: str, snapshot, updates, corrupt_at: int) -> None:
        self.pair, self.snapshot, self.updates, self.corrupt_at = pair, snapshot, updates, corrupt_at
        self.requests: list = []
        self.book = OrderBook(depth=1000)
        self.book.apply(*snapshot)
        self.sent = 0

    async def handler(self, ws: ServerConnection) -> None:
        async for text in ws:
            request = parse_request(text)
            self.requests.append(request)
            if request.method == "unsubscribe":
                continue
            await ws.send(format_subscribe_ack(self.pair, 0, req_id=request.req_id).replace('"trade"', '"book"'))
            bids, asks = list(self.book.top_bids(1000)), list(self.book.top_asks(1000))
            await ws.send(format_book(self.pair, bids, asks, book_checksum(self.book), 0, "snapshot"))
            while self.sent < len(self.updates):
                bids, asks, checksum = self.updates[self.sent]
                self.book.apply(bids, asks)
                self.sent += 1
                if self.sent == self.corrupt_at:
                    asks = [(asks[0][0], asks[0][1] + 1)] + asks[1:] if asks else [(bids[0][0] * 2, Decimal(1))]
                    await ws.send(format_book(self.pair, bids, asks, checksum, 0, "update"))
                    break  # the client must resubscribe; the next snapshot carries on from here
                await ws.send(format_book(self.pair, bids, asks, checksum, 0, "update"))


def test_kraken_checksums_validate_a_captured_book_and_a_corrupted_update_triggers_a_resync():
    pair = "XBT/CHF"
    snapshot, updates = captured_kraken_book(pair)
    assert len(updates) > 20
    server = FakeKrakenBookServer(pair, snapshot, updates, corrupt_at=len(updates) // 2)
    processor = BookProcessor(Settings(_env_file=None), Rejects("test_dataflow"))
    outputs: list[dict] = []
    emitted: list[dict] = []

    def emit(key: str, record: dict) -> None:
        emitted.append(record)
        outputs.extend(processor.step(json.dumps(record).encode(), key, 0, None))

    async def run() -> tuple[KrakenBookStream, OrderBook]:
        async with serve(server.handler, "127.0.0.1", 0, max_size=None) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            stream = KrakenBookStream(f"ws://127.0.0.1:{port}", [pair], 1000, emit, Rejects("test_kraken"))
            task = asyncio.create_task(stream.run())
            for _ in range(200):
                await asyncio.sleep(0.05)
                if server.sent == len(updates):
                    break
            await asyncio.sleep(0.2)
            book = processor.books[f"kraken:{pair}"]
            stream.stop()
            await task
            return stream, book

    stream, final = asyncio.run(run())
    assert stream.stats.checksum_failures == 1 and stream.gate.resyncs == {"bad_checksum": 1}
    assert [(r.method, r.channel) for r in server.requests[:3]] == [
        ("subscribe", "book"),
        ("unsubscribe", "book"),
        ("subscribe", "book"),
    ]
    kinds = [r.get("kind") or r["control"] for r in emitted]
    assert kinds.count("snapshot") == 2 and kinds.count("reset") >= 1
    assert all(r["checksum_ok"] for r in emitted if "kind" in r)  # nothing unverified was passed on
    assert len(emitted) - kinds.count("reset") == len(updates) + 1  # every good update, the snapshots, not the bad one
    assert list(final.top_bids(10)) == list(server.book.top_bids(10))
    assert list(final.top_asks(10)) == list(server.book.top_asks(10))
    states = [o for o in outputs if "best_bid" in o]
    assert states and all(s["best_bid"] < s["best_ask"] for s in states)
