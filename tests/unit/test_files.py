"""File readers: real files parse fully; bad rows are counted and skipped, never fatal."""

import pytest

from coinflow.quality import Rejects
from feature_pipeline.sources.files import iter_ohlcvt_csv, read_trades_csv


def test_real_trades_file_parses_with_row_numbers_as_ids(data_dir):
    rejects = Rejects("test")
    trades = read_trades_csv(data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv", "BTC/USD", rejects)
    assert len(trades) == 2672 and not rejects.counts
    assert [t["trade_id"] for t in trades[:3]] == [1, 2, 3]
    assert trades[0] == {"exchange": "kraken", "pair": "BTC/USD", "trade_id": 1, "price": 10749.4, "qty": 0.004,
                         "side": "sell", "timestamp_ms": 1561939203172}


def test_bad_trade_rows_are_counted_by_reason(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("time_ms,timestamp,price,qty,side\n1,x,10,1,buy\n2,x,-1,1,buy\n3,x,nan,1,sell\n4,x,10,1,hold\nabc,x,1,1,buy\n5,x\n6,x,11,2,s\n")
    rejects = Rejects("test")
    trades = read_trades_csv(path, "BTC/USD", rejects)
    assert [t["timestamp_ms"] for t in trades] == [1, 6]
    assert trades[1]["side"] == "sell"
    assert dict(rejects.counts) == {"non_positive_or_nan": 2, "bad_side": 1, "bad_timestamp": 1, "malformed_row": 1}


def test_trades_file_with_the_wrong_header_is_a_clear_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="expected a header time_ms,timestamp,price,qty,side"):
        read_trades_csv(path, "BTC/USD", Rejects("test"))


def test_real_ohlcvt_file_parses_and_candles_end_an_interval_after_they_start(data_dir):
    rejects = Rejects("test")
    candles = list(iter_ohlcvt_csv(data_dir / "kraken" / "ohlcvt_XBTUSD_5m_2023Q1.csv", "BTC/USD", "5m", 300, rejects))
    assert len(candles) == 25901 and not rejects.counts
    first = candles[0]
    assert first["window_end_ms"] - first["window_start_ms"] == 300_000
    assert first["low"] <= min(first["open"], first["close"]) <= max(first["open"], first["close"]) <= first["high"]


def test_bad_ohlcvt_rows_are_counted(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("60,1,2,0.5,1.5,3,4\n120,1,2,0.5\n180,1,0.9,0.5,1,3,4\n240,1,2,0.5,1.5,-3,4\n300,x,2,1,1,1,1\n")
    rejects = Rejects("test")
    candles = list(iter_ohlcvt_csv(path, "BTC/USD", "1m", 60, rejects))
    assert [c["window_start_ms"] for c in candles] == [60_000]
    assert dict(rejects.counts) == {"malformed_row": 2, "inconsistent_ohlc": 1, "non_positive_or_nan": 1}
