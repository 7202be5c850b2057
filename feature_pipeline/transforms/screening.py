"""Screening of trades before they reach the candle windows: validity, duplicates, lateness.

Pure functions over a small per-pair state dict (kept in Quix state by the
dataflow): ``{"max_ts": <latest event time seen>, "last_id": {exchange: id}}``.
Each returns a reject reason, or None to accept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from feature_pipeline.transforms.candles import window_end

TRADE_FIELDS = {"exchange": str, "pair": str, "trade_id": int, "price": (int, float), "qty": (int, float), "side": str, "timestamp_ms": int}
SIDES = frozenset({"buy", "sell"})


def new_screen_state() -> dict:
    return {"max_ts": 0, "last_id": {}}


def invalid_reason(record: object, now_ms: int, max_future_ms: int) -> str | None:
    """Why a record is not a usable trade or control record, or None."""
    if not isinstance(record, Mapping):
        return "not_an_object"
    if "control" in record:
        if record["control"] not in ("tick", "end") or not isinstance(record.get("timestamp_ms"), int):
            return "bad_control_record"
        return None
    for name, kind in TRADE_FIELDS.items():
        value = record.get(name)
        if value is None:
            return f"missing_{name}"
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"bad_{name}"
    if not (math.isfinite(record["price"]) and record["price"] > 0):
        return "non_positive_or_nan_price"
    if not (math.isfinite(record["qty"]) and record["qty"] > 0):
        return "non_positive_or_nan_qty"
    if record["side"] not in SIDES:
        return "bad_side"
    if record["timestamp_ms"] > now_ms + max_future_ms:
        return "future_timestamp"
    return None


def screen(state: dict, record: Mapping, duration_ms: int, grace_ms: int) -> str | None:
    """Accept or reject a valid record against what the pair has seen; updates state on accept.

    A trade is a duplicate when its id is not above the last accepted id of its
    exchange, and late when its window has already been closed (its end plus
    the grace period lies before the latest event time seen). Control records
    only move the clock forward.
    """
    ts = record["timestamp_ms"]
    if "control" in record:
        if ts > state["max_ts"]:
            state["max_ts"] = ts
        return None
    last_ids = state["last_id"]
    exchange = record["exchange"]
    if record["trade_id"] <= last_ids.get(exchange, -1):
        return "duplicate"
    if window_end(ts, duration_ms) + grace_ms <= state["max_ts"]:
        return "late"
    last_ids[exchange] = record["trade_id"]
    if ts > state["max_ts"]:
        state["max_ts"] = ts
    return None
