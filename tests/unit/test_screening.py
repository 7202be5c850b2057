"""Validity of records on the trades topic, as the dataflow checks them."""

import math

import pytest

from feature_pipeline.transforms.screening import invalid_reason

NOW = 1_700_000_000_000


def trade(**overrides):
    base = {
        "exchange": "kraken",
        "pair": "BTC/USD",
        "trade_id": 1,
        "price": 100.0,
        "qty": 0.5,
        "side": "buy",
        "timestamp_ms": NOW - 1000,
    }
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
        ({"timestamp_ms": 99_999_999_999_000}, "future_timestamp"),  # the year 5138
        ({"timestamp_ms": 0}, "timestamp_before_2009"),  # a zero clock: 1970-01-01
        ({"timestamp_ms": 1_230_767_999_999}, "timestamp_before_2009"),
        ({"timestamp_ms": 1_230_768_000_000}, None),
        ({"trade_id": -1}, "bad_trade_id"),
        ({"trade_id": 2**63}, "bad_trade_id"),
        ({"trade_id": 2**63 - 1}, None),
        ({"id_space": "time"}, None),
        ({"id_space": "row"}, "bad_id_space"),
        ({"timestamp_ms": None}, "missing_timestamp_ms"),
    ],
)
def test_invalid_reason(overrides, reason):
    assert invalid_reason(trade(**overrides), NOW, max_future_ms=60_000) == reason


def test_non_objects_and_bad_controls_are_invalid():
    assert invalid_reason([1, 2], NOW, 60_000) == "not_an_object"
    assert (
        invalid_reason({"control": "pause", "pair": "BTC/USD", "timestamp_ms": 1}, NOW, 60_000) == "bad_control_record"
    )
    assert invalid_reason({"control": "tick", "pair": "BTC/USD", "timestamp_ms": 1}, NOW, 60_000) is None
