"""pairs-live on the real broker and Feast: pair_candidates start and stop the pair jobs, each ticker's candles are
re-keyed to its pairs and joined as of y's candle time, one row per y candle while the pair is a candidate and
none after it leaves, a stale x leg counted and not joined, and no value from the future enters a row (x's later
candles, already in the join's store when y's candle is joined, never appear; perturbed, they leave the earlier
rows identical)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from coinflow.pairs import pair_id
from coinflow.settings import Settings
from feature_pipeline.pairs.dataflow import VIEW, job_params
from feature_pipeline.transforms.pair_spread import merge_legs, new_job, pair_step
from feature_repo.names import PAIR_ENTITY, PAIR_SPREAD_FEATURES
from tests.support.feature_runs import env_for, offline_view, read_topic
from tests.support.pairs_synthetic import ar1, random_walk
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
T0 = 1_700_000_040_000
N_A, N_B = 60, 20  # minutes while every pair is a candidate, then after PAIR_1 left
E_STOPS = 5  # E/USDT's last phase-B candles never come: D's last ones are joined while E is at most 2 min old
STALE = E_STOPS - 2
CUTOFF = 45  # E/USDT (x of PAIR_3) is B/USDT until this minute, then perturbed
PAIR_1 = pair_id("A/USDT", "B/USDT")  # leaves after phase A
PAIR_2 = pair_id("C/USDT", "B/USDT")  # shares its x with PAIR_1: one candle of B goes to both
PAIR_3 = pair_id("D/USDT", "E/USDT")  # D = A, E = B up to CUTOFF
LEGS = {PAIR_1: ("A/USDT", "B/USDT"), PAIR_2: ("C/USDT", "B/USDT"), PAIR_3: ("D/USDT", "E/USDT")}


def closes() -> pd.DataFrame:
    """Closes per minute (index: close time in ms) of the five tickers."""
    rng = np.random.default_rng(11)
    n = N_A + N_B
    log_b = random_walk(rng, n, start=np.log(40_000))
    log_a = 0.8 * log_b + 1.0 + ar1(rng, n, 0.8)
    log_c = 1.2 * log_b - 2.0 + ar1(rng, n, 0.7)
    log_e = log_b + np.where(np.arange(n) > CUTOFF, 0.3, 0.0)
    frame = pd.DataFrame({"A/USDT": log_a, "B/USDT": log_b, "C/USDT": log_c, "D/USDT": log_a, "E/USDT": log_e})
    frame.index = T0 + MINUTE_MS * np.arange(n)
    return np.exp(frame).round(6)


def candle(ticker: str, ms: int, close: float) -> dict:
    return {"pair": ticker, "interval": "1m", "window_end_ms": int(ms), "open": close, "high": close, "low": close,
            "close": close, "volume": 1.0}  # fmt: skip


def candidate(pid: str, event: str, ms: int) -> dict:
    y, x = LEGS[pid]
    return {"pair_id": pid, "event": event, "timestamp_ms": ms, "y": y, "x": x, "hedge_ratio": 1.0,
            "half_life": 5.0, "hurst": 0.3, "p_adjusted": 0.01, "reasons": [] if event == "enter" else ["p_value"]}  # fmt: skip


class Topics:
    def __init__(self, settings: Settings) -> None:
        self.address = f"127.0.0.1:{settings.services.embedded_broker_port}"
        self.producer = Producer({"bootstrap.servers": self.address, "linger.ms": 5})
        self.settings = settings

    def produce(self, topic: str, key: str, value: dict, ms: int) -> None:
        self.producer.produce(topic, key=key.encode(), value=json.dumps(value).encode(), timestamp=int(ms))

    def candles(self, frame: pd.DataFrame, tickers: list[str]) -> int:
        topic = self.settings.universe.candles_topic
        for ms, row in frame.iterrows():
            for ticker in tickers:
                self.produce(topic, ticker, candle(ticker, int(ms), float(row[ticker])), int(ms))
        self.producer.flush(10)
        return len(frame) * len(tickers)

    def candidates(self, *records: dict) -> None:
        for record in records:
            self.produce(self.settings.pair_jobs.candidates_topic, record["pair_id"], record, record["timestamp_ms"])
        self.producer.flush(10)

    def exist(self) -> bool:
        names = AdminClient({"bootstrap.servers": self.address}).list_topics(timeout=5).topics
        jobs = self.settings.pair_jobs
        return {jobs.legs_x_topic, jobs.legs_y_topic, jobs.candidates_topic} <= set(names)

    def controls(self, topic: str, event: str) -> set[str]:
        values = [json.loads(m.value()) for m in read_topic(self.settings, topic)]
        return {v["pair_id"] for v in values if v.get("control") == event}

    def committed(self, topic: str) -> int:
        consumer = Consumer({"bootstrap.servers": self.address, "group.id": self.settings.pair_jobs.consumer_group})
        try:
            [partition] = consumer.committed([TopicPartition(topic, 0)], timeout=5)
        finally:
            consumer.close()
        return max(partition.offset, 0)


def rows_of(settings: Settings, pid: str) -> pd.DataFrame:
    rows = offline_view(settings, VIEW)
    return rows[rows[PAIR_ENTITY] == pid] if len(rows) else rows


def reference(settings: Settings, frame: pd.DataFrame, pid: str) -> list[dict | None]:
    """The pure step over the pair's candles, both legs at each minute."""
    y, x = LEGS[pid]
    job = new_job(candidate(pid, "enter", T0))
    rows: list[dict | None] = []
    for ms, row in frame.iterrows():
        legs = merge_legs(
            {"pair_id": pid, "role": "y", "window_end_ms": int(ms), "close": float(row[y])},
            {"pair_id": pid, "role": "x", "window_end_ms": int(ms), "close": float(row[x])},
        )
        out, _ = pair_step(job, legs, job_params(settings))
        job = json.loads(json.dumps(job))
        rows.append(out)
    return rows


def features(rows: pd.DataFrame) -> np.ndarray:
    return rows[list(PAIR_SPREAD_FEATURES)].to_numpy(float)


def test_pair_jobs_follow_the_candidates_and_no_future_value_enters_a_row(settings: Settings, tmp_path):
    tag = uuid.uuid4().hex[:8]
    settings = settings.override(
        universe_candles_topic=f"universe-candles-{tag}",
        pair_jobs_candidates_topic=f"pair-candidates-{tag}",
        pair_jobs_legs_y_topic=f"pair-legs-y-{tag}",
        pair_jobs_legs_x_topic=f"pair-legs-x-{tag}",
        pair_jobs_consumer_group=f"it-pairs-{tag}",
        pair_jobs_warmup_bars=30,
        pair_jobs_half_life_window=20,
        pair_jobs_join_grace_s=86_400,  # x runs a whole phase ahead of y here
    )
    jobs, frame = settings.pair_jobs, closes()
    phase_a, phase_b = frame.iloc[:N_A], frame.iloc[N_A:]
    leave_ms = int(phase_a.index[-1]) + 30_000
    topics = Topics(settings)
    log = tmp_path / "pairs-live.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feature_pipeline", "pairs-live"],
            env={**env_for(settings), "COLUMNS": "200", "COINFLOW_METRICS_PORT": "0"},
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(topics.exist, 90, "the pair jobs' topics", log)
        bad = {**candidate(PAIR_1, "enter", T0 - MINUTE_MS), "pair_id": "B-USDT__A-USDT"}
        topics.candidates(*(candidate(p, "enter", T0 - MINUTE_MS) for p in LEGS), bad)
        wait_for(lambda: topics.controls(jobs.legs_y_topic, "enter") == set(LEGS), 90, "y legs entered", log)
        wait_for(lambda: topics.controls(jobs.legs_x_topic, "enter") == set(LEGS), 30, "x legs entered", log)

        # Every x candle of the phase is in the join's store before any y candle arrives.
        x_records = len(LEGS) + topics.candles(phase_a, ["B/USDT", "E/USDT"]) + N_A  # B goes to two pairs
        wait_for(lambda: topics.committed(jobs.legs_x_topic) >= x_records, 90, "phase A's x candles joined", log)
        topics.candles(phase_a, ["A/USDT", "C/USDT", "D/USDT"])
        wait_for(lambda: all(len(rows_of(settings, p)) == N_A for p in LEGS), 90, "phase A's rows", log)

        topics.candidates(candidate(PAIR_1, "leave", leave_ms))
        wait_for(lambda: PAIR_1 in topics.controls(jobs.legs_x_topic, "leave"), 60, "PAIR_1 left", log)
        wait_for(lambda: PAIR_1 in topics.controls(jobs.legs_y_topic, "leave"), 30, "PAIR_1 left (y)", log)
        x_records += 1 + topics.candles(phase_b, ["B/USDT"]) + topics.candles(phase_b.iloc[:-E_STOPS], ["E/USDT"])
        wait_for(lambda: topics.committed(jobs.legs_x_topic) >= x_records, 90, "phase B's x candles joined", log)
        topics.produce(jobs.candidates_topic, "A/USDT", {"not": "a candle"}, leave_ms)
        topics.produce(settings.universe.candles_topic, "A/USDT", candle("A/USDT", leave_ms, 0.0), leave_ms)
        topics.candles(phase_b, ["A/USDT", "C/USDT", "D/USDT"])
        wait_for(
            lambda: (len(rows_of(settings, PAIR_2)), len(rows_of(settings, PAIR_3))) == (N_A + N_B, N_A + N_B - STALE),
            90,
            "phase B's rows",
            log,
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    output = log.read_text()
    assert "pair_spread_1m" in output and f"pair_jobs: rejected {STALE} (stale_leg={STALE})" in output, output[-4000:]
    assert "pair_candidates: rejected 2 (pair_id_mismatch=1, unknown_event=1)" in output, output[-4000:]
    assert "pair_legs: rejected 1 (non_positive_or_nan=1)" in output, output[-4000:]

    # One row per y candle while the pair is a candidate, none after it left.
    first = rows_of(settings, PAIR_1)
    assert list(first.index.astype("datetime64[ns, UTC]").asi8 // 1_000_000) == list(phase_a.index)
    assert len(rows_of(settings, PAIR_2)) == N_A + N_B

    # x's candle in a row is the one at y's close time, never a later one (all of them were in the store).
    np.testing.assert_array_equal(first["x_close"], phase_a["B/USDT"])
    assert (first["x_lag_s"] == 0).all()
    expected = pd.DataFrame([r for r in reference(settings, phase_a, PAIR_1) if r is not None])
    np.testing.assert_allclose(features(first), features(expected), rtol=1e-9, equal_nan=True)
    assert first["z"].iloc[: jobs.warmup_bars].isna().all() and first["z"].iloc[jobs.warmup_bars :].notna().all()

    # PAIR_3 is PAIR_1 with x perturbed after CUTOFF: its rows up to CUTOFF are identical, later ones are not.
    third = rows_of(settings, PAIR_3).iloc[:N_A]
    np.testing.assert_array_equal(features(third)[: CUTOFF + 1], features(first)[: CUTOFF + 1])
    assert not math.isclose(third["x_close"].iloc[CUTOFF + 1], first["x_close"].iloc[CUTOFF + 1])
