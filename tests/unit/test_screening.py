"""Screening of trades: validity, duplicates and lateness, as the dataflow applies them."""

import math

import pytest

from feature_pipeline.transforms.screening import invalid_reason, new_screen_state, screen

MINUTE = 60_000
NOW = 1_700_000_000_000


def trade(**overrides):
    base = {"exchange": "kraken", "pair": "BTC/USD", "trade_id": 1, "price": 100.0, "qty": 0.5, "side": "buy", "timestamp_ms": NOW - 1000}
    return {**base, **overrides}


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({}, None),
        ({"price": 0.0}, "non_positive_or_nan_price"),
        ({"price": math.nan}, "non_positive_or_nan_price"),
        ({"qty": -1.0}, "non_positive_or_nan_qty"),
        ({"qty": math.inf}, "non_positive_or_nan_qty"),
        ({"price": "100"}, "bad_price"),
        ({"trade_id": True}, "bad_trade_id"),
        ({"side": "long"}, "bad_side"),
        ({"timestamp_ms": NOW + 61_000}, "future_timestamp"),
        ({"timestamp_ms": None}, "missing_timestamp_ms"),
    ],
)
def test_invalid_reason(overrides, reason):
    assert invalid_reason(trade(**overrides), NOW, max_future_ms=60_000) == reason


def test_non_objects_and_bad_controls_are_invalid():
    assert invalid_reason([1, 2], NOW, 60_000) == "not_an_object"
    assert invalid_reason({"control": "pause", "pair": "BTC/USD", "timestamp_ms": 1}, NOW, 60_000) == "bad_control_record"
    assert invalid_reason({"control": "tick", "pair": "BTC/USD", "timestamp_ms": 1}, NOW, 60_000) is None


def test_duplicates_are_rejected_per_exchange():
    state = new_screen_state()
    assert screen(state, trade(trade_id=5), MINUTE, 500) is None
    assert screen(state, trade(trade_id=5), MINUTE, 500) == "duplicate"
    assert screen(state, trade(trade_id=4), MINUTE, 500) == "duplicate"
    assert screen(state, trade(trade_id=5, exchange="coinbase"), MINUTE, 500) is None


def test_late_means_the_window_has_closed_and_grace_is_honoured():
    state = new_screen_state()
    assert screen(state, trade(trade_id=1, timestamp_ms=MINUTE + 100), MINUTE, 500) is None
    # Out of order but its window [MINUTE, 2*MINUTE) is still open.
    assert screen(state, trade(trade_id=2, timestamp_ms=MINUTE + 50), MINUTE, 500) is None
    # A tick 400 ms after the next window starts: the previous window's grace has not passed.
    assert screen(state, {"control": "tick", "pair": "BTC/USD", "timestamp_ms": 2 * MINUTE + 400}, MINUTE, 500) is None
    assert screen(state, trade(trade_id=3, timestamp_ms=2 * MINUTE - 10), MINUTE, 500) is None
    # After the grace period, the window is closed and its trades are late.
    assert screen(state, {"control": "tick", "pair": "BTC/USD", "timestamp_ms": 2 * MINUTE + 500}, MINUTE, 500) is None
    assert screen(state, trade(trade_id=4, timestamp_ms=2 * MINUTE - 10), MINUTE, 500) == "late"
    assert state["last_id"] == {"kraken": 3}
