"""pairs-orchestrate on the real broker: a synthetic universe with a planted cointegrated pair that later breaks,
published as 1-minute candles, gives on the pair_candidates topic the pair's enter and then its leave, keyed by pair
id and stamped with the re-tests' event times, exactly the records of batch rolling discovery over the same closes;
a bad candle is counted and dead-lettered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from quixstreams.utils.json import dumps

from coinflow.pair_candidates import candidate_events, rolling_discovery
from coinflow.settings import Settings
from tests.support.feature_runs import env_for, read_topic
from tests.support.pairs_synthetic import random_walk, universe
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

N_BARS, BREAK = 1200, 750
PAIR = "Q0-USDT__P0-USDT"


def closes() -> pd.DataFrame:
    """Closes of 4 random walks and P0/Q0, cointegrated until BREAK (index: close time in ms)."""
    prices, _ = universe(11, n_bars=N_BARS, n_independent=4)
    rng = np.random.default_rng(11)
    q = prices["Q0/USDT"].to_numpy().copy()
    q[BREAK:] = 1.5 * prices["P0/USDT"].to_numpy()[BREAK:] + 1.0 + 3 * random_walk(rng, N_BARS - BREAK)
    prices["Q0/USDT"] = q
    frame = np.exp(prices[sorted(prices.columns)])
    frame.index = frame.index.asi8 // 1_000_000
    return frame


def candle(ticker: str, ms: int, close: float) -> dict:
    return {"pair": ticker, "interval": "1m", "window_end_ms": int(ms), "open": close, "high": close, "low": close,
            "close": close, "volume": 1.0}  # fmt: skip


def publish(settings: Settings, frame: pd.DataFrame) -> None:
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}", "linger.ms": 5})
    topic = settings.universe.candles_topic

    def produce(ticker: str, value: dict, ms: int) -> None:
        producer.produce(topic, key=ticker.encode(), value=json.dumps(value).encode(), timestamp=ms)
        producer.poll(0)

    first = int(frame.index[0])
    produce("R0/USDT", candle("R0/USDT", first, 0.0), first)  # bad: a zero close
    for ms, row in frame.iterrows():
        for ticker, close in row.items():
            produce(str(ticker), candle(str(ticker), int(ms), float(close)), int(ms))
    producer.flush(30)


def exist(settings: Settings) -> bool:
    names = AdminClient({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}"}).list_topics(
        timeout=5
    )
    return {settings.universe.candles_topic, settings.pair_jobs.candidates_topic} <= set(names.topics)


def test_the_orchestrator_publishes_the_planted_pairs_enter_then_its_leave(settings: Settings, tmp_path):
    tag = uuid.uuid4().hex[:8]
    settings = settings.override(
        universe_candles_topic=f"universe-candles-{tag}",
        pair_jobs_candidates_topic=f"pair-candidates-{tag}",
        pair_jobs_orchestrator_consumer_group=f"it-orchestrator-{tag}",
        pairs_min_history_bars=200,
        pairs_retest_window_bars=400,
        pairs_retest_interval_s=120 * 60,
        pairs_leave_after_s=240 * 60,
    )
    frame = closes()
    log_prices = np.log(frame.set_axis(pd.to_datetime(frame.index, unit="ms", utc=True)))
    p = settings.pairs_trading
    expected = json.loads(dumps(candidate_events(rolling_discovery(log_prices, p), p.leave_after_s)))
    assert [(r["event"], r["pair_id"]) for r in expected] == [("enter", PAIR), ("leave", PAIR)]

    topic = settings.pair_jobs.candidates_topic
    log = tmp_path / "pairs-orchestrate.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feature_pipeline", "pairs-orchestrate"],
            env={**env_for(settings), "COLUMNS": "200", "COINFLOW_METRICS_PORT": "0"},
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: exist(settings) or proc.poll() is not None, 90, "the orchestrator's topics", log)
        assert proc.poll() is None, log.read_text()[-4000:]
        publish(settings, frame)  # after the application made its topics (with their retention)
        done = lambda: len(read_topic(settings, topic)) >= 2 or proc.poll() is not None  # noqa: E731
        wait_for(done, 180, "the enter and leave records", log, every_s=2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    messages = read_topic(settings, topic)
    assert [json.loads(m.value()) for m in messages] == expected
    assert [m.key().decode() for m in messages] == [PAIR, PAIR]
    assert [m.timestamp()[1] for m in messages] == [r["timestamp_ms"] for r in expected]
    output = log.read_text()
    assert "pairs_orchestrator: rejected 1 (non_positive_or_nan=1)" in output, output[-4000:]
    dead = [json.loads(m.value()) for m in read_topic(settings, settings.topics.dead_letters)]
    assert [(d["stage"], d["reason"]) for d in dead] == [("pairs_orchestrator", "non_positive_or_nan")]
