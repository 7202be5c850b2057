"""Candles from trades: the pure window state machine, against an independent pandas computation on real trades."""

import random

import pandas as pd
import pytest

from coinflow.schemas import invalid_candle_reason
from feature_pipeline.transforms.candles import (
    accept_trade,
    advance_clock,
    close_windows,
    new_pair_state,
    window_end,
)

MINUTE = 60_000
GRACE = 500


def trade(ts, price=100.0, qty=1.0, trade_id=1, exchange="kraken"):
    return {
        "exchange": exchange,
        "pair": "BTC/USD",
        "trade_id": trade_id,
        "price": price,
        "qty": qty,
        "side": "buy",
        "timestamp_ms": ts,
    }


def run(records, end_ms=None):
    """Feed records through one pair's state; returns (candles, rejects by trade id)."""
    state, candles, rejected = new_pair_state(), [], {}
    for record in records:
        reason = accept_trade(state, record, MINUTE, GRACE)
        if reason is not None:
            rejected[record["trade_id"]] = reason
        candles += close_windows(state, "BTC/USD", "1m", MINUTE, GRACE)
    if end_ms is not None:
        advance_clock(state, end_ms)
        candles += close_windows(state, "BTC/USD", "1m", MINUTE, GRACE)
    return candles, rejected


def test_candles_from_real_trades_equal_pandas(data_dir):
    trades = pd.read_csv(data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv")
    records = [trade(int(r.time_ms), r.price, r.qty, i + 1) for i, r in enumerate(trades.itertuples())]
    candles, rejected = run(records, end_ms=records[-1]["timestamp_ms"] + MINUTE + GRACE)
    assert rejected == {}
    ours = pd.DataFrame(candles).set_index("window_end_ms")

    trades["end"] = (trades.time_ms // MINUTE + 1) * MINUTE
    trades["notional"] = trades.price * trades.qty
    g = trades.groupby("end")
    assert list(ours.index) == list(g.size().index)
    pd.testing.assert_series_equal(ours.open, g.price.first(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.close, g.price.last(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.high, g.price.max(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.low, g.price.min(), check_names=False, check_index_type=False)
    pd.testing.assert_series_equal(ours.volume, g.qty.sum(), check_names=False, check_index_type=False, rtol=1e-12)
    pd.testing.assert_series_equal(
        ours.vwap, g.notional.sum() / g.qty.sum(), check_names=False, check_index_type=False, rtol=1e-12
    )
    assert ours.trade_count.tolist() == g.size().tolist()
    assert (ours.window_start_ms == ours.index - MINUTE).all()


def test_out_of_order_trades_keep_open_and_close_by_event_time():
    candles, _ = run(
        [
            trade(10_000, 100.0, trade_id=1),
            trade(5_000, 90.0, trade_id=2),
            trade(20_000, 110.0, trade_id=3),
            trade(15_000, 105.0, trade_id=4),
        ],
        end_ms=MINUTE + GRACE,
    )
    [candle] = candles
    assert (candle["open"], candle["close"], candle["high"], candle["low"]) == (90.0, 110.0, 110.0, 90.0)


def test_duplicates_are_rejected_per_exchange_and_leave_the_candle_unchanged():
    _, rejected = run([trade(1_000, trade_id=5), trade(2_000, trade_id=5)])
    assert rejected == {5: "duplicate"}
    candles, rejected = run(
        [trade(1_000, trade_id=5), trade(2_000, trade_id=4), trade(3_000, trade_id=5, exchange="coinbase")],
        end_ms=MINUTE + GRACE,
    )
    assert rejected == {4: "duplicate"}
    assert candles[0]["trade_count"] == 2


def test_a_window_closes_only_after_its_grace_and_late_trades_are_rejected():
    state = new_pair_state()
    assert accept_trade(state, trade(MINUTE + 100, trade_id=1), MINUTE, GRACE) is None
    # Out of order but its window [MINUTE, 2*MINUTE) is still open.
    assert accept_trade(state, trade(MINUTE + 50, trade_id=2), MINUTE, GRACE) is None
    # 400 ms into the next window: the previous one is within its grace, still open.
    advance_clock(state, 2 * MINUTE + 400)
    assert close_windows(state, "BTC/USD", "1m", MINUTE, GRACE) == []
    assert accept_trade(state, trade(2 * MINUTE - 10, 105.0, trade_id=3), MINUTE, GRACE) is None
    # At the end of the grace period the window closes; its trades are late from then on.
    advance_clock(state, 2 * MINUTE + GRACE)
    [candle] = close_windows(state, "BTC/USD", "1m", MINUTE, GRACE)
    assert (candle["window_end_ms"], candle["trade_count"], candle["close"]) == (2 * MINUTE, 3, 105.0)
    before = repr(state)
    assert accept_trade(state, trade(2 * MINUTE - 10, trade_id=4), MINUTE, GRACE) == "late"
    assert repr(state) == before
    assert state["last_id"] == {"kraken": 3}


def test_the_clock_never_moves_back_and_a_quiet_pair_is_closed_by_ticks():
    state = new_pair_state()
    accept_trade(state, trade(1_000, trade_id=1), MINUTE, GRACE)
    advance_clock(state, 500)
    assert state["max_ts"] == 1_000
    advance_clock(state, MINUTE + GRACE)
    assert [c["window_end_ms"] for c in close_windows(state, "BTC/USD", "1m", MINUTE, GRACE)] == [MINUTE]
    assert state["open"] == []


def test_shuffled_within_grace_gives_the_same_candles_as_in_order():
    rng = random.Random(7)
    ordered = [
        trade(t, 100.0 + rng.random(), 0.1 + rng.random(), i + 1) for i, t in enumerate(range(0, 5 * MINUTE, 350))
    ]
    jittered = sorted(ordered, key=lambda r: r["timestamp_ms"] + rng.uniform(0, GRACE - 1))
    # Ids follow arrival order on an exchange, so renumber in arrival order.
    arrived = [{**r, "trade_id": i + 1} for i, r in enumerate(jittered)]
    end = 5 * MINUTE + GRACE
    expected, _ = run(ordered, end_ms=end)
    got, rejected = run(arrived, end_ms=end)
    assert rejected == {}
    assert (
        [c["window_end_ms"] for c in got] == [c["window_end_ms"] for c in expected] == [MINUTE * k for k in range(1, 6)]
    )
    for a, b in zip(got, expected, strict=True):
        assert a == pytest.approx(b)


def test_window_end_is_aligned_and_exclusive():
    assert window_end(0, MINUTE) == MINUTE
    assert window_end(MINUTE - 1, MINUTE) == MINUTE
    assert window_end(MINUTE, MINUTE) == 2 * MINUTE


NOW = 1_700_000_000_000
END = NOW - MINUTE  # a window of a minute ago
YEAR_5138 = 99_999_999_999_000


def candle(**overrides):
    base = {
        "pair": "A",
        "interval": "1m",
        "window_start_ms": END - MINUTE,
        "window_end_ms": END,
        "trade_count": 1,
        "open": 1,
        "high": 2,
        "low": 1,
        "close": 2,
        "volume": 0,
        "vwap": 1,
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    "record, reason",
    [
        ("x", "not_an_object"),
        ({"interval": "1m", "window_end_ms": 1, "trade_count": 1}, "missing_pair_or_interval"),
        (candle(interval="7m"), "unknown_interval"),
        (candle(window_end_ms=END + 0.5), "bad_window_or_count"),
        (candle(window_start_ms=None), "bad_window_or_count"),
        (candle(trade_count=-1), "bad_window_or_count"),
        (candle(trade_count=True), "bad_window_or_count"),
        (candle(trade_count=2**64), "bad_window_or_count"),
        (candle(window_start_ms=END - 2 * MINUTE), "window_not_its_interval"),
        (candle(interval="5m"), "window_not_its_interval"),
        (candle(window_start_ms=0, window_end_ms=MINUTE), "timestamp_before_2009"),
        (candle(window_start_ms=YEAR_5138 - MINUTE, window_end_ms=YEAR_5138), "future_timestamp"),
        (candle(window_start_ms=NOW + MINUTE, window_end_ms=NOW + 2 * MINUTE), "future_timestamp"),
        (candle(high=float("nan")), "non_numeric_or_nan"),
        (candle(low=0), "non_positive_price_or_negative_volume"),
        (candle(open=3), "inconsistent_ohlc"),
        (candle(), None),
        (candle(interval="5m", window_start_ms=END - 5 * MINUTE), None),
    ],
)
def test_invalid_candle_reason(record, reason):
    assert invalid_candle_reason(record, NOW, max_future_ms=60_000) == reason


def test_without_a_clock_only_the_shape_of_a_candle_is_checked():
    """Consumers of rows the pipeline checked when they entered (the prediction stream) leave out the clock."""
    assert invalid_candle_reason(candle(window_start_ms=0, window_end_ms=MINUTE)) is None
    assert invalid_candle_reason(candle(interval="7m")) == "unknown_interval"


def test_file_time_keys_and_exchange_ids_are_deduplicated_apart():
    """Exchange ids and the time keys of files without ids are different id spaces: high ids of one never make
    trades of the other duplicates, and each space still drops its own repeats."""
    t0 = 1_561_939_203_172
    live = [trade(t0 + i * 1000, trade_id=5_000_000 + i) for i in range(3)]
    keyed = [
        {**trade(t0 + 3_600_000 + i * 1000, trade_id=(t0 + 3_600_000 + i * 1000) * 1000), "id_space": "time"}
        for i in range(3)
    ]
    state = new_pair_state()
    assert [accept_trade(state, r, MINUTE, GRACE) for r in live + keyed] == [None] * 6
    assert state["last_id"] == {"kraken": 5_000_002, "kraken:time": keyed[-1]["trade_id"]}
    # A later live trade with an id far below the file's keys is not a duplicate, a replayed one is.
    assert accept_trade(state, trade(t0 + 3_700_000, trade_id=5_000_003), MINUTE, GRACE) is None
    assert accept_trade(state, {**keyed[-1], "timestamp_ms": t0 + 3_700_000}, MINUTE, GRACE) == "duplicate"
    assert accept_trade(state, trade(t0 + 3_700_000, trade_id=5_000_001), MINUTE, GRACE) == "duplicate"
