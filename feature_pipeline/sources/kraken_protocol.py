"""Kraken's public market-data protocols as pure functions: WebSocket v2 and REST Trades.

Client side: `subscribe_request` and `parse_message`, which tells trades, subscribe
acks, heartbeats, status and pongs apart and turns anything else into a reject
reason, whatever the frame holds (a bad entry in a trade batch costs that entry
only). Numbers must fit what the pipeline carries (`checked_level`, ids in a
signed 64-bit integer), or a 400-digit price or a huge id would fail far
downstream, where one frame can stop the stream. Server side (for the
replay server): `parse_request` and the ``format_*`` functions, which write the
v2 shapes. REST: `rest_pair` and `parse_rest_trades`.

Nothing here does I/O or reads the clock; times come in as arguments.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from coinflow.books import Level, OrderBook, to_level
from coinflow.schemas import MAX_INT64, Side, Trade
from coinflow.times import ms_to_rfc3339, rfc3339_to_ms

EXCHANGE = "kraken"
TRADE_CHANNEL = "trade"
BOOK_CHANNEL = "book"
CHECKSUM_LEVELS = 10
SNAPSHOT_SIZE = 50
RATE_LIMIT_ERROR = "EAPI:Rate limit exceeded"
MAX_LEVEL_DIGITS = 40  # significant digits of a book price or quantity; exchanges send fewer than 20
UNSUBSCRIBED = "unsubscribed_symbol"
# What decoding and reading a hostile frame can raise (RecursionError: nesting; OverflowError: huge numbers).
MALFORMED_ERRORS = (RecursionError, ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)

_SIDES: dict[str, Side] = {"buy": "buy", "sell": "sell"}
_REST_SIDES: dict[str, Side] = {"b": "buy", "s": "sell"}
_REST_ASSETS = {"BTC": "XBT", "DOGE": "XDG"}


# --- parsed messages -------------------------------------------------------


@dataclass(frozen=True)
class TradeBatch:
    """A ``trade`` snapshot or update: its good trades and a reason per bad entry."""

    snapshot: bool
    trades: list[Trade]
    rejects: list[tuple[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class BookMessage:
    """A ``book`` snapshot or update of one symbol, with the exchange's checksum of the book after it.

    ``reject`` names why the entry is unusable (a bad level: the book must be rebuilt).
    """

    snapshot: bool
    symbol: str
    bids: list[Level]
    asks: list[Level]
    checksum: int | None
    timestamp_ms: int | None
    reject: str | None = None


@dataclass(frozen=True)
class BookBatch:
    """One ``book`` frame: an entry per symbol."""

    books: list[BookMessage]
    rejects: list[tuple[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SubscribeAck:
    """The answer to a subscribe request, one per symbol."""

    success: bool
    symbol: str | None
    error: str | None = None
    req_id: int | None = None


@dataclass(frozen=True)
class Heartbeat:
    """Sent about once a second on a subscribed connection without other traffic."""


@dataclass(frozen=True)
class Status:
    """The engine status, sent on connect and when it changes (online, maintenance, ...)."""

    system: str
    version: str | None = None


@dataclass(frozen=True)
class Pong:
    req_id: int | None = None


@dataclass(frozen=True)
class Rejected:
    """A frame that is none of the above; ``reason`` names why."""

    reason: str


Message = TradeBatch | BookBatch | SubscribeAck | Heartbeat | Status | Pong | Rejected


@dataclass(frozen=True)
class Request:
    """A client request as the server sees it."""

    method: str
    req_id: int | None = None
    channel: str | None = None
    symbols: tuple[str, ...] = ()
    snapshot: bool = False


@dataclass(frozen=True)
class RestTradesPage:
    """One page of REST trades: the trades, the ``last`` cursor (ns), errors and bad rows."""

    trades: list[Trade]
    last: int | None
    errors: list[str]
    rejects: list[tuple[str, Any]] = field(default_factory=list)


# --- client side -----------------------------------------------------------


def subscribe_request(symbols: Sequence[str], req_id: int, snapshot: bool = True) -> str:
    """The request subscribing one connection to the trades of several symbols."""
    return json.dumps(
        {
            "method": "subscribe",
            "params": {"channel": TRADE_CHANNEL, "symbol": list(symbols), "snapshot": snapshot},
            "req_id": req_id,
        }
    )


def book_request(symbols: Sequence[str], depth: int, req_id: int, *, unsubscribe: bool = False) -> str:
    """The request (un)subscribing the ``book`` of several symbols at ``depth`` levels (snapshot included)."""
    params: dict[str, Any] = {"channel": BOOK_CHANNEL, "symbol": list(symbols), "depth": depth}
    if not unsubscribe:
        params["snapshot"] = True
    return json.dumps({"method": "unsubscribe" if unsubscribe else "subscribe", "params": params, "req_id": req_id})


def checksum_text(book: OrderBook, levels: int = CHECKSUM_LEVELS) -> str:
    """The string Kraken's book checksum is the CRC32 of: top asks (low to high), then top bids (high to low),
    each price and quantity without its decimal point and leading zeros."""
    parts = []
    for side in (book.top_asks(levels), book.top_bids(levels)):
        for price, qty in side:
            parts.append(format(price, "f").replace(".", "").lstrip("0"))
            parts.append(format(qty, "f").replace(".", "").lstrip("0"))
    return "".join(parts)


def book_checksum(book: OrderBook) -> int:
    """Kraken's CRC32 checksum of the top 10 levels of a book (unsigned 32-bit)."""
    return zlib.crc32(checksum_text(book).encode())


def checked_level(price: object, qty: object) -> Level | str:
    """`to_level`, also refusing numbers the pipeline cannot carry: over `MAX_LEVEL_DIGITS` significant digits,
    or not finite (or not non-zero, when non-zero) as a float, which the features are computed in."""
    level = to_level(price, qty)
    if isinstance(level, str):
        return level
    for number in level:
        as_float = float(number)
        if len(number.as_tuple().digits) > MAX_LEVEL_DIGITS or not math.isfinite(as_float) or (number and not as_float):
            return "out_of_range"
    return level


def decode_frame(text: str | bytes, **options: Any) -> tuple[Any, str | None]:
    """A frame's JSON and None, or None and why it has none: malformed, or nested too deep for the parser."""
    try:
        return json.loads(text, **options), None
    except RecursionError:
        return None, "nested_too_deep"
    except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        return None, "malformed_json"


def parse_message(text: str | bytes, symbols: frozenset[str] | None = None) -> Message:
    """What one frame from a Kraken v2 server is (book prices and quantities parsed as exact decimals).

    Never raises: a frame that cannot be read is `Rejected`. Trades and books of symbols outside ``symbols``
    (when given: those subscribed) are rejected entries.
    """
    is_book = (b'"book"' in text) if isinstance(text, bytes) else ('"book"' in text)
    message, error = decode_frame(text, parse_float=Decimal) if is_book else decode_frame(text)
    if error is not None:
        return Rejected(error)
    if not isinstance(message, dict):
        return Rejected("not_an_object")
    try:
        if "channel" in message:
            return _parse_channel_message(message, symbols)
        if "method" in message:
            return _parse_method_response(message)
    except MALFORMED_ERRORS:
        return Rejected("malformed_frame")
    return Rejected("unknown_message")


def _parse_channel_message(message: dict, symbols: frozenset[str] | None) -> Message:
    channel = message["channel"]
    if channel == "heartbeat":
        return Heartbeat()
    if channel == "status":
        data = message.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            return Rejected("malformed_status")
        system = data[0].get("system")
        if not isinstance(system, str):
            return Rejected("malformed_status")
        version = data[0].get("version")
        return Status(system=system, version=version if isinstance(version, str) else None)
    if channel == TRADE_CHANNEL:
        kind, data = message.get("type"), message.get("data")
        if kind not in ("snapshot", "update") or not isinstance(data, list):
            return Rejected("malformed_trade_message")
        trades: list[Trade] = []
        rejects: list[tuple[str, Any]] = []
        for entry in data:
            parsed = parse_trade_entry(entry)
            if isinstance(parsed, str):
                rejects.append((parsed, entry))
            elif symbols is not None and parsed["pair"] not in symbols:
                rejects.append((UNSUBSCRIBED, entry))
            else:
                trades.append(parsed)
        return TradeBatch(snapshot=kind == "snapshot", trades=trades, rejects=rejects)
    if channel == BOOK_CHANNEL:
        kind, data = message.get("type"), message.get("data")
        if kind not in ("snapshot", "update") or not isinstance(data, list):
            return Rejected("malformed_book_message")
        batch = BookBatch(books=[])
        for entry in data:
            book = parse_book_entry(entry, kind == "snapshot")
            if isinstance(book, str):
                batch.rejects.append((book, entry))
            elif symbols is not None and book.symbol not in symbols:
                batch.rejects.append((UNSUBSCRIBED, entry))
            else:
                batch.books.append(book)
        return batch
    return Rejected("unknown_channel")


def parse_book_entry(entry: Any, snapshot: bool) -> BookMessage | str:
    """One symbol's entry of a ``book`` message; a bad level makes it a message with ``reject`` set."""
    if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
        return "malformed_book_entry"
    checksum = entry.get("checksum")
    if not isinstance(checksum, int) or isinstance(checksum, bool):
        return "missing_checksum"
    if not 0 <= checksum <= 0xFFFFFFFF:
        return "malformed_checksum"  # a CRC32 is unsigned 32-bit
    try:
        timestamp_ms = rfc3339_to_ms(entry["timestamp"]) if "timestamp" in entry else None
    except (ValueError, TypeError):
        return "bad_timestamp"
    sides: list[list[Level]] = []
    reject = None
    for name in ("bids", "asks"):
        levels: list[Level] = []
        raw = entry.get(name, [])
        for level in raw if isinstance(raw, list) else [None]:
            parsed = (
                checked_level(level.get("price"), level.get("qty")) if isinstance(level, dict) else "malformed_level"
            )
            if isinstance(parsed, str):
                reject = reject or parsed
            else:
                levels.append(parsed)
        sides.append(levels)
    return BookMessage(snapshot, entry["symbol"], sides[0], sides[1], checksum, timestamp_ms, reject)


def _parse_method_response(message: dict) -> Message:
    method = message["method"]
    req_id = _optional_int(message.get("req_id"))
    if method == "pong":
        return Pong(req_id=req_id)
    if method != "subscribe":
        return Rejected("unknown_method")
    success = message.get("success")
    if not isinstance(success, bool):
        return Rejected("malformed_ack")
    result = message.get("result")
    symbol = result.get("symbol") if isinstance(result, dict) else message.get("symbol")
    error = message.get("error")
    return SubscribeAck(
        success=success,
        symbol=symbol if isinstance(symbol, str) else None,
        error=error if isinstance(error, str) else None,
        req_id=req_id,
    )


def parse_trade_entry(entry: Any) -> Trade | str:
    """A v2 trade entry as a `Trade`, or the reason it is not one."""
    if not isinstance(entry, dict):
        return "malformed_trade_entry"
    if any(key not in entry for key in ("symbol", "side", "price", "qty", "trade_id", "timestamp")):
        return "missing_field"
    symbol = entry["symbol"]
    if not isinstance(symbol, str) or "/" not in symbol:
        return "bad_symbol"
    trade_id = _trade_id(entry["trade_id"])
    if trade_id is None:
        return "bad_trade_id"
    price, qty = _positive(entry["price"]), _positive(entry["qty"])
    if price is None or qty is None:
        return "non_positive_or_nan"
    side = _SIDES.get(entry["side"]) if isinstance(entry["side"], str) else None
    if side is None:
        return "bad_side"
    try:
        timestamp_ms = rfc3339_to_ms(entry["timestamp"])
    except ValueError:
        return "bad_timestamp"
    return Trade(
        exchange=EXCHANGE,
        pair=symbol,
        trade_id=trade_id,
        price=price,
        qty=qty,
        side=side,
        timestamp_ms=timestamp_ms,
    )


def _positive(value: Any) -> float | None:
    """A number (or numeric string) as a finite positive float; None otherwise, too large for a float included."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def checked_id(value: int) -> int | None:
    """An exchange id that the stores and the wire can carry (0 to 2**63 - 1), else None."""
    return value if 0 <= value <= MAX_INT64 else None


def _trade_id(value: Any) -> int | None:
    number = _optional_int(value)
    return None if number is None else checked_id(number)


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- server side -----------------------------------------------------------


def parse_request(text: str | bytes) -> Request | None:
    """A client request, or None when the frame is not a JSON object with a method."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None
    params = message.get("params")
    if not isinstance(params, dict):
        params = {}
    symbols = params.get("symbol")
    channel = params.get("channel")
    return Request(
        method=message["method"],
        req_id=_optional_int(message.get("req_id")),
        channel=channel if isinstance(channel, str) else None,
        symbols=tuple(s for s in symbols if isinstance(s, str)) if isinstance(symbols, list) else (),
        snapshot=params.get("snapshot") is True,
    )


def format_trades(trades: Iterable[Trade], kind: Literal["snapshot", "update"]) -> str:
    """A ``trade`` channel message carrying these trades."""
    data = [
        {
            "symbol": t["pair"],
            "side": t["side"],
            "price": t["price"],
            "qty": t["qty"],
            "ord_type": "market",
            "trade_id": t["trade_id"],
            "timestamp": ms_to_rfc3339(t["timestamp_ms"]),
        }
        for t in trades
    ]
    return json.dumps({"channel": TRADE_CHANNEL, "type": kind, "data": data})


def format_book(
    symbol: str,
    bids: Iterable[Level],
    asks: Iterable[Level],
    checksum: int,
    now_ms: int,
    kind: Literal["snapshot", "update"],
) -> str:
    """A ``book`` channel message for one symbol (exact decimals written as JSON numbers, as Kraken does)."""

    def levels(side: Iterable[Level]) -> str:
        return "[" + ",".join(f'{{"price":{format(p, "f")},"qty":{format(q, "f")}}}' for p, q in side) + "]"

    return (
        f'{{"channel":"book","type":"{kind}","data":[{{"symbol":{json.dumps(symbol)},"bids":{levels(bids)},'
        f'"asks":{levels(asks)},"checksum":{checksum},"timestamp":"{ms_to_rfc3339(now_ms)}"}}]}}'
    )


def format_subscribe_ack(
    symbol: str,
    now_ms: int,
    *,
    error: str | None = None,
    req_id: int | None = None,
    snapshot: bool = True,
) -> str:
    """The answer to a trade subscription of one symbol: success, or ``error``."""
    body: dict[str, Any] = {"method": "subscribe"}
    if error is None:
        body["result"] = {"channel": TRADE_CHANNEL, "snapshot": snapshot, "symbol": symbol}
        body["success"] = True
    else:
        body.update(error=error, success=False, symbol=symbol)
    return _with_times(body, now_ms, req_id)


def format_error(error: str, now_ms: int, method: str | None = None, req_id: int | None = None) -> str:
    """A failed answer to a request the server cannot serve (``method`` unless unreadable)."""
    body: dict[str, Any] = {"error": error}
    if method is not None:
        body["method"] = method
    body["success"] = False
    return _with_times(body, now_ms, req_id)


def format_pong(now_ms: int, req_id: int | None = None) -> str:
    return _with_times({"method": "pong"}, now_ms, req_id)


def format_heartbeat() -> str:
    return json.dumps({"channel": "heartbeat"})


def format_status(system: str = "online", connection_id: int = 0, version: str = "2.0.0") -> str:
    """The ``status`` update a server sends on connect."""
    data = {"api_version": "v2", "connection_id": connection_id, "system": system, "version": version}
    return json.dumps({"channel": "status", "type": "update", "data": [data]})


def _with_times(body: dict[str, Any], now_ms: int, req_id: int | None) -> str:
    if req_id is not None:
        body["req_id"] = req_id
    body["time_in"] = body["time_out"] = ms_to_rfc3339(now_ms)
    return json.dumps(body)


# --- REST ------------------------------------------------------------------


def rest_pair(symbol: str) -> str:
    """The REST pair name of a v2 symbol: ``BTC/USD`` -> ``XBTUSD``, ``ETH/USD`` -> ``ETHUSD``."""
    base, sep, quote = symbol.upper().partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"not a BASE/QUOTE symbol: {symbol!r}")
    return _REST_ASSETS.get(base, base) + _REST_ASSETS.get(quote, quote)


def parse_rest_trades(payload: Mapping[str, Any] | str | bytes, pair: str) -> RestTradesPage:
    """A ``/0/public/Trades`` response as trades of ``pair`` (the v2 symbol).

    Rows are ``[price, volume, time, "b"|"s", "m"|"l", misc, trade_id]``; ``errors``
    lists the response's ``E...`` entries (warnings are left out). Raises
    ValueError when the body is not a Kraken response at all.
    """
    try:
        body = json.loads(payload) if isinstance(payload, str | bytes) else payload
    except RecursionError:
        raise ValueError("Kraken REST response nested too deep to read") from None
    if not isinstance(body, Mapping) or not isinstance(body.get("error", []), list):
        raise ValueError("not a Kraken REST response")
    errors = [str(e) for e in body.get("error", []) if str(e).startswith("E")]
    result = body.get("result")
    if not isinstance(result, Mapping):
        if errors:
            return RestTradesPage(trades=[], last=None, errors=errors)
        raise ValueError("Kraken REST response without a result")
    rows: Any = next((v for k, v in result.items() if k != "last"), [])
    if not isinstance(rows, list):
        raise ValueError("Kraken REST trades are not a list")
    trades: list[Trade] = []
    rejects: list[tuple[str, Any]] = []
    for row in rows:
        parsed = parse_rest_row(row, pair)
        if isinstance(parsed, str):
            rejects.append((parsed, row))
        else:
            trades.append(parsed)
    try:
        last = int(result["last"]) if "last" in result else None
    except (TypeError, ValueError):
        raise ValueError(f"bad REST cursor {result['last']!r}") from None
    return RestTradesPage(trades=trades, last=last, errors=errors, rejects=rejects)


def parse_rest_row(row: Any, pair: str) -> Trade | str:
    """One REST trade row as a `Trade`, or the reason it is not one."""
    if not isinstance(row, list) or len(row) < 7:
        return "malformed_rest_row"
    trade_id = _trade_id(row[6])
    if trade_id is None:
        return "bad_trade_id"
    price, qty = _positive(row[0]), _positive(row[1])
    if price is None or qty is None:
        return "non_positive_or_nan"
    seconds = _positive(row[2])
    if seconds is None:
        return "bad_timestamp"
    side = _REST_SIDES.get(row[3]) if isinstance(row[3], str) else None
    if side is None:
        return "bad_side"
    return Trade(
        exchange=EXCHANGE,
        pair=pair,
        trade_id=trade_id,
        price=price,
        qty=qty,
        side=side,
        timestamp_ms=round(seconds * 1000),
    )
