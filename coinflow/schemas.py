"""The records that travel on the topics.

Records are plain dicts (JSON on the wire, cheap per message); these TypedDicts
name their fields. Times are integer Unix milliseconds in UTC.

The trades topic also carries two control records, told apart by ``control``:
``tick`` (a live source's wall clock, closing windows of a quiet pair) and
``end`` (the end of a finite input, closing its last window and telling the
pipeline when everything has reached the feature store).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

Side = Literal["buy", "sell"]
CONTROL_TICK = "tick"
CONTROL_END = "end"


class Trade(TypedDict):
    """One executed trade, normalised across exchanges.

    ``trade_id`` is the exchange's id, increasing per (exchange, pair); sources
    without ids (files) number trades by position so a replay repeats them.
    """

    exchange: str
    pair: str
    trade_id: int
    price: float
    qty: float
    side: Side
    timestamp_ms: int


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


def pair_key(pair: str) -> str:
    """The message key of a pair (the pair itself: one partition per pair's stream)."""
    return pair


def pair_slug(pair: str) -> str:
    """A filesystem- and name-safe form of a pair: ``BTC/USD`` -> ``BTCUSD``."""
    return "".join(ch for ch in pair if ch.isalnum()).upper()
