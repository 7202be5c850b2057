"""Readers of exchange files: trades CSVs and Kraken's downloadable OHLCVT candles.

The readers are pure parsing: each row becomes a record or a counted reject;
nothing is produced anywhere here (the sources in `file_sources` do that).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from coinflow.quality import Rejects
from coinflow.schemas import Candle, Trade

TRADES_CSV_COLUMNS = ("time_ms", "timestamp", "price", "qty", "side")
_SIDES = {"buy": "buy", "sell": "sell", "b": "buy", "s": "sell"}


def _positive(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def iter_trades_csv(
    path: Path, pair: str, rejects: Rejects, exchange: str = "kraken"
) -> Iterator[Trade]:
    """Trades of a CSV with columns time_ms,timestamp,price,qty,side.

    Files carry no trade ids, so a trade's id is its row number: replaying the
    same file yields the same ids, which the pipeline deduplicates.
    """
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:5]) != TRADES_CSV_COLUMNS:
            raise ValueError(
                f"{path}: expected a header {','.join(TRADES_CSV_COLUMNS)}, found {header!r}"
            )
        for row_number, row in enumerate(reader, start=1):
            if len(row) < 5:
                rejects.reject("malformed_row", ",".join(row))
                continue
            price, qty = _positive(row[2]), _positive(row[3])
            side = _SIDES.get(row[4].strip().lower())
            try:
                timestamp_ms = int(row[0])
            except ValueError:
                rejects.reject("bad_timestamp", ",".join(row))
                continue
            if price is None or qty is None:
                rejects.reject("non_positive_or_nan", ",".join(row))
                continue
            if side is None:
                rejects.reject("bad_side", ",".join(row))
                continue
            yield Trade(
                exchange=exchange,
                pair=pair,
                trade_id=row_number,
                price=price,
                qty=qty,
                side=side,
                timestamp_ms=timestamp_ms,
            )


def read_trades_csv(path: Path, pair: str, rejects: Rejects, exchange: str = "kraken") -> list[Trade]:
    return list(iter_trades_csv(path, pair, rejects, exchange))


def iter_ohlcvt_csv(path: Path, pair: str, interval: str, seconds: int, rejects: Rejects) -> Iterator[Candle]:
    """Candles of Kraken's OHLCVT export (no header: unix,open,high,low,close,volume,trades).

    The first column is the window start in seconds; the vwap is not in the
    export, so the typical price (high+low+close)/3 stands in for it.
    """
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if len(row) < 7:
                rejects.reject("malformed_row", ",".join(row))
                continue
            try:
                start_s = int(float(row[0]))
                o, h, lo, c = (float(x) for x in row[1:5])
                volume = float(row[5])
                count = int(float(row[6]))
            except ValueError:
                rejects.reject("malformed_row", ",".join(row))
                continue
            prices = (o, h, lo, c)
            if not all(math.isfinite(p) and p > 0 for p in prices) or not math.isfinite(volume) or volume < 0:
                rejects.reject("non_positive_or_nan", ",".join(row))
                continue
            if not (lo <= min(o, c) and h >= max(o, c)):
                rejects.reject("inconsistent_ohlc", ",".join(row))
                continue
            start_ms = start_s * 1000
            yield Candle(
                pair=pair,
                interval=interval,
                window_start_ms=start_ms,
                window_end_ms=start_ms + seconds * 1000,
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=volume,
                vwap=(h + lo + c) / 3.0,
                trade_count=count,
            )
