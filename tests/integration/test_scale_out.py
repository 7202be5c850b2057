"""Scale-out with a consumer group, on the embedded broker: three `worker` processes share the six partitions of
the trades topic (twelve pairs), one is killed mid-stream, and its partitions move to the others with their open
candles and indicators, recovered from the changelog topics; the stores then hold exactly what one worker alone
writes from the same trades.

The trades are real Kraken trades (one hour of BTC/USD) under twelve pair names, written by the test as an
ingest would write them, paced so that the kill falls in the middle of the stream.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer

from coinflow import services
from coinflow.exchange_files import read_trades_csv
from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from feature_repo.names import CREATED_TIMESTAMP, INDICATOR_FEATURES, OHLCV_FEATURES, indicators_view, ohlcv_view
from tests.integration.conftest import flush
from tests.support.feature_runs import PAIR, assert_candles_equal, env_for, expected_candles, offline_view, read_topic
from tests.support.paths import KRAKEN_TRADES_CSV
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 6
PAIRS = [f"S{k:02d}/USD" for k in range(12)]
ENDED = re.compile(r"All data of (\S+) \(run (\w+)\) is in the feature store")


def _messages(run_id: str, close_after_ms: int) -> list[tuple[int, str, bytes]]:
    """(partition, key, value) of every trade of every pair, in time order across pairs, then the end markers."""
    base = read_trades_csv(KRAKEN_TRADES_CSV, PAIRS[0], Rejects("test"))
    messages = []
    for trade in base:
        for k, pair in enumerate(PAIRS):
            record = {**trade, "pair": pair, "price": round(trade["price"] * (1 + k / 10), 8)}
            messages.append((k % PARTITIONS, pair, orjson.dumps(record)))
    end_ms = base[-1]["timestamp_ms"] + close_after_ms
    for k, pair in enumerate(PAIRS):
        marker = {"control": CONTROL_END, "pair": pair, "timestamp_ms": end_ms, "run_id": run_id}
        messages.append((k % PARTITIONS, pair, orjson.dumps(marker)))
    return messages


def _produce(settings: Settings, messages: list[tuple[int, str, bytes]], seconds: float, on_third=None) -> None:
    """Write the messages to the trades topic (pair k to partition k mod 6) over about `seconds`; `on_third` is
    called once a third of them is acknowledged."""
    producer = Producer(
        {"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}", "enable.idempotence": False}
    )
    chunk = 500
    pause = seconds / max(len(messages) / chunk, 1)
    for start in range(0, len(messages), chunk):
        for partition, key, value in messages[start : start + chunk]:
            producer.produce(settings.topics.trades, value, key.encode(), partition=partition)
        producer.flush(30)
        if on_third is not None and start + chunk >= len(messages) // 3:
            on_third()
            on_third = None
        time.sleep(pause)
    assert producer.flush(30) == 0


def _worker(settings: Settings, n: int, log: Path) -> subprocess.Popen:
    env = env_for(settings) | {"COLUMNS": "200"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "feature_pipeline", "worker", "--worker-id", str(n)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _ended(logs: list[Path], run_id: str) -> set[str]:
    return {m.group(1) for log in logs for m in ENDED.finditer(log.read_text()) if m.group(2) == run_id}


def _assigned(state_root: Path, n: int, topic: str) -> set[int]:
    """The partitions of `topic` worker `n` has held: each has a state store directory of its own."""
    return {int(p.name) for p in (state_root / f"worker-{n}").glob(f"*/*/{topic}/*")}


def _stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def _stores(settings: Settings) -> dict[str, pd.DataFrame]:
    """What the run left: both offline views (without their write times) and the online rows of every pair."""
    out = {}
    for view, names in ((ohlcv_view("1m"), OHLCV_FEATURES), (indicators_view("1m"), INDICATOR_FEATURES)):
        rows = offline_view(settings, view).reset_index().drop(columns=[CREATED_TIMESTAMP])
        out[view] = rows.sort_values(["pair", "event_timestamp"]).reset_index(drop=True)
        online = feature_store(settings).get_online_features(
            features=[f"{view}:{name}" for name in names], entity_rows=[{"pair": p} for p in PAIRS]
        )
        out[f"{view} online"] = pd.DataFrame(online.to_dict())
    return out


def _phase(settings: Settings, tag: str) -> Settings:
    """Settings of one run: topics and consumer group of its own, an empty feature store."""
    offline = settings.feast.repo_path / "data" / "offline"
    for path in sorted(offline.glob("**/*.parquet")):
        path.unlink()
    flush(settings.services.redis_url)
    return settings.override(
        trades_topic=f"trades-{tag}",
        candles_topic=f"candles-{tag}",
        features_topic=f"features-{tag}",
        dead_letter_topic=f"dead-letters-{tag}",
        consumer_group=f"workers-{tag}",
        topic_partitions=PARTITIONS,
    )


def _run(settings: Settings, tmp_path: Path, workers: int, kill: bool) -> tuple[dict, list[Path], list[set[int]]]:
    """Start the workers, wait until each holds partitions, write the trades (killing worker 1 a third of the way
    in), wait for every end marker; the stores, the logs, and the trades partitions each worker held before the
    trades and at the end."""
    run_id = uuid.uuid4().hex
    state_root = settings.services.state_dir / services.ensure_broker(settings).instance
    messages = _messages(run_id, settings.stream.candle_close_after_ms)
    logs = [tmp_path / f"{settings.stream.consumer_group}-{n}.log" for n in range(workers)]
    procs = [_worker(settings, n, log) for n, log in enumerate(logs)]
    try:
        wait_for(
            lambda: all(_assigned(state_root, n, settings.topics.trades) for n in range(workers)),
            120,
            "every worker to hold partitions",
            logs[0],
        )
        time.sleep(3)  # a rebalance started by the last worker to join has settled
        held = [_assigned(state_root, n, settings.topics.trades) for n in range(workers)]
        victim = procs[1] if kill else None
        _produce(settings, messages, 24.0 if kill else 0.0, on_third=victim.kill if victim else None)
        alive = [proc for proc in procs if proc is not victim]

        def done() -> bool:
            for proc, log in zip(procs, logs, strict=True):
                if proc in alive and proc.poll() is not None:
                    pytest.fail(f"a worker exited ({proc.returncode}); its output ends:\n{log.read_text()[-4000:]}")
            return _ended(logs, run_id) == set(PAIRS)

        wait_for(done, 240, "every pair's end marker in the stores", logs[-1])
        time.sleep(1)  # the last sink write's window rows
        moved = [_assigned(state_root, n, settings.topics.trades) for n in range(workers)]
        return _stores(settings), logs, [*held, *moved]
    finally:
        _stop(procs)


def test_three_workers_share_the_partitions_and_a_killed_ones_state_moves_to_the_others(settings, tmp_path):
    one = _phase(settings, f"one-{uuid.uuid4().hex[:6]}")
    expected, _, _ = _run(one, tmp_path, workers=1, kill=False)
    assert len(expected[ohlcv_view("1m")]) == 12 * 60  # an hour of candles per pair

    three = _phase(settings, f"three-{uuid.uuid4().hex[:6]}")
    actual, logs, held = _run(three, tmp_path, workers=3, kill=True)

    before, after = held[:3], held[3:]
    assert all(len(partitions) == 2 for partitions in before), before  # six partitions shared out, two each
    assert before[1] <= after[0] | after[2] and after[0] | after[2] == set(range(PARTITIONS)), after
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(actual[name], frame, check_exact=False, rtol=1e-12, obj=name)
    recovered = "".join(logs[n].read_text() for n in (0, 2))
    assert "Recovery successful for" in recovered  # the moved partitions' state came from their changelogs


def test_an_ingest_only_replay_writes_only_the_trades_and_a_worker_turns_them_into_the_candles(settings, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "feature_pipeline", "replay-trades", str(KRAKEN_TRADES_CSV), "--pair", PAIR]
        + ["--ingest-only"],
        env=env_for(settings) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ingest finished" in result.stdout
    trades = pd.read_csv(KRAKEN_TRADES_CSV)
    assert len(read_topic(settings, settings.topics.trades)) == len(trades) + 1  # and the end marker
    assert not read_topic(settings, settings.topics.candles)  # nothing was processed
    log = tmp_path / "worker.log"
    worker = _worker(settings, 0, log)
    try:
        wait_for(lambda: PAIR in {m.group(1) for m in ENDED.finditer(log.read_text())}, 120, "the end marker", log)
    finally:
        _stop([worker])
    assert_candles_equal(offline_view(settings, ohlcv_view("1m")), expected_candles(trades))
