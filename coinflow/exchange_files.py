"""Readers of exchange files: trades CSVs, Kraken's downloadable OHLCVT candles, CSVs of full L2 book snapshots,
and universe candle files (one a pair, Binance's layout or Kraken's OHLCVT; `read_candle_file`).

The readers are pure parsing: each row becomes a record or a counted reject;
nothing is produced anywhere here (the feature pipeline's file sources do
that; the inference pipeline's backtests read book snapshots through them too).
A problem with the file as a whole (no header, missing columns, not text)
is a `FileFormatError` naming the file and the row; `check_trades_csv`,
`check_ohlcvt_csv` and `check_snapshot_csv` find those up front, so that a
command can say so in one line before its pipeline starts. A row that cannot
be read (not UTF-8, a field over csv's size limit, an implausible time) is a
reject like any bad row.
Files ending in ``.gz`` are read through gzip, streamed.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NotRequired, TextIO, TypedDict, TypeVar

import pandas as pd

from coinflow.books import FRAME_SNAPSHOT, BookFrame, Level, to_level, wire_levels
from coinflow.quality import Rejects
from coinflow.schemas import (
    ID_SPACE_TIME,
    INTERVALS_SECONDS,
    MAX_FUTURE_MS,
    MAX_INT64,
    Candle,
    Side,
    Trade,
    time_problem,
    time_trade_key,
)

TRADES_CSV_COLUMNS = ("time_ms", "timestamp", "price", "qty", "side")
TRADE_ID_COLUMN = "trade_id"
OHLCVT_COLUMNS = ("unix", "open", "high", "low", "close", "volume", "trades")
_SIDES: dict[str, Side] = {"buy": "buy", "sell": "sell", "b": "buy", "s": "sell"}
_TRADES_HEADER = ",".join(TRADES_CSV_COLUMNS)
SNAPSHOT_TIME_COLUMN = "timestamp"
SNAPSHOT_SEQUENCE_COLUMN = "sequence"
_SNAPSHOT_REQUIRED = (
    SNAPSHOT_TIME_COLUMN,
    SNAPSHOT_SEQUENCE_COLUMN,
    "bid_1_price",
    "bid_1_size",
    "ask_1_price",
    "ask_1_size",
)
_SNAPSHOT_HEADER = "Timestamp,Sequence,Bid_1_Price,Bid_1_Size,...,Ask_1_Price,Ask_1_Size,..."
_SHOWN_CHARS = 80
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

Columns = TypeVar("Columns")


class TradeRow(TypedDict):
    """What a row of a trades CSV says of its trade (the exchange's id only in a file with a trade_id column)."""

    price: float
    qty: float
    side: Side
    timestamp_ms: int
    trade_id: NotRequired[int]


class FileFormatError(ValueError):
    """A file that cannot be read as its format at all; the message names the file, the row and the problem."""


def _open(path: Path) -> TextIO:
    """The file as text (gunzipped as it is read, for a ``.gz``): a UTF-8 BOM is skipped, and bytes that are not
    UTF-8 are kept (as surrogates) for the rows holding them to be rejected rather than ending the read."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig", errors="surrogateescape")
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def _not_text(fields: list[str]) -> bool:
    """Whether a row holds bytes that are not UTF-8 text (or NULs, as binary files do)."""
    return any("\x00" in field or any("\udc80" <= ch <= "\udcff" for ch in field) for field in fields)


def _raw(fields: list[str]) -> bytes:
    """A row as its original bytes, for its dead letter."""
    return ",".join(fields).encode("utf-8", errors="surrogateescape")


def _shown(fields: list[str]) -> str:
    text = ",".join(fields).encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def _rows(handle: TextIO, rejects: Rejects, header_rows: int = 0) -> Iterator[list[str]]:
    """The fields of each readable row; an unreadable one is rejected, or raised (FileFormatError) if it is one
    of the first `header_rows` (which are yielded as they are, text or not, for the caller to judge)."""
    reader = csv.reader(handle)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if reader.line_num <= header_rows:
                raise FileFormatError(f"row {reader.line_num}: {exc}") from exc
            rejects.reject("unreadable_row", f"line {reader.line_num}: {exc}")
            continue
        if reader.line_num > header_rows and _not_text(fields):
            rejects.reject("not_utf8", _raw(fields))
            continue
        yield fields


def trades_columns(header: list[str]) -> dict[str, int]:
    """The position of each column of a trades CSV's header; raises FileFormatError (no path) if it is not one."""
    if _not_text(header):
        raise FileFormatError(f"row 1: not UTF-8 text (a binary file?): {_shown(header)}")
    names = [name.strip().lower() for name in header]
    missing = [name for name in TRADES_CSV_COLUMNS if name not in names]
    if missing:
        expected = ",".join(TRADES_CSV_COLUMNS)
        raise FileFormatError(
            f"row 1: expected a header {expected}[,{TRADE_ID_COLUMN}], "
            f"missing {','.join(missing)}; found {_shown(header)}"
        )
    wanted = (*TRADES_CSV_COLUMNS, TRADE_ID_COLUMN)
    return {name: names.index(name) for name in wanted if name in names}


def _read_header(
    rows: Iterator[list[str]], path: Path, parse: Callable[[list[str]], Columns], expected: str
) -> Columns:
    """The columns of the header, the first of `rows`, as `parse` reads them; raises FileFormatError naming `path`
    (`expected` says what header an empty file lacks)."""
    try:
        header = next(rows, None)
        if header is None:
            raise FileFormatError(f"row 1: the file is empty; expected a header {expected}")
        return parse(header)
    except FileFormatError as exc:
        raise FileFormatError(f"{path}: {exc}") from None


def _whole(text: str) -> int | None:
    """An integer field (also written as a float, e.g. ``1.5e9``); None if it is none or not finite."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _positive(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def parse_trade_row(fields: list[str], columns: Mapping[str, int], now_ms: int, max_future_ms: int) -> TradeRow | str:
    """One row of a trades CSV as price, qty, side, timestamp_ms (and trade_id where the file has them),
    or why it is rejected."""
    if len(fields) <= max(columns.values()):
        return "malformed_row"
    try:
        timestamp_ms = int(fields[columns["time_ms"]])
    except ValueError:
        return "bad_timestamp"
    problem = time_problem(timestamp_ms, now_ms, max_future_ms)
    if problem is not None:
        return problem
    price, qty = _positive(fields[columns["price"]]), _positive(fields[columns["qty"]])
    if price is None or qty is None:
        return "non_positive_or_nan"
    side = _SIDES.get(fields[columns["side"]].strip().lower())
    if side is None:
        return "bad_side"
    parsed = TradeRow(price=price, qty=qty, side=side, timestamp_ms=timestamp_ms)
    if TRADE_ID_COLUMN in columns:
        try:
            trade_id = int(fields[columns[TRADE_ID_COLUMN]])
        except ValueError:
            return "bad_trade_id"
        if not 0 <= trade_id <= MAX_INT64:
            return "bad_trade_id"
        parsed["trade_id"] = trade_id
    return parsed


def check_trades_csv(path: Path) -> None:
    """Raise FileFormatError if `path` is not a trades CSV at all (reads its header only)."""
    try:
        with _open(path) as handle:
            _read_header(_rows(handle, Rejects("check"), header_rows=1), path, trades_columns, _TRADES_HEADER)
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def iter_trades_csv(
    path: Path,
    pair: str,
    rejects: Rejects,
    exchange: str = "kraken",
    now_ms: int | None = None,
    max_future_ms: int = MAX_FUTURE_MS,
) -> Iterator[Trade]:
    """Trades of a CSV with columns time_ms,timestamp,price,qty,side and optionally trade_id (the exchange's).

    Without a trade_id column, a trade's id is its time key (`time_trade_key`, id space ``time``): the same file
    replayed gives the same ids, which the pipeline deduplicates, and a file of later trades is never taken for
    a replay. Times are checked against `now_ms` (default: the clock when reading starts).
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _open(path) as handle:
        rows = _rows(handle, rejects, header_rows=1)
        columns = _read_header(rows, path, trades_columns, _TRADES_HEADER)
        previous_key = None
        for fields in rows:
            parsed = parse_trade_row(fields, columns, now_ms, max_future_ms)
            if isinstance(parsed, str):
                rejects.reject(parsed, _raw(fields))
                continue
            if "trade_id" in parsed:
                yield {"exchange": exchange, "pair": pair, "trade_id": parsed["trade_id"], **parsed}
                continue
            previous_key = time_trade_key(parsed["timestamp_ms"], previous_key)
            yield {"exchange": exchange, "pair": pair, "trade_id": previous_key, "id_space": ID_SPACE_TIME, **parsed}


def read_trades_csv(path: Path, pair: str, rejects: Rejects, exchange: str = "kraken") -> list[Trade]:
    return list(iter_trades_csv(path, pair, rejects, exchange))


def check_ohlcvt_csv(path: Path) -> None:
    """Raise FileFormatError if `path` is not in Kraken's OHLCVT layout at all (reads its first row only)."""
    try:
        with _open(path) as handle:
            try:
                first = next(_rows(handle, Rejects("check"), header_rows=1), None)
            except FileFormatError as exc:
                raise FileFormatError(f"{path}: {exc}") from None
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if first is None:
        raise FileFormatError(f"{path}: the file is empty")
    if _not_text(first):
        raise FileFormatError(f"{path}: row 1: not UTF-8 text (a binary file?): {_shown(first)}")
    if len(first) < len(OHLCVT_COLUMNS) or not _is_number(first[0]):
        raise FileFormatError(
            f"{path}: row 1: expected OHLCVT rows {','.join(OHLCVT_COLUMNS)} (no header); found {_shown(first)}"
        )


def parse_ohlcvt_row(
    fields: list[str], pair: str, interval: str, seconds: int, now_ms: int, max_future_ms: int
) -> Candle | str:
    """One row of an OHLCVT export as a Candle, or why it is rejected."""
    if len(fields) < len(OHLCVT_COLUMNS):
        return "malformed_row"
    start_s = _whole(fields[0])
    if start_s is None:
        return "bad_timestamp"
    start_ms, end_ms = start_s * 1000, (start_s + seconds) * 1000
    problem = time_problem(start_ms, now_ms, max_future_ms) or time_problem(end_ms, now_ms, max_future_ms)
    if problem is not None:
        return problem
    try:
        o, h, lo, c, volume = (float(x) for x in fields[1:6])
    except ValueError:
        return "malformed_row"
    count = _whole(fields[6])
    if count is None or not 0 <= count <= MAX_INT64:
        return "bad_trade_count"
    if not all(math.isfinite(p) and p > 0 for p in (o, h, lo, c)) or not math.isfinite(volume) or volume < 0:
        return "non_positive_or_nan"
    if not (lo <= min(o, c) and h >= max(o, c)):
        return "inconsistent_ohlc"
    return Candle(
        pair=pair,
        interval=interval,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=volume,
        vwap=(h + lo + c) / 3.0,
        trade_count=count,
    )


def iter_ohlcvt_csv(
    path: Path,
    pair: str,
    interval: str,
    seconds: int,
    rejects: Rejects,
    now_ms: int | None = None,
    max_future_ms: int = MAX_FUTURE_MS,
) -> Iterator[Candle]:
    """Candles of Kraken's OHLCVT export (no header: unix,open,high,low,close,volume,trades).

    The first column is the window start in seconds; the vwap is not in the
    export, so the typical price (high+low+close)/3 stands in for it.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _open(path) as handle:
        for fields in _rows(handle, rejects):
            parsed = parse_ohlcvt_row(fields, pair, interval, seconds, now_ms, max_future_ms)
            if isinstance(parsed, str):
                rejects.reject(parsed, _raw(fields))
                continue
            yield parsed


@dataclass(frozen=True)
class SnapshotColumns:
    """Where the fields of an L2 snapshots CSV are: its time, its sequence number, and the (price, size) columns
    of each side's levels, best first; `width` is the number of fields a row needs."""

    timestamp: int
    sequence: int
    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]
    width: int


def _level_columns(names: Mapping[str, int], side: str) -> tuple[tuple[int, int], ...]:
    """The (price, size) columns of a side's levels 1, 2, ... for as long as the header has both."""
    levels: list[tuple[int, int]] = []
    while True:
        level = len(levels) + 1
        price, size = names.get(f"{side}_{level}_price"), names.get(f"{side}_{level}_size")
        if price is None or size is None:
            return tuple(levels)
        levels.append((price, size))


def snapshot_columns(header: list[str]) -> SnapshotColumns:
    """The columns of an L2 snapshots CSV's header (Timestamp, Sequence, Bid_i_Price and Bid_i_Size, Ask_i_Price
    and Ask_i_Size for i = 1..N, any case; other columns such as Bid_i_Trades are ignored); raises
    FileFormatError (no path) if it is not one."""
    if _not_text(header):
        raise FileFormatError(f"row 1: not UTF-8 text (a binary file?): {_shown(header)}")
    names = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [name for name in _SNAPSHOT_REQUIRED if name not in names]
    if missing:
        raise FileFormatError(
            f"row 1: expected a header {_SNAPSHOT_HEADER}, missing {','.join(missing)}; found {_shown(header)}"
        )
    bids, asks = _level_columns(names, "bid"), _level_columns(names, "ask")
    used = [names[SNAPSHOT_TIME_COLUMN], names[SNAPSHOT_SEQUENCE_COLUMN], *(i for level in bids + asks for i in level)]
    return SnapshotColumns(names[SNAPSHOT_TIME_COLUMN], names[SNAPSHOT_SEQUENCE_COLUMN], bids, asks, max(used) + 1)


def iso_time_ms(text: str) -> int | str:
    """Milliseconds since the epoch (UTC) of an ISO time that carries its UTC offset, e.g.
    ``2020-04-11 19:53:03.571342-04:00``, truncated to the millisecond without floats; or why it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return "bad_timestamp"
    if moment.utcoffset() is None:
        return "timestamp_without_offset"  # local time of an unknown zone: no UTC time can be told
    return (moment - _EPOCH) // _MS


def sequence_number(text: str) -> int | None:
    """A feed's sequence number (a non-negative 64-bit integer in plain digits), or None."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_INT64 else None


def snapshot_side(fields: list[str], columns: tuple[tuple[int, int], ...]) -> list[Level] | str:
    """One side's levels of a row, exact and in the file's order, or why one is unusable (see `to_level`; a
    size of zero is no resting order, so a snapshot listing one is refused too)."""
    levels = []
    for price_at, size_at in columns:
        level = to_level(fields[price_at], fields[size_at])
        if isinstance(level, str):
            return level
        if not level[1]:
            return "zero_qty"
        levels.append(level)
    return levels


def crossed(bids: list[Level], asks: list[Level]) -> bool:
    """Whether the best bid is at or above the best ask (levels of both sides, in any order)."""
    return max(price for price, _ in bids) >= min(price for price, _ in asks)


def parse_snapshot_row(
    fields: list[str],
    columns: SnapshotColumns,
    exchange: str,
    product: str,
    previous_ms: int | None,
    now_ms: int,
    max_future_ms: int,
) -> BookFrame | str:
    """One row of an L2 snapshots CSV as a ``snapshot`` frame of the book (levels exact, as written, in plain
    notation; the file's sequence number; no checksum), or why it is rejected. ``previous_ms`` is the time of
    the last row taken: a row stamped before it is refused."""
    if len(fields) < columns.width:
        return "malformed_row"
    timestamp_ms = iso_time_ms(fields[columns.timestamp])
    if isinstance(timestamp_ms, str):
        return timestamp_ms
    problem = time_problem(timestamp_ms, now_ms, max_future_ms)
    if problem is not None:
        return problem
    if previous_ms is not None and timestamp_ms < previous_ms:
        return "timestamp_backwards"
    sequence_num = sequence_number(fields[columns.sequence])
    if sequence_num is None:
        return "bad_sequence"
    bids = snapshot_side(fields, columns.bids)
    if isinstance(bids, str):
        return bids
    asks = snapshot_side(fields, columns.asks)
    if isinstance(asks, str):
        return asks
    if crossed(bids, asks):
        return "crossed_book"
    return BookFrame(
        exchange=exchange,
        product=product,
        kind=FRAME_SNAPSHOT,
        bids=wire_levels(bids),
        asks=wire_levels(asks),
        sequence_num=sequence_num,
        checksum_ok=None,
        timestamp_ms=timestamp_ms,
    )


def check_snapshot_csv(path: Path) -> None:
    """Raise FileFormatError if `path` is not an L2 snapshots CSV at all (reads its header only)."""
    try:
        with _open(path) as handle:
            _read_header(_rows(handle, Rejects("check"), header_rows=1), path, snapshot_columns, _SNAPSHOT_HEADER)
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def iter_snapshot_csv(
    path: Path,
    exchange: str,
    product: str,
    rejects: Rejects,
    now_ms: int | None = None,
    max_future_ms: int = MAX_FUTURE_MS,
) -> Iterator[BookFrame]:
    """The rows of an L2 snapshots CSV (plain or gzip, streamed) as ``snapshot`` frames of one book, in file order.

    The file's sequence numbers are the feed's and need not rise (the bundled file's do not), so they are
    carried, not checked: order is the file's, and a row stamped before the last row taken is rejected. A
    compressed file cut short ends the read with an ``unreadable_file`` reject, the rows before it kept.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _open(path) as handle:
        rows = _rows(handle, rejects, header_rows=1)
        columns = _read_header(rows, path, snapshot_columns, _SNAPSHOT_HEADER)
        previous_ms = None
        try:
            for fields in rows:
                frame = parse_snapshot_row(fields, columns, exchange, product, previous_ms, now_ms, max_future_ms)
                if isinstance(frame, str):
                    rejects.reject(frame, _raw(fields))
                    continue
                previous_ms = frame["timestamp_ms"]
                yield frame
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            rejects.reject("unreadable_file", f"{path}: {exc}")


# Candle files of a universe of tickers, one file a pair: Binance's layout (a header timestamp_ms,open,high,low,
# close,volume; the time is the candle's OPEN, in ms) or Kraken's OHLCVT export (no header; `parse_ohlcvt_row`).
BINANCE_COLUMNS = ("timestamp_ms", "open", "high", "low", "close", "volume")
CANDLE_FRAME_COLUMNS = ("pair", "event_timestamp", "open", "high", "low", "close", "volume")
_BINANCE_HEADER = ",".join(BINANCE_COLUMNS)
# Quote currencies a file name may end its symbol with, tried in order (USDT before USD; no TUSD, which would
# read XBTUSD as XB/TUSD).
_QUOTES = ("USDT", "USDC", "BUSD", "DAI", "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "BTC", "XBT", "ETH")
_KRAKEN_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}  # Kraken's own names of assets that everyone else spells otherwise
_CANDLE_SUFFIXES = (".csv.gz", ".csv")


class FileCandle(TypedDict):
    """One row of a universe candle file: its pair, the time it became known (the candle's close, ms) and OHLCV."""

    pair: str
    timestamp_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def _asset(name: str) -> str:
    return _KRAKEN_ASSETS.get(name, name)


def _symbol_pair(token: str) -> str | None:
    """``ETHUSDT``, ``XBTUSD`` or ``ETH-USDT`` as ``ETH/USDT``, ``BTC/USD``, ``ETH/USDT``; None if it is no symbol."""
    base, dash, quote = token.partition("-")
    if dash:
        ok = base.isalnum() and quote.isalnum() and base.isupper() and quote.isupper()
        return f"{_asset(base)}/{_asset(quote)}" if ok else None
    if not (token.isalnum() and token.isupper()):
        return None
    for quote in _QUOTES:
        if token.endswith(quote) and len(token) > len(quote) and not token[: -len(quote)].isdigit():
            return f"{_asset(token[: -len(quote)])}/{_asset(quote)}"
    return None


def candle_file_pair(path: Path) -> str:
    """The pair a candle file holds, from its name: ``ETHUSDT.csv.gz`` (Binance), ``XBTUSD_1.csv`` (Kraken's
    download) or ``ohlcvt_XBTUSDC_1m_2023Q1.csv`` give ETH/USDT, BTC/USD, BTC/USDC (Kraken's XBT and XDG read as
    BTC and DOGE); raises FileFormatError if the name holds no symbol."""
    stem = path.name
    for suffix in _CANDLE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for token in stem.split("_"):
        pair = _symbol_pair(token)
        if pair is not None:
            return pair
    raise FileFormatError(f"{path}: no pair in the file name (expected e.g. ETHUSDT.csv.gz or XBTUSD_1.csv)")


def candle_files(folder: Path) -> list[Path]:
    """The candle files of a folder (``*.csv`` and ``*.csv.gz``), by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_CANDLE_SUFFIXES))


def binance_columns(header: list[str]) -> dict[str, int]:
    """The position of each column of a Binance candle file's header; raises FileFormatError (no path) if it is
    not one."""
    if _not_text(header):
        raise FileFormatError(f"row 1: not UTF-8 text (a binary file?): {_shown(header)}")
    names = [name.strip().lower() for name in header]
    missing = [name for name in BINANCE_COLUMNS if name not in names]
    if missing:
        raise FileFormatError(
            f"row 1: expected a header {_BINANCE_HEADER} or Kraken OHLCVT rows {','.join(OHLCVT_COLUMNS)}, "
            f"missing {','.join(missing)}; found {_shown(header)}"
        )
    return {name: names.index(name) for name in BINANCE_COLUMNS}


def ohlc_problem(o: float, h: float, lo: float, c: float, volume: float) -> str | None:
    """Why a candle's prices and volume are unusable (the reasons `parse_ohlcvt_row` gives), or None."""
    if not all(math.isfinite(p) and p > 0 for p in (o, h, lo, c)) or not math.isfinite(volume) or volume < 0:
        return "non_positive_or_nan"
    if not (lo <= min(o, c) and h >= max(o, c)):
        return "inconsistent_ohlc"
    return None


def parse_binance_row(
    fields: list[str], columns: Mapping[str, int], pair: str, interval_s: int, now_ms: int, max_future_ms: int
) -> FileCandle | str:
    """One row of a Binance candle file as a FileCandle stamped at its close (open + interval), or why it is
    rejected."""
    if len(fields) <= max(columns.values()):
        return "malformed_row"
    open_ms = _whole(fields[columns["timestamp_ms"]])
    if open_ms is None:
        return "bad_timestamp"
    close_ms = open_ms + interval_s * 1000
    problem = time_problem(open_ms, now_ms, max_future_ms) or time_problem(close_ms, now_ms, max_future_ms)
    if problem is not None:
        return problem
    try:
        o, h, lo, c, volume = (float(fields[columns[name]]) for name in BINANCE_COLUMNS[1:])
    except ValueError:
        return "malformed_row"
    problem = ohlc_problem(o, h, lo, c, volume)
    if problem is not None:
        return problem
    return FileCandle(pair=pair, timestamp_ms=close_ms, open=o, high=h, low=lo, close=c, volume=volume)


def _kraken_candle(fields: list[str], pair: str, interval_s: int, now_ms: int, max_future_ms: int) -> FileCandle | str:
    """One row of a Kraken OHLCVT export as a FileCandle (read by `parse_ohlcvt_row`), or why it is rejected."""
    label = next((name for name, seconds in INTERVALS_SECONDS.items() if seconds == interval_s), f"{interval_s}s")
    candle = parse_ohlcvt_row(fields, pair, label, interval_s, now_ms, max_future_ms)
    if isinstance(candle, str):
        return candle
    return FileCandle(
        pair=pair,
        timestamp_ms=candle["window_end_ms"],
        open=candle["open"],
        high=candle["high"],
        low=candle["low"],
        close=candle["close"],
        volume=candle["volume"],
    )


def check_candle_file(path: Path) -> None:
    """Raise FileFormatError if `path` is no candle file at all: no pair in its name, or neither a Binance header
    nor a Kraken OHLCVT row first (reads its first row only)."""
    candle_file_pair(path)
    try:
        with _open(path) as handle:
            try:
                first = next(_rows(handle, Rejects("check"), header_rows=1), None)
            except FileFormatError as exc:
                raise FileFormatError(f"{path}: {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise FileFormatError(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if first is None:
        raise FileFormatError(f"{path}: the file is empty")
    if not (first and _is_number(first[0]) and len(first) >= len(OHLCVT_COLUMNS)):
        try:
            binance_columns(first)
        except FileFormatError as exc:
            raise FileFormatError(f"{path}: {exc}") from None


def iter_candle_file(
    path: Path,
    interval_s: int,
    rejects: Rejects,
    *,
    now_ms: int | None = None,
    max_future_ms: int = MAX_FUTURE_MS,
) -> Iterator[FileCandle]:
    """The candles of one pair's file (Binance layout or Kraken OHLCVT, told by its first row; plain or gzip,
    streamed) in time order, each stamped at its close. Unusable rows are counted in `rejects` and skipped: bad
    prices (non-positive, not finite, high below low), and a time equal to (``duplicate_time``) or before
    (``timestamp_backwards``) the last one taken; a compressed file cut short ends with ``unreadable_file``."""
    check_candle_file(path)
    pair = candle_file_pair(path)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _open(path) as handle:
        rows = _rows(handle, rejects, header_rows=1)
        first = next(rows)
        columns = None if _is_number(first[0]) else binance_columns(first)
        if columns is None:
            rows = itertools.chain([first], rows)
        last_ms: int | None = None
        try:
            for fields in rows:
                if columns is None:
                    candle = _kraken_candle(fields, pair, interval_s, now_ms, max_future_ms)
                else:
                    candle = parse_binance_row(fields, columns, pair, interval_s, now_ms, max_future_ms)
                if isinstance(candle, dict) and last_ms is not None and candle["timestamp_ms"] <= last_ms:
                    candle = "duplicate_time" if candle["timestamp_ms"] == last_ms else "timestamp_backwards"
                if isinstance(candle, str):
                    rejects.reject(candle, _raw(fields))
                    continue
                last_ms = candle["timestamp_ms"]
                yield candle
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            rejects.reject("unreadable_file", f"{path}: {exc}")


def candle_frame(candles: Iterable[FileCandle]) -> pd.DataFrame:
    """Candles as the universe frame: pair, event_timestamp (UTC, the close), open, high, low, close, volume."""
    frame = pd.DataFrame.from_records(
        list(candles), columns=["pair", "timestamp_ms", "open", "high", "low", "close", "volume"]
    )
    frame.insert(1, "event_timestamp", pd.to_datetime(frame.pop("timestamp_ms").astype("int64"), unit="ms", utc=True))
    prices = list(CANDLE_FRAME_COLUMNS[2:])
    frame[prices] = frame[prices].astype("float64")
    frame["pair"] = frame["pair"].astype(object)
    return frame


def read_candle_file(path: Path, interval_s: int, rejects: Rejects | None = None) -> pd.DataFrame:
    """One pair's candle file (Binance or Kraken OHLCVT layout) as a frame with columns pair (from the file name),
    event_timestamp (UTC, the candle's close: open + interval, when it became known), open, high, low, close,
    volume, in time order; unusable rows are counted in `rejects` and dropped (see `iter_candle_file`)."""
    return candle_frame(iter_candle_file(Path(path), interval_s, rejects or Rejects("candle_file")))


def read_candle_folder(folder: Path, interval_s: int, rejects: Rejects | None = None) -> pd.DataFrame:
    """Every candle file of a folder (`candle_files`, one a pair) as one frame, pair by pair, each in time order."""
    rejects = rejects or Rejects("candle_file")
    frames = [read_candle_file(path, interval_s, rejects) for path in candle_files(Path(folder))]
    return pd.concat(frames, ignore_index=True) if frames else candle_frame([])
