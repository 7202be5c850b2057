"""The broker goes away: `live` keeps what it receives and carries on once the broker is back; a source keeps
its records in a bounded buffer meanwhile; a finite command fails with one line naming the broker.

Each test runs on an embedded broker of its own (the port after the session's), which it stops and starts.
That broker keeps everything in memory: when it is started again, its topics and offsets are gone, and only
what reaches it afterwards exists. So the live test checks what matters then: every trade the exchange sent
while the broker was down ends up in the feature store, in the candle it belongs to, with the trades sent
before the outage (held by the running pipeline) and after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import psutil
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY
from quixstreams.internal_producer import InternalProducer
from quixstreams.models.topics.admin import TopicAdmin

from coinflow import services
from coinflow.settings import Settings
from coinflow.streaming import TopicKeeper, new_application, pipeline_topics, source_producer_config, topic_config
from feature_pipeline.sources.base import BUFFER_STAGE, RecordSource
from feature_pipeline.sources.kraken_replay_server import KrakenReplayServer
from tests.support.feature_runs import PAIR, assert_candles_equal, env_for, expected_candles, offline_view, read_topic
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
SPEED = 4  # event time runs 4x the wall clock: one minute of trades is published in 15 s
# Phases in event-time seconds after the window start: before, during and after the outage, then one trade
# of the next window, which closes the first (the live clock would otherwise close it up to a minute later).
BEFORE, DURING, AFTER, CLOSING = (0.0, 8.0), (32.0, 48.0), (56.0, 59.9), 61.0


@pytest.fixture
def own_broker(settings: Settings, tmp_path) -> Settings:
    """The test's settings on an embedded broker of its own, stopped afterwards."""
    mine = settings.override(run_dir=tmp_path / "run", embedded_broker_port=settings.services.embedded_broker_port + 1)
    services.ensure_broker(mine)
    yield mine
    services.stop_services(mine, names=("broker",))


def _broker_process(settings: Settings) -> psutil.Process:
    return psutil.Process(json.loads((settings.services.run_dir / "broker.json").read_text())["pid"])


def _kill_broker(settings: Settings) -> None:
    """The broker dies (SIGKILL), as in a crash or a lost machine."""
    broker = _broker_process(settings)
    broker.kill()
    broker.wait(timeout=10)


def _restart_with_topics(settings: Settings, pipeline: subprocess.Popen) -> None:
    """Start the broker again with the pipeline's topics, as a durable broker comes back.

    Tansu 0.6 in memory comes back without topics, yet takes records for a
    partition a producer still knows; a topic then created over them is broken
    (its first batch "already exists", every later produce fails). The running
    pipeline creates lost topics again (`coinflow.streaming.TopicKeeper`), but
    a producer may reach the broker first; so the pipeline is held (SIGSTOP)
    for the moment it takes to start the broker and create its topics.
    """
    config = topic_config(settings)
    names = (settings.topics.trades, settings.topics.candles, settings.topics.features, settings.topics.dead_letters)
    os.killpg(pipeline.pid, signal.SIGSTOP)
    try:
        admin = AdminClient({"bootstrap.servers": services.ensure_broker(settings).address})
        topics = [
            NewTopic(name, config.num_partitions, config.replication_factor, config=config.extra_config)
            for name in names
        ]
        for future in admin.create_topics(topics).values():
            future.result(timeout=10)
    finally:
        os.killpg(pipeline.pid, signal.SIGCONT)


def _phase(rows: pd.DataFrame, start_ms: int, span_s: tuple[float, float], first_id: int) -> list[dict]:
    offsets = pd.Series(range(len(rows))) * (span_s[1] - span_s[0]) * 1000 / max(len(rows) - 1, 1)
    return [
        {
            "exchange": "kraken",
            "pair": PAIR,
            "trade_id": first_id + i,
            "price": float(r.price),
            "qty": float(r.qty),
            "side": r.side,
            "timestamp_ms": start_ms + int(span_s[0] * 1000 + offsets[i]),
        }
        for i, r in enumerate(rows.itertuples())
    ]


def test_live_keeps_the_trades_received_while_the_broker_is_down(own_broker, data_dir, tmp_path):
    rows = pd.read_csv(data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv")
    # The window starts after `live` has surely subscribed (trades ahead of the clock are fine, behind it late).
    window_ms = math.ceil((time.time() * 1000 + 45_000) / MINUTE_MS) * MINUTE_MS
    before = _phase(rows[0:60], window_ms, BEFORE, 1)
    during = _phase(rows[60:140], window_ms, DURING, 61)
    after = _phase(rows[140:170], window_ms, AFTER, 141)
    closing = _phase(rows[170:171], window_ms, (CLOSING, CLOSING), 171)
    trades = before + during + after + closing

    server = KrakenReplayServer(trades, speed=SPEED)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    env = env_for(own_broker) | {
        "COINFLOW_KRAKEN_WS_URL": url,
        "COINFLOW_RECONNECT_INITIAL_S": "0.1",
        "COINFLOW_RECONNECT_MAX_S": "1",
        "COINFLOW_METRICS_PORT": "0",
        "COINFLOW_MAX_FUTURE_MS": "300000",
    }
    log = tmp_path / "live.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feature_pipeline", "live", "--pairs", PAIR],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: server.published(PAIR) == len(before), 90, "the trades before the outage", log)
        time.sleep(1.0)  # the pipeline takes them in (milliseconds); what the broker still held would die with it
        _kill_broker(own_broker)
        assert server.published(PAIR) == len(before), "the outage began too late: trades were sent before it"

        wait_for(
            lambda: server.published(PAIR) == len(before) + len(during), 30, "the trades sent during the outage", log
        )
        _restart_with_topics(own_broker, proc)

        expected = expected_candles(
            pd.DataFrame(
                {
                    "time_ms": [t["timestamp_ms"] for t in trades[:-1]],
                    "price": [t["price"] for t in trades[:-1]],
                    "qty": [t["qty"] for t in trades[:-1]],
                }
            )
        )
        assert len(expected) == 1
        wait_for(lambda: len(offline_view(own_broker, "ohlcv_1m")) >= 1, 90, "the window's candle in the store", log)
        assert proc.poll() is None, "live ended instead of riding out the outage"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    assert_candles_equal(offline_view(own_broker, "ohlcv_1m"), expected)


def test_a_finite_run_whose_broker_does_not_come_back_fails_with_one_line(own_broker, data_dir, tmp_path):
    path = data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv"
    env = env_for(own_broker) | {"COINFLOW_BROKER_WAIT_S": "3"}
    cmd = [sys.executable, "-m", "feature_pipeline", "replay-trades", str(path), "--pair", PAIR, "--speed", "50"]
    log = tmp_path / "replay.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: len(offline_view(own_broker, "ohlcv_1m")) >= 3 or proc.poll() is not None,
            90,
            "the replay to store its first candles",
        )
        assert proc.poll() is None, "the replay ended before its broker could be stopped"
        _kill_broker(own_broker)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()

    address = f"127.0.0.1:{own_broker.services.embedded_broker_port}"
    assert proc.returncode == 1
    lines = [line for line in output.splitlines() if f"The broker at {address} went away" in line]
    assert len(lines) == 1, output[-3000:]
    assert "COINFLOW_BROKER_WAIT_S" in lines[0]
    assert "Traceback" not in output, output[-3000:]


def test_a_broker_down_at_start_is_waited_for_with_backoff_and_used_once_it_answers(own_broker, caplog):
    """KAFKA_BROKER_ADDRESS names a broker that is not up yet; it starts 3 s later (a Tansu of the test's own)."""
    later = own_broker.override(
        run_dir=own_broker.services.run_dir.parent / "later",
        embedded_broker_port=own_broker.services.embedded_broker_port + 1,
    )
    address = f"127.0.0.1:{later.services.embedded_broker_port}"
    starter = threading.Timer(3.0, services.ensure_broker, args=(later,))
    starter.start()
    try:
        with caplog.at_level(logging.WARNING, logger="coinflow.services"):
            broker = services.ensure_broker(own_broker.override(kafka_broker_address=address, broker_wait_s=60))
    finally:
        starter.join()
        services.stop_services(later)
    assert broker.address == address and not broker.embedded
    retries = [r.getMessage() for r in caplog.records if "does not answer yet" in r.getMessage()]
    assert retries, "the broker was not asked again"
    delays = [float(m.split("again in ")[1].split(" s")[0]) for m in retries]
    assert delays == sorted(delays) and delays[0] == 0.5  # backing off


def test_a_broker_that_never_comes_up_is_one_line_naming_it_and_the_wait(own_broker, data_dir):
    address = f"127.0.0.1:{own_broker.services.embedded_broker_port + 2}"  # nothing listens there
    env = env_for(own_broker) | {"KAFKA_BROKER_ADDRESS": address, "COINFLOW_BROKER_WAIT_S": "3"}
    path = data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv"
    cmd = [sys.executable, "-m", "feature_pipeline", "replay-trades", str(path), "--pair", PAIR]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if f"KAFKA_BROKER_ADDRESS={address} did not answer" in line]
    assert len(lines) == 1 and "within 3 s (COINFLOW_BROKER_WAIT_S)" in lines[0], output[-3000:]
    assert "asking again in" in output  # it was retried before giving up


class _Probe(RecordSource):
    """A source whose records the test produces itself, in this process."""

    def run(self) -> None:
        """Nothing: the test calls `produce_record`."""


def test_a_source_buffers_while_the_broker_does_not_answer_drops_the_overflow_and_delivers_the_rest_in_order(
    own_broker, caplog
):
    broker = services.ensure_broker(own_broker)
    # Below the setting's floor (1,000) on purpose, so the overflow is quick to reach: an unvalidated copy.
    small = own_broker.model_copy(
        update={"stream": own_broker.stream.model_copy(update={"source_buffer_messages": 50})}
    )
    app = new_application(small, broker)
    topics = pipeline_topics(app, small)
    producer = InternalProducer(broker.address, extra_config=source_producer_config(small, broker, wait_s=None))
    source = _Probe("probe", small.topics.dead_letters)
    source.configure(topics.trades, producer)
    source.produce_record(PAIR, {"n": 0}, 1_000)
    source.flush(10)

    labels = {"stage": BUFFER_STAGE, "reason": "broker_unreachable"}
    dropped_before = REGISTRY.get_sample_value("coinflow_rejected_total", labels) or 0.0
    frozen = _broker_process(own_broker)
    frozen.suspend()  # the broker stops answering
    try:
        with caplog.at_level(logging.ERROR, logger="feature_pipeline.sources.base"):
            for n in range(1, 81):
                source.produce_record(PAIR, {"n": n}, 1_000 + n)
            assert REGISTRY.get_sample_value("coinflow_rejected_total", labels) - dropped_before == 30
            full = [r.getMessage() for r in caplog.records if "buffer of 50 records is full" in r.getMessage()]
            assert len(full) == 1
            frozen.resume()
            source.flush(30)
    finally:
        frozen.resume()
    drained = [
        r.getMessage() for r in caplog.records if "took the buffered records; 30 records were dropped" in r.getMessage()
    ]
    assert len(drained) == 1
    delivered = [json.loads(m.value())["n"] for m in read_topic(own_broker, small.topics.trades)]
    assert delivered == list(range(51))  # the one before the outage, then the buffer, in order


def test_topics_a_restarted_memory_broker_lost_are_created_again_with_the_project_config(own_broker):
    app = new_application(own_broker, services.ensure_broker(own_broker))
    topics = pipeline_topics(app, own_broker)
    names = {topics.trades.name, topics.candles.name, topics.features.name, topics.dead_letters.name}
    _kill_broker(own_broker)
    broker = services.ensure_broker(own_broker)
    admin = TopicAdmin(broker.address)
    assert not names & set(admin.list_topics(timeout=5))
    with TopicKeeper(app, interval_s=0.2):
        wait_for(lambda: names <= set(admin.list_topics(timeout=5)), 30, "the topics to be created again")
    assert {
        name: len(meta.partitions) for name, meta in admin.list_topics(timeout=5).items() if name in names
    } == dict.fromkeys(names, own_broker.topics.partitions)
