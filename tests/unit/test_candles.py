"""Candles from trades: the window reducer against an independent pandas computation on real trades."""

import pandas as pd
import pytest

from feature_pipeline.transforms.candles import (
    finalize_candle,
    invalid_candle_reason,
    new_candle,
    update_candle,
    window_end,
)

MINUTE = 60_000


def fold(records):
    acc = None
    for record in records:
        acc = new_candle(record) if acc is None else update_candle(acc, record)
    return acc


def trade(ts, price, qty=1.0, trade_id=1):
    return {"exchange": "kraken", "pair": "BTC/USD", "trade_id": trade_id, "price": price, "qty": qty, "side": "buy", "timestamp_ms": ts}


def test_candles_from_real_trades_equal_pandas(data_dir):
    trades = pd.read_csv(data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv")
    records = [trade(int(r.time_ms), r.price, r.qty) for r in trades.itertuples()]
    windows = {}
    for record in records:
        end = window_end(record["timestamp_ms"], MINUTE)
        windows[end] = new_candle(record) if end not in windows else update_candle(windows[end], record)
    ours = pd.DataFrame(
        [finalize_candle({"start": end - MINUTE, "end": end, "value": acc}, "BTC/USD", "1m") for end, acc in sorted(windows.items())]
    ).set_index("window_end_ms")

    trades["end"] = (trades.time_ms // MINUTE + 1) * MINUTE
    trades["notional"] = trades.price * trades.qty
    g = trades.groupby("end")
    assert list(ours.index) == list(g.size().index)
    pd.testing.assert_series_equal(ours.open, g.price.first(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.close, g.price.last(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.high, g.price.max(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.low, g.price.min(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.volume, g.qty.sum(), check_names=False, check_index_type=False, rtol=1e-12)
    pd.testing.assert_series_equal(ours.vwap, g.notional.sum() / g.qty.sum(), check_names=False, check_index_type=False, rtol=1e-12)
    assert ours.trade_count.tolist() == g.size().tolist()
    assert (ours.window_start_ms == ours.index - MINUTE).all()


def test_out_of_order_trades_keep_open_and_close_by_event_time():
    acc = fold([trade(10_000, 100.0), trade(5_000, 90.0), trade(20_000, 110.0), trade(15_000, 105.0)])
    candle = finalize_candle({"start": 0, "end": MINUTE, "value": acc}, "BTC/USD", "1m")
    assert (candle["open"], candle["close"], candle["high"], candle["low"]) == (90.0, 110.0, 110.0, 90.0)


def test_control_records_do_not_change_a_candle_and_empty_windows_give_none():
    tick = {"control": "tick", "pair": "BTC/USD", "timestamp_ms": 1_000}
    assert finalize_candle({"start": 0, "end": MINUTE, "value": fold([tick, tick])}, "BTC/USD", "1m") is None
    with_tick = fold([tick, trade(2_000, 50.0, 2.0), tick, trade(3_000, 70.0, 1.0)])
    without = fold([trade(2_000, 50.0, 2.0), trade(3_000, 70.0, 1.0)])
    assert with_tick == without
    candle = finalize_candle({"start": 0, "end": MINUTE, "value": without}, "BTC/USD", "1m")
    assert candle["vwap"] == pytest.approx((50 * 2 + 70) / 3)


def test_window_end_is_aligned_and_exclusive():
    assert window_end(0, MINUTE) == MINUTE
    assert window_end(MINUTE - 1, MINUTE) == MINUTE
    assert window_end(MINUTE, MINUTE) == 2 * MINUTE


@pytest.mark.parametrize(
    "record, reason",
    [
        ("x", "not_an_object"),
        ({"interval": "1m", "window_end_ms": 1, "trade_count": 1}, "missing_pair_or_interval"),
        ({"pair": "A", "interval": "1m", "window_end_ms": 1.5, "trade_count": 1}, "bad_window_or_count"),
        ({"pair": "A", "interval": "1m", "window_end_ms": 1, "trade_count": 1, "open": 1, "high": float("nan"), "low": 1, "close": 1, "volume": 1, "vwap": 1}, "non_numeric_or_nan"),
        ({"pair": "A", "interval": "1m", "window_end_ms": 1, "trade_count": 1, "open": 1, "high": 2, "low": 0, "close": 1, "volume": 1, "vwap": 1}, "non_positive_price_or_negative_volume"),
        ({"pair": "A", "interval": "1m", "window_end_ms": 1, "trade_count": 1, "open": 3, "high": 2, "low": 1, "close": 1, "volume": 1, "vwap": 1}, "inconsistent_ohlc"),
        ({"pair": "A", "interval": "1m", "window_end_ms": 1, "trade_count": 1, "open": 1, "high": 2, "low": 1, "close": 2, "volume": 0, "vwap": 1}, None),
    ],
)
def test_invalid_candle_reason(record, reason):
    assert invalid_candle_reason(record) == reason
