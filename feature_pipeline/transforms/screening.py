"""Validity of records on the trades topic, before they reach the candle windows.

Duplicates and late trades depend on what the pair has seen: those checks live
with the windows' state (`candles.accept_trade`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from coinflow.schemas import ID_SPACE_TIME, MAX_INT64, time_problem

TRADE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "exchange": str,
    "pair": str,
    "trade_id": int,
    "price": (int, float),
    "qty": (int, float),
    "side": str,
    "timestamp_ms": int,
}
SIDES = frozenset({"buy", "sell"})


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
    if not 0 <= record["trade_id"] <= MAX_INT64:
        return "bad_trade_id"
    if record.get("id_space", ID_SPACE_TIME) != ID_SPACE_TIME:
        return "bad_id_space"
    return time_problem(record["timestamp_ms"], now_ms, max_future_ms)
