"""Times on the wire: RFC 3339 text and Unix milliseconds, exactly (no floats).

Exchanges write times as RFC 3339 (``2023-09-25T07:48:36.925533Z``); the
project carries Unix milliseconds. Shared by the market-data protocols and
the trading gateway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339_to_ms(text: object) -> int:
    """Unix ms of an RFC 3339 time with an offset (``2023-09-25T07:48:36.925533Z``); a ValueError for anything else."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"RFC 3339 time without an offset: {text!r}")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def ms_to_rfc3339(timestamp_ms: int) -> str:
    """A time as UTC with microseconds and ``Z`` (the form Kraken writes; Coinbase reads it too)."""
    moment = _EPOCH + timedelta(milliseconds=timestamp_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
