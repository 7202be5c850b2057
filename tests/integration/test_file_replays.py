"""Files through the real broker, Redis and Feast: trade identities across files and live trades, poison rows."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Producer

from coinflow.services import ensure_broker
from coinflow.settings import Settings
from coinflow.streaming import new_application, pipeline_topics
from feature_pipeline.candles.runner import run_pipeline
from feature_pipeline.sources.file_sources import CandlesFileSource
from tests.support.feature_runs import (
    PAIR,
    assert_candles_equal,
    expected_candles,
    offline_view,
    read_topic,
    replay,
)

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
YEAR_5138_S = 99_999_999_999
TRADES = "btcusd_trades_2019-07-01T00.csv"
CANDLES = "ohlcvt_XBTUSDC_1m_2023Q1.csv"


def shifted(source: Path, target: Path, shift_ms: int) -> Path:
    """The trades of `source` moved `shift_ms` later: the next hour's trades of the same pair."""
    frame = pd.read_csv(source)
    frame["time_ms"] += shift_ms
    frame.to_csv(target, index=False)
    return target


def producer_for(settings: Settings) -> Producer:
    # The topics must exist with the project's config before anything is produced.
    pipeline_topics(new_application(settings, ensure_broker(settings)), settings)
    return Producer({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}"})


def dead_letter_reasons(settings: Settings) -> list[str]:
    return sorted(json.loads(m.value())["reason"] for m in read_topic(settings, settings.topics.dead_letters))


def test_a_later_file_of_the_pair_is_written_in_full_and_a_replay_is_not_written_twice(settings, data_dir, tmp_path):
    first = data_dir / "kraken" / TRADES
    second = shifted(first, tmp_path / "next_hour.csv", HOUR_MS)
    replay(settings, first)
    summary = replay(settings, second)
    assert not summary.rejects.counts
    assert summary.rows_written["ohlcv_1m"] == 60
    expected = pd.concat([expected_candles(pd.read_csv(first)), expected_candles(pd.read_csv(second))])
    assert_candles_equal(offline_view(settings, "ohlcv_1m"), expected)

    again = replay(settings, second)
    assert dict(again.rejects.counts) == {"duplicate": len(pd.read_csv(second))}
    assert_candles_equal(offline_view(settings, "ohlcv_1m"), expected)


def test_a_file_after_live_trades_is_not_taken_for_duplicates(settings, data_dir, tmp_path):
    """Live trades carry the exchange's ids; a file without ids replayed after them keeps all its trades. The
    live stream's first trade, stamped 1970-01-01 (a zero clock), is rejected rather than stored as a candle."""
    live = pd.read_csv(data_dir / "kraken" / TRADES)
    producer = producer_for(settings)

    def send(record: dict) -> None:
        producer.produce(
            settings.topics.trades,
            key=PAIR.encode(),
            value=json.dumps(record).encode(),
            timestamp=max(record["timestamp_ms"], 1),
        )

    send(
        {
            "exchange": "kraken",
            "pair": PAIR,
            "trade_id": 89_999_999,
            "price": 10_000.0,
            "qty": 1.0,
            "side": "buy",
            "timestamp_ms": 1_000,
        }
    )
    for i, r in enumerate(live.itertuples()):
        send(
            {
                "exchange": "kraken",
                "pair": PAIR,
                "trade_id": 90_000_000 + i,
                "price": r.price,
                "qty": r.qty,
                "side": r.side,
                "timestamp_ms": int(r.time_ms),
            }
        )
    run_id = uuid.uuid4().hex
    end_ts = int(live.time_ms.iloc[-1]) + settings.stream.candle_close_after_ms
    send({"control": "end", "pair": PAIR, "timestamp_ms": end_ts, "run_id": run_id})
    producer.flush()
    summary = run_pipeline(settings, None, finite_pairs={PAIR}, run_id=run_id)
    assert dict(summary.rejects.counts) == {"timestamp_before_2009": 1}

    later = shifted(data_dir / "kraken" / TRADES, tmp_path / "next_hour.csv", HOUR_MS)
    after = replay(settings, later)
    assert not after.rejects.counts and after.rows_written["ohlcv_1m"] == 60
    expected = pd.concat([expected_candles(live), expected_candles(pd.read_csv(later))])
    assert_candles_equal(offline_view(settings, "ohlcv_1m"), expected)


def backfill(settings: Settings, path: Path):
    run_id = uuid.uuid4().hex
    source = CandlesFileSource(path, PAIR, run_id, settings.topics.dead_letters, "1m", 60)
    return run_pipeline(settings, source, into_candles=True, finite_pairs={PAIR}, run_id=run_id)


def candle_lines(data_dir: Path, start: int, count: int) -> list[str]:
    return (data_dir / "kraken" / CANDLES).read_text().splitlines()[start : start + count]


def window_ends(lines: list[str]) -> list[pd.Timestamp]:
    return [pd.Timestamp((int(line.split(",")[0]) + 60) * 1000, unit="ms", tz="UTC") for line in lines]


def test_a_poison_row_in_a_candle_file_is_rejected_once_and_the_good_rows_written(settings, data_dir, tmp_path):
    good = candle_lines(data_dir, 0, 200)
    poison = [
        f"{YEAR_5138_S},16500,16510,16490,16500,1,3",
        "1e30,16500,16510,16490,16500,1,3",
        "inf,16500,16510,16490,16500,1,3",
    ]
    path = tmp_path / "candles.csv"
    path.write_text("\n".join([*good[:100], *poison, *good[100:]]) + "\n")
    summary = backfill(settings, path)
    assert summary.rows_written["ohlcv_1m"] == 200
    assert list(offline_view(settings, "ohlcv_1m").index) == window_ends(good)
    assert dead_letter_reasons(settings) == ["bad_timestamp", "future_timestamp", "future_timestamp"]


def test_a_poison_candle_on_the_topic_is_rejected_once_and_later_backfills_run_past_it(settings, data_dir, tmp_path):
    """A candle dated in the year 5138 among 200 good ones on the candles topic (from any producer) is dead-lettered
    once; the 200 are written, the run ends, and the next backfill in the same consumer group runs past it."""
    good = candle_lines(data_dir, 0, 200)
    producer = producer_for(settings)
    candles = [
        {
            "pair": PAIR,
            "interval": "1m",
            "window_start_ms": int(line.split(",")[0]) * 1000,
            "window_end_ms": (int(line.split(",")[0]) + 60) * 1000,
            "open": float(o),
            "high": float(h),
            "low": float(lo),
            "close": float(c),
            "volume": float(v),
            "vwap": (float(h) + float(lo) + float(c)) / 3,
            "trade_count": int(n),
        }
        for line in good
        for _, o, h, lo, c, v, n in [line.split(",")]
    ]
    poison = {**candles[100], "window_start_ms": YEAR_5138_S * 1000, "window_end_ms": (YEAR_5138_S + 60) * 1000}
    for record in [*candles[:100], poison, *candles[100:]]:
        producer.produce(
            settings.topics.candles,
            key=PAIR.encode(),
            value=json.dumps(record).encode(),
            timestamp=candles[0]["window_end_ms"],
        )
    run_id = uuid.uuid4().hex
    producer.produce(
        settings.topics.candles,
        key=PAIR.encode(),
        timestamp=candles[-1]["window_end_ms"],
        value=json.dumps({"control": "end", "pair": PAIR, "timestamp_ms": 0, "run_id": run_id}).encode(),
    )
    producer.flush()

    summary = run_pipeline(settings, None, into_candles=True, finite_pairs={PAIR}, run_id=run_id)
    assert summary.rows_written["ohlcv_1m"] == 200
    assert dict(summary.rejects.counts) == {"future_timestamp": 1}
    assert dead_letter_reasons(settings) == ["future_timestamp"]

    later = candle_lines(data_dir, 200, 50)
    path = tmp_path / "later.csv"
    path.write_text("\n".join(later) + "\n")
    assert backfill(settings, path).rows_written["ohlcv_1m"] == 50
    assert list(offline_view(settings, "ohlcv_1m").index) == window_ends(good + later)
    assert dead_letter_reasons(settings) == ["future_timestamp"]
