"""Trades -> OHLCV candles: event-time tumbling windows per pair, as pure functions.

One small state per pair (kept in Quix state by the dataflow) holds the
pair's event clock (the latest event time seen), the last accepted trade id
per id space and the windows still open. A window [start, end) closes once
the clock has passed ``end + grace``; a trade for a closed window is late,
one whose id is not above the last accepted id of its id space a duplicate.
An id space is an exchange's own ids, or the time-derived keys of files
without ids (``id_space`` = ``"time"``) of that exchange, kept apart so
that neither kind of id hides trades of the other.
These are the semantics of Quix Streams' ``tumbling_window(...).final()``
with the per-key closing strategy; holding them in the same state as the
screening makes one state read and write per trade instead of several.

The accumulator keeps the first and last trade times so that trades arriving
out of order (within the grace period) still give the right open and close.
Clock ticks from live sources and end-of-input markers move the clock, so a
quiet pair's candle is not held back waiting for its next trade.
"""

from __future__ import annotations

from collections.abc import Mapping

from coinflow.schemas import Candle


def new_candle(trade: Mapping) -> dict:
    """An accumulator holding one trade."""
    price, qty, ts = trade["price"], trade["qty"], trade["timestamp_ms"]
    return {
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "volume": qty,
        "notional": price * qty,
        "trade_count": 1,
        "open_ts": ts,
        "close_ts": ts,
    }


def update_candle(acc: dict, trade: Mapping) -> dict:
    """Fold one trade into the accumulator."""
    price, qty, ts = trade["price"], trade["qty"], trade["timestamp_ms"]
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


def finalize_candle(acc: Mapping, pair: str, interval: str, start_ms: int, duration_ms: int) -> Candle:
    """A closed window's accumulator as a Candle."""
    return Candle(
        pair=pair,
        interval=interval,
        window_start_ms=start_ms,
        window_end_ms=start_ms + duration_ms,
        open=acc["open"],
        high=acc["high"],
        low=acc["low"],
        close=acc["close"],
        volume=acc["volume"],
        vwap=acc["notional"] / acc["volume"],
        trade_count=acc["trade_count"],
    )


def new_pair_state() -> dict:
    """The stream state of one pair: event clock, last trade id per id space, open windows ([start, acc])."""
    return {"max_ts": 0, "last_id": {}, "open": []}


def id_space(trade: Mapping) -> str:
    """What a trade's id is compared with: its exchange's ids (``kraken``) or its time keys (``kraken:time``)."""
    space = trade.get("id_space")
    return trade["exchange"] if space is None else f"{trade['exchange']}:{space}"


def accept_trade(state: dict, trade: Mapping, duration_ms: int, grace_ms: int) -> str | None:
    """Fold a valid trade into its window, or return why it is rejected (state then unchanged)."""
    ts = trade["timestamp_ms"]
    last_ids = state["last_id"]
    space = id_space(trade)
    if trade["trade_id"] <= last_ids.get(space, -1):
        return "duplicate"
    if window_end(ts, duration_ms) + grace_ms <= state["max_ts"]:
        return "late"
    last_ids[space] = trade["trade_id"]
    start = ts - ts % duration_ms
    windows = state["open"]
    for entry in windows:
        if entry[0] == start:
            update_candle(entry[1], trade)
            break
    else:
        windows.append([start, new_candle(trade)])
        windows.sort(key=lambda entry: entry[0])
    if ts > state["max_ts"]:
        state["max_ts"] = ts
    return None


def advance_clock(state: dict, timestamp_ms: int) -> None:
    """Move the pair's event clock forward (a tick or end marker); never backwards."""
    if timestamp_ms > state["max_ts"]:
        state["max_ts"] = timestamp_ms


def close_windows(state: dict, pair: str, interval: str, duration_ms: int, grace_ms: int) -> list[Candle]:
    """Remove the windows the clock has closed and return their candles, oldest first."""
    horizon = state["max_ts"] - grace_ms
    windows = state["open"]
    if not windows or windows[0][0] + duration_ms > horizon:
        return []
    closed = [entry for entry in windows if entry[0] + duration_ms <= horizon]
    state["open"] = windows[len(closed) :]
    return [finalize_candle(acc, pair, interval, start, duration_ms) for start, acc in closed]


def window_end(timestamp_ms: int, duration_ms: int) -> int:
    """End of the tumbling window holding a timestamp (windows are aligned to the epoch)."""
    return timestamp_ms - timestamp_ms % duration_ms + duration_ms
