"""Hostile frames over a real connection: `live` (Kraken) and `live-books` (Coinbase) keep streaming.

A local server speaking the exchange's protocol sends one frame of each hostile kind (nesting past the parser's
limit, a 400-digit price, an id past 2**64, a 10 MB malformed frame, a binary frame that is not UTF-8, a trade
of a symbol never subscribed) between good trades. Through the real source process and the real broker: the
command is still running, every good trade sent after the hostile frames is on the trades topic, and each
hostile frame is one dead letter on the dead-letter topic with its reason, within the configured size (which
must therefore have reached the source's process) and carrying the original length.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from coinflow.settings import Settings
from feature_pipeline.sources.coinbase_protocol import parse_message, with_sequence_num
from feature_pipeline.sources.coinbase_replay_server import CoinbaseReplayServer, read_session
from feature_pipeline.sources.kraken_replay_server import KrakenReplayServer, server_thread
from tests.support.feature_runs import env_for
from tests.support.hostile_frames import KINDS, coinbase_trades_hostile, kraken_trade_hostile
from tests.support.paths import COINBASE_SESSION
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

LIMIT = 20_000  # not the default: the source's process must have been given it
PAIR = "BTC/USD"
TRADES = 200
INJECT_AT = 100


@contextmanager
def _running(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A pipeline command in its own process group; asserts it is still running, then stops it with Ctrl-C."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feature_pipeline", *args],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _collect(
    settings: Settings, topic: str, enough: Callable[[list[bytes]], bool], what: str, timeout: float = 60
) -> list[bytes]:
    """A topic's messages from its start, read until they are ``enough`` (then one more second, for any extra).

    One consumer reads on: a live topic never falls silent (ticks), and the embedded broker's high watermark
    can lag behind what it holds.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}",
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline, done_at = time.monotonic() + timeout, None
    try:
        while time.monotonic() < (done_at or deadline):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(message.value())
            if done_at is None and enough(values):
                done_at = time.monotonic() + 1.0
        if done_at is None:
            pytest.fail(f"timed out waiting for {what}")
        return values
    finally:
        consumer.close()


def _trade_ids(values: list[bytes]) -> set[int]:
    return {json.loads(value).get("trade_id") for value in values}


def _dead_letters(settings: Settings, stage: str, count: int) -> list[tuple[int, dict]]:
    """(message size, record) of the stage's dead letters, once there are ``count``."""

    def of_stage(values: list[bytes]) -> list[tuple[int, dict]]:
        letters = [(len(value), json.loads(value)) for value in values]
        return [(size, record) for size, record in letters if record["stage"] == stage]

    return of_stage(
        _collect(
            settings,
            settings.topics.dead_letters,
            lambda values: len(of_stage(values)) >= count,
            f"{count} dead letters of {stage}",
        )
    )


def _as_sent(frame: str | bytes, record: dict) -> bytes:
    """The frame as the server sent it: text with the connection's ``sequence_num`` where it has one."""
    if isinstance(frame, bytes):
        return frame
    stamped = re.search(r'"sequence_num":(\d+)', record["raw"])
    return (with_sequence_num(frame, int(stamped.group(1))) if stamped else frame).encode()


def _assert_one_fitting_dead_letter_per_frame(letters: list[tuple[int, dict]], hostile: dict) -> None:
    assert Counter(record["reason"] for _, record in letters) == Counter(reason for _, reason in hostile.values())
    assert all(size <= LIMIT for size, _ in letters)
    whole = {  # the frames rejected whole: their dead letter is the frame's
        "nested": next(r for _, r in letters if r["reason"] == "nested_too_deep"),
        "ten_mb": next(r for _, r in letters if r["reason"] == "malformed_json" and r["encoding"] == "utf-8"),
        "binary": next(r for _, r in letters if r["reason"] == "malformed_json" and r["encoding"] == "base64"),
    }
    for kind, record in whole.items():
        sent = _as_sent(hostile[kind][0], record)
        assert record["raw_bytes"] == len(sent) and record["truncated"] == (kind != "binary")
        kept = base64.b64decode(record["raw"]) if kind == "binary" else record["raw"].encode()
        assert kept and sent.startswith(kept)
    assert base64.b64decode(whole["binary"]["raw"]) == hostile["binary"][0]  # every byte kept


def test_live_kraken_keeps_streaming_through_hostile_frames(settings, tmp_path):
    start_ms = int(time.time() * 1000)
    trades = [
        {
            "exchange": "kraken",
            "pair": PAIR,
            "trade_id": i,
            "price": 30_000.0 + i,
            "qty": 0.01,
            "side": "buy" if i % 2 else "sell",
            "timestamp_ms": start_ms + 10 * i,
        }
        for i in range(1, TRADES + 1)
    ]
    hostile = {kind: kraken_trade_hostile(kind) for kind in KINDS}
    server = KrakenReplayServer(trades, speed=None, inject={(PAIR, INJECT_AT): [f for f, _ in hostile.values()]})
    with server_thread(server) as url:
        env = env_for(settings) | {
            "COINFLOW_KRAKEN_WS_URL": url,
            "COINFLOW_METRICS_PORT": "0",
            "COINFLOW_DEAD_LETTER_MAX_BYTES": str(LIMIT),
        }
        with _running(["live", "--pairs", PAIR], env, tmp_path / "live.log"):
            wait_for(lambda: server.published(PAIR) == TRADES, 120, "every trade to be published")
            every = set(range(1, TRADES + 1))  # those after the hostile frames included
            _collect(settings, settings.topics.trades, lambda values: every <= _trade_ids(values), "every trade")
            letters = _dead_letters(settings, "kraken_ws", len(hostile))
            assert server.connections == 1  # no frame cost the connection either
    _assert_one_fitting_dead_letter_per_frame(letters, hostile)


def test_live_coinbase_keeps_streaming_through_hostile_frames(settings, tmp_path):
    frames = read_session(COINBASE_SESSION)
    inject_at = 300
    after = {
        t["trade_id"]
        for f in frames[inject_at:]
        if (m := parse_message(f.data)) and getattr(m, "trades", None)
        for t in m.trades
    }
    assert after
    hostile = {kind: coinbase_trades_hostile(kind) for kind in KINDS}
    server = CoinbaseReplayServer(frames, inject={inject_at: [f for f, _ in hostile.values()]})
    tag = uuid.uuid4().hex[:8]
    with server_thread(server) as url:
        env = env_for(settings) | {
            "COINFLOW_COINBASE_WS_URL": url,
            "COINFLOW_COINBASE_PRODUCTS": "ETH-USD",
            "COINFLOW_METRICS_PORT": "0",
            "COINFLOW_DEAD_LETTER_MAX_BYTES": str(LIMIT),
            "COINFLOW_BOOK_UPDATES_TOPIC": f"book-updates-{tag}",
            "COINFLOW_BOOK_TOPIC": f"book-{tag}",
            "COINFLOW_BOOK_CONSUMER_GROUP": f"it-books-{tag}",
            # The server closes after the recording; the next connection replays it (without the hostile frames).
            "COINFLOW_RECONNECT_INITIAL_S": "5",
            "COINFLOW_RECONNECT_MAX_S": "5",
        }
        with _running(["live-books", "--exchange", "coinbase"], env, tmp_path / "live-books.log"):
            wait_for(lambda: server.finished >= 1, 120, "the recorded session to be sent")
            _collect(
                settings,
                settings.topics.trades,
                lambda values: after <= _trade_ids(values),
                "the trades after the hostile frames",
            )
            letters = _dead_letters(settings, "coinbase_ws", len(hostile))
    _assert_one_fitting_dead_letter_per_frame(letters, hostile)
