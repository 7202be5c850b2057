"""Trades -> OHLCV candles, as the reducer of an event-time tumbling window.

The window's accumulator keeps the first and last trade times so that trades
arriving out of order (within the grace period) still give the right open and
close. Control records (ticks, end markers) advance the window's clock; they
start an empty accumulator and leave one unchanged, and windows that saw no
trade give no candle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from coinflow.schemas import Candle


def empty_accumulator() -> dict:
    return {"trade_count": 0}


def _start(trade: Mapping) -> dict:
    price, qty, ts = trade["price"], trade["qty"], trade["timestamp_ms"]
    return {
        "open": price, "high": price, "low": price, "close": price,
        "volume": qty, "notional": price * qty, "trade_count": 1,
        "open_ts": ts, "close_ts": ts,
    }


def new_candle(record: Mapping) -> dict:
    """The window initializer: an accumulator holding the first record."""
    if "control" in record:
        return empty_accumulator()
    return _start(record)


def update_candle(acc: dict, record: Mapping) -> dict:
    """The window reducer: fold one trade (or ignore one control record) into the accumulator."""
    if "control" in record:
        return acc
    if acc["trade_count"] == 0:
        return _start(record)
    price, qty, ts = record["price"], record["qty"], record["timestamp_ms"]
    if price > acc["high"]:
        acc["high"] = price
    if price < acc["low"]:
        acc["low"] = price
    if ts < acc["open_ts"]:
        acc["open"], acc["open_ts"] = price, ts
    if ts >= acc["close_ts"]:
        acc["close"], acc["close_ts"] = price, ts
    acc["volume"] += qty
    acc["notional"] += price * qty
    acc["trade_count"] += 1
    return acc


def finalize_candle(window: Mapping, pair: str, interval: str) -> Candle | None:
    """A closed window ({"start", "end", "value"}) as a Candle; None when it holds no trade."""
    acc = window["value"]
    if acc["trade_count"] == 0:
        return None
    return Candle(
        pair=pair,
        interval=interval,
        window_start_ms=window["start"],
        window_end_ms=window["end"],
        open=acc["open"],
        high=acc["high"],
        low=acc["low"],
        close=acc["close"],
        volume=acc["volume"],
        vwap=acc["notional"] / acc["volume"],
        trade_count=acc["trade_count"],
    )


def window_end(timestamp_ms: int, duration_ms: int) -> int:
    """End of the tumbling window holding a timestamp (windows are aligned to the epoch)."""
    return timestamp_ms - timestamp_ms % duration_ms + duration_ms


CANDLE_NUMBERS = ("open", "high", "low", "close", "volume", "vwap")


def invalid_candle_reason(record: object) -> str | None:
    """Why a record on the candles topic is not a usable candle, or None."""
    if not isinstance(record, Mapping):
        return "not_an_object"
    if not isinstance(record.get("pair"), str) or not isinstance(record.get("interval"), str):
        return "missing_pair_or_interval"
    if not isinstance(record.get("window_end_ms"), int) or not isinstance(record.get("trade_count"), int):
        return "bad_window_or_count"
    values = [record.get(name) for name in CANDLE_NUMBERS]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return "non_numeric_or_nan"
    o, h, lo, c, volume, _ = values
    if min(o, h, lo, c) <= 0 or volume < 0:
        return "non_positive_price_or_negative_volume"
    if not (lo <= min(o, c) and h >= max(o, c)):
        return "inconsistent_ohlc"
    return None
