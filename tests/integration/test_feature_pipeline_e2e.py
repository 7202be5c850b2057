"""End to end through the real broker, Redis and Feast: replays, restarts, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Producer

from coinflow import parquet_writer
from coinflow.feature_store import feature_store
from coinflow.services import ensure_broker
from coinflow.settings import Settings
from coinflow.streaming import new_application, pipeline_topics
from feature_pipeline.candles.runner import run_pipeline
from feature_pipeline.sources.file_sources import CandlesFileSource
from feature_pipeline.transforms.indicators import compute_indicators
from feature_repo.names import CANDLE_FEATURES, INDICATOR_FEATURES, OHLCV_FEATURES, window_feature, window_view
from tests.support.feature_runs import (
    MINUTE_MS,
    PAIR,
    assert_candles_equal,
    env_for,
    expected_candles,
    offline_view,
    read_topic,
    replay,
)

pytestmark = pytest.mark.integration


def online_row(settings: Settings, interval: str = "1m") -> dict:
    refs = [f"ohlcv_{interval}:{f}" for f in OHLCV_FEATURES] + [
        f"indicators_{interval}:{f}" for f in INDICATOR_FEATURES
    ]
    result = feature_store(settings).get_online_features(features=refs, entity_rows=[{"pair": PAIR}]).to_dict()
    return {k: v[0] for k, v in result.items()}


def test_replay_real_trades_fills_online_and_offline_stores(settings, data_dir):
    path = data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv"
    summary = replay(settings, path)
    expected = expected_candles(pd.read_csv(path))

    candles = offline_view(settings, "ohlcv_1m")
    assert_candles_equal(candles, expected)
    assert summary.rows_written["ohlcv_1m"] == len(expected) == 60

    indicators = offline_view(settings, "indicators_1m")
    batch = compute_indicators(expected.reset_index(drop=True))
    for name in INDICATOR_FEATURES:
        np.testing.assert_allclose(
            indicators[name].to_numpy(float), batch[name].to_numpy(float), rtol=1e-9, equal_nan=True, err_msg=name
        )

    online = online_row(settings)
    last = {**candles.iloc[-1].to_dict(), **indicators.iloc[-1].to_dict()}
    for name in OHLCV_FEATURES + INDICATOR_FEATURES:
        assert online[name] == pytest.approx(last[name], rel=1e-12), name

    # The window of sequence models: the last COINFLOW_ONLINE_WINDOW_LENGTH offline rows, oldest first, in one
    # online row (NaN where an indicator was still warming up), and nothing of it offline.
    window = (
        feature_store(settings)
        .get_online_features(
            features=[f"{window_view('1m')}:{window_feature(n)}" for n in CANDLE_FEATURES],
            entity_rows=[{"pair": PAIR}],
        )
        .to_dict()
    )
    tail = pd.concat([candles, indicators[list(INDICATOR_FEATURES)]], axis=1).tail(settings.stream.online_window_length)
    for name in CANDLE_FEATURES:
        np.testing.assert_allclose(
            window[window_feature(name)][0], tail[name].to_numpy(float), rtol=1e-12, equal_nan=True, err_msg=name
        )
    windows_source = feature_store(settings).get_feature_view(window_view("1m")).batch_source.path
    assert not parquet_writer.dataset_root(windows_source).exists()

    # Replaying the same file leaves the same rows, not twice as many.
    again = replay(settings, path)
    assert again.rejects.counts["duplicate"] == len(pd.read_csv(path))
    assert_candles_equal(offline_view(settings, "ohlcv_1m"), expected)


def test_historical_features_are_point_in_time(settings, data_dir):
    path = data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv"
    replay(settings, path)
    expected = expected_candles(pd.read_csv(path))
    k = 30
    known_at = expected.index[k]
    entities = pd.DataFrame(
        {"pair": [PAIR, PAIR], "event_timestamp": [known_at, known_at - pd.Timedelta(milliseconds=1)]}
    )
    frame = (
        feature_store(settings)
        .get_historical_features(entity_df=entities, features=["ohlcv_1m:close", "ohlcv_1m:volume"])
        .to_df()
        .sort_values("event_timestamp")
    )
    # One millisecond before a window ends, only the previous candle is known.
    assert frame["close"].tolist() == pytest.approx([expected["close"].iloc[k - 1], expected["close"].iloc[k]])


def test_killed_mid_stream_then_restarted_loses_and_duplicates_nothing(settings, data_dir):
    path = data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv"
    expected = expected_candles(pd.read_csv(path))
    cmd = [sys.executable, "-m", "feature_pipeline", "replay-trades", str(path), "--pair", PAIR, "--speed", "300"]
    proc = subprocess.Popen(
        cmd, env=env_for(settings), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            written = offline_view(settings, "ohlcv_1m")
            if len(written) >= 15:
                break
            assert proc.poll() is None, "the replay ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the replay wrote nothing in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(offline_view(settings, "ohlcv_1m")) < len(expected)

    replay(settings, path)
    assert_candles_equal(offline_view(settings, "ohlcv_1m"), expected)


def test_bad_input_is_counted_dead_lettered_and_skipped(settings, data_dir):
    trades = pd.read_csv(data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv").head(400)
    good = [
        {
            "exchange": "kraken",
            "pair": PAIR,
            "trade_id": i + 1,
            "price": r.price,
            "qty": r.qty,
            "side": r.side,
            "timestamp_ms": int(r.time_ms),
        }
        for i, r in enumerate(trades.itertuples())
    ]
    now_ms = int(time.time() * 1000)
    bad = {
        "malformed_json": b'{"exchange": "kraken", "pair": ',
        "not_an_object": b"[1, 2, 3]",
        "non_positive_or_nan_price": json.dumps({**good[10], "trade_id": 10_001, "price": -5.0}).encode(),
        "non_positive_or_nan_qty": json.dumps({**good[10], "trade_id": 10_002, "qty": 0.0}).encode(),
        "bad_price": json.dumps({**good[10], "trade_id": 10_003, "price": "abc"}).encode(),
        "future_timestamp": json.dumps({**good[10], "trade_id": 10_004, "timestamp_ms": now_ms + 3_600_000}).encode(),
        "missing_side": json.dumps({k: v for k, v in good[10].items() if k != "side"}).encode(),
    }
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}"})
    # The topics must exist with the project's config before anything is produced.
    pipeline_topics(new_application(settings, ensure_broker(settings)), settings)

    def send(value: bytes, ts: int) -> None:
        producer.produce(settings.topics.trades, key=PAIR.encode(), value=value, timestamp=ts)

    for i, trade in enumerate(good):
        send(json.dumps(trade).encode(), trade["timestamp_ms"])
        if i == 200:
            for raw in bad.values():
                send(raw, trade["timestamp_ms"])
            send(json.dumps(good[150]).encode(), trade["timestamp_ms"])  # a duplicate
    run_id = uuid.uuid4().hex
    end_ts = good[-1]["timestamp_ms"] + MINUTE_MS + settings.stream.window_grace_ms
    send(json.dumps({"control": "end", "pair": PAIR, "timestamp_ms": end_ts, "run_id": run_id}).encode(), end_ts)
    producer.flush()

    summary = run_pipeline(settings, None, finite_pairs={PAIR}, run_id=run_id)

    expected_reasons = {**{reason: 1 for reason in bad}, "duplicate": 1}
    assert dict(summary.rejects.counts) == expected_reasons
    dead = [json.loads(m.value()) for m in read_topic(settings, settings.topics.dead_letters)]
    assert sorted(d["reason"] for d in dead) == sorted(expected_reasons)
    assert {d["raw"] for d in dead if d["reason"] == "malformed_json"} == {bad["malformed_json"].decode()}
    assert_candles_equal(offline_view(settings, "ohlcv_1m"), expected_candles(trades))


def test_backfill_ohlcv_then_indicators_match_batch(settings, data_dir, tmp_path):
    source_file = data_dir / "kraken" / "ohlcvt_XBTUSD_5m_2023Q1.csv"
    subset = tmp_path / "subset.csv"
    subset.write_text("".join(source_file.read_text().splitlines(keepends=True)[:1500]))
    run_id = uuid.uuid4().hex
    source = CandlesFileSource(subset, PAIR, run_id, settings.topics.dead_letters, "5m", 300)
    run_pipeline(settings, source, into_candles=True, finite_pairs={PAIR}, run_id=run_id)

    raw = pd.read_csv(subset, header=None, names=["unix", "open", "high", "low", "close", "volume", "trades"])
    candles = offline_view(settings, "ohlcv_5m")
    assert list(candles.index) == list(pd.to_datetime((raw.unix + 300) * 1000, unit="ms", utc=True))
    indicators = offline_view(settings, "indicators_5m")
    batch = compute_indicators(raw[["open", "high", "low", "close", "volume"]])
    for name in INDICATOR_FEATURES:
        np.testing.assert_allclose(
            indicators[name].to_numpy(float), batch[name].to_numpy(float), rtol=1e-9, equal_nan=True, err_msg=name
        )
    online = online_row(settings, "5m")
    assert online["close"] == raw["close"].iloc[-1]
    assert online["rsi_14"] == pytest.approx(batch["rsi_14"].iloc[-1], rel=1e-12)
