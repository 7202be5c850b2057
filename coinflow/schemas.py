"""The records that travel on the topics.

Records are plain dicts (JSON on the wire, cheap per message); these TypedDicts
name their fields. Times are integer Unix milliseconds in UTC, and only plausible
ones enter the pipeline (`time_problem`): nothing before 2009 (the first bitcoin
block), nothing beyond a small allowance ahead of the clock.

The trades topic also carries two control records, told apart by ``control``:
``tick`` (a live source's wall clock, closing windows of a quiet pair) and
``end`` (the end of a finite input, closing its last window and telling the
pipeline when everything has reached the feature store).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, Literal, NotRequired, TypedDict, TypeGuard

# The candle intervals the pipelines know, in seconds (the `interval` field of a candle).
INTERVALS_SECONDS = {"1m": 60, "5m": 300}

Side = Literal["buy", "sell"]
CONTROL_TICK: Final = "tick"
CONTROL_END: Final = "end"
ID_SPACE_TIME: Final = "time"
EARLIEST_EVENT_MS = 1_230_768_000_000  # 2009-01-01T00:00:00Z: no crypto market traded before the first bitcoin block
MAX_INT64 = 2**63 - 1  # integers on the topics and in the stores are signed 64-bit (orjson refuses past 2**64)
MAX_FUTURE_MS = 60_000  # the default allowance ahead of the clock (`Settings.max_future_ms`)


class Trade(TypedDict):
    """One executed trade, normalised across exchanges.

    ``trade_id`` is the exchange's id, increasing per (exchange, pair). Files
    without ids key their trades by time instead (`time_trade_key`) and say so
    with ``id_space`` = ``"time"``: the two kinds of id are deduplicated apart,
    so neither ever hides a trade of the other.
    """

    exchange: str
    pair: str
    trade_id: int
    price: float
    qty: float
    side: Side
    timestamp_ms: int
    id_space: NotRequired[Literal["time"]]


class Control(TypedDict):
    """A tick or end-of-input marker for one pair, keyed like its trades."""

    control: Literal["tick", "end"]
    pair: str
    timestamp_ms: int
    run_id: NotRequired[str]


class Candle(TypedDict):
    """An OHLCV candle; ``window_end_ms`` is when it became known."""

    pair: str
    interval: str
    window_start_ms: int
    window_end_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    trade_count: int


def time_problem(timestamp_ms: int, now_ms: int, max_future_ms: int) -> str | None:
    """Why an event time is implausible (before 2009, or more than `max_future_ms` ahead of `now_ms`), or None."""
    if timestamp_ms < EARLIEST_EVENT_MS:
        return "timestamp_before_2009"
    if timestamp_ms > now_ms + max_future_ms:
        return "future_timestamp"
    return None


def time_trade_key(timestamp_ms: int, previous_key: int | None) -> int:
    """The id of a trade without an exchange id: its time in ms x 1000 plus its ordinal within that millisecond.

    Fed the previous key of the same file, trades of one millisecond get ordinals 0, 1, 2...; a trade
    out of time order still gets a key above the previous one. The same file gives the same keys on
    every replay (idempotent), and a file of later trades gets higher keys (never taken for duplicates).
    """
    key = timestamp_ms * 1000
    return key if previous_key is None or key > previous_key else previous_key + 1


def pair_key(pair: str) -> str:
    """The message key of a pair (the pair itself: one partition per pair's stream)."""
    return pair


def pair_slug(pair: str) -> str:
    """A filesystem- and name-safe form of a pair: ``BTC/USD`` -> ``BTCUSD``."""
    return "".join(ch for ch in pair if ch.isalnum()).upper()


CANDLE_NUMBERS = ("open", "high", "low", "close", "volume", "vwap")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def invalid_candle_reason(record: object, now_ms: int | None = None, max_future_ms: int = MAX_FUTURE_MS) -> str | None:
    """Why a record on the candles topic is not a usable candle, or None.

    Every field the feature store converts is checked here, where the record
    enters, so that nothing the sink cannot write gets that far: a known
    interval, a window of that length at a plausible time (given the clock,
    `now_ms`: `coinflow.schemas.time_problem`), a 64-bit count and finite
    prices. Consumers of rows checked upstream may leave out the clock.
    """
    if not isinstance(record, Mapping):
        return "not_an_object"
    if not isinstance(record.get("pair"), str) or not isinstance(record.get("interval"), str):
        return "missing_pair_or_interval"
    if record["interval"] not in INTERVALS_SECONDS:
        return "unknown_interval"
    start, end, count = record.get("window_start_ms"), record.get("window_end_ms"), record.get("trade_count")
    if not (_is_int(start) and _is_int(end) and _is_int(count)) or not 0 <= count <= MAX_INT64:
        return "bad_window_or_count"
    if end - start != INTERVALS_SECONDS[record["interval"]] * 1000:
        return "window_not_its_interval"
    if now_ms is not None:
        problem = time_problem(start, now_ms, max_future_ms) or time_problem(end, now_ms, max_future_ms)
        if problem is not None:
            return problem
    values = [value for value in (record.get(name) for name in CANDLE_NUMBERS) if _is_finite_number(value)]
    if len(values) != len(CANDLE_NUMBERS):
        return "non_numeric_or_nan"
    o, h, lo, c, volume, _ = values
    if min(o, h, lo, c) <= 0 or volume < 0:
        return "non_positive_price_or_negative_volume"
    if not (lo <= min(o, c) and h >= max(o, c)):
        return "inconsistent_ohlc"
    return None
