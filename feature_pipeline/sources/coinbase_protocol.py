"""Coinbase Advanced Trade market data (WebSocket) as pure functions.

Client side: `subscribe_message` (one channel per message, as Coinbase
requires; an optional CDP JWT from `coinflow.coinbase_auth`) and
`parse_message`, which turns a frame into a `Frame`: its connection-wide
``sequence_num``, its time, and what it carries
(level2 book events, market trades, a heartbeat, the subscription state) plus
a reason for every bad part, whatever the frame holds (numbers must fit what
the pipeline carries, see `kraken_protocol.checked_level`). Server side (for
the replay server): `parse_request`, `with_sequence_num`,
`format_subscriptions`, `format_l2_snapshot`.

Nothing here does I/O or reads the clock; times come in as arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coinflow.books import Level, OrderBook
from coinflow.schemas import MAX_INT64, Side, Trade
from coinflow.times import ms_to_rfc3339, rfc3339_to_ms
from feature_pipeline.sources.kraken_protocol import (
    MALFORMED_ERRORS,
    UNSUBSCRIBED,
    checked_id,
    checked_level,
    decode_frame,
)

EXCHANGE = "coinbase"
LEVEL2 = "level2"
MARKET_TRADES = "market_trades"
HEARTBEATS = "heartbeats"
SUBSCRIPTIONS = "subscriptions"
# The channel name a subscription is answered on, where it differs from the subscription's.
DATA_CHANNEL = {LEVEL2: "l2_data"}
_SIDES: dict[str, Side] = {"BUY": "buy", "SELL": "sell"}
_BOOK_SIDES: dict[object, str] = {"bid": "bid", "offer": "ask"}  # looked up by the frame's JSON value
_SEQUENCE = re.compile(r'"sequence_num"\s*:\s*\d+')


# --- parsed messages -------------------------------------------------------


@dataclass(frozen=True)
class BookEvent:
    """A level2 snapshot or update of one product; ``reject`` names why the event is unusable (then the book must resync)."""

    product: str
    snapshot: bool
    bids: list[Level]
    asks: list[Level]
    reject: str | None = None


@dataclass(frozen=True)
class Frame:
    """One frame from the server: the connection's ``sequence_num``, its time, and its content."""

    channel: str
    sequence_num: int
    timestamp_ms: int
    books: list[BookEvent] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    subscriptions: dict[str, list[str]] | None = None
    rejects: list[tuple[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ServerError:
    """An ``error`` message (bad subscription, authentication, rate limit)."""

    message: str


@dataclass(frozen=True)
class Rejected:
    reason: str


Message = Frame | ServerError | Rejected


@dataclass(frozen=True)
class Request:
    """A client request as the server sees it."""

    kind: str
    channel: str | None
    products: tuple[str, ...]


# --- client side -----------------------------------------------------------


def pair_of(product: str) -> str:
    """The exchange-neutral pair of a product: ``ETH-USD`` -> ``ETH/USD``."""
    base, sep, quote = product.partition("-")
    if not sep or not base or not quote:
        raise ValueError(f"not a BASE-QUOTE product: {product!r}")
    return f"{base}/{quote}"


def subscribe_message(
    channel: str, products: Sequence[str], jwt: str | None = None, *, unsubscribe: bool = False
) -> str:
    """A (un)subscribe request for one channel; ``jwt`` when a CDP key is configured."""
    body: dict[str, Any] = {"type": "unsubscribe" if unsubscribe else "subscribe", "channel": channel}
    if channel != HEARTBEATS or products:
        body["product_ids"] = list(products)
    if jwt is not None:
        body["jwt"] = jwt
    return json.dumps(body)


def parse_message(text: str | bytes, products: frozenset[str] | None = None) -> Message:
    """What one frame from the server is; book events and trades of products outside ``products`` are rejected.

    Never raises: a frame that cannot be read is `Rejected`.
    """
    message, error = decode_frame(text)
    if error is not None:
        return Rejected(error)
    if not isinstance(message, dict):
        return Rejected("not_an_object")
    try:
        return _parse_object(message, products)
    except MALFORMED_ERRORS:
        return Rejected("malformed_frame")


def _parse_object(message: dict, products: frozenset[str] | None) -> Message:
    if message.get("type") == "error":
        return ServerError(str(message.get("message", "")))
    channel, events = message.get("channel"), message.get("events")
    if not isinstance(channel, str) or not isinstance(events, list):
        return Rejected("malformed_frame")
    sequence_num = message.get("sequence_num")
    if not isinstance(sequence_num, int) or isinstance(sequence_num, bool):
        return Rejected("missing_sequence_num")
    if checked_id(sequence_num) is None:
        return Rejected("bad_sequence_num")
    try:
        timestamp_ms = rfc3339_to_ms(message.get("timestamp"))
    except (ValueError, TypeError):
        return Rejected("bad_timestamp")
    frame = Frame(channel, sequence_num, timestamp_ms)
    if channel == DATA_CHANNEL[LEVEL2]:
        for event in events:
            _parse_book_event(event, products, frame)
    elif channel == MARKET_TRADES:
        for event in events:
            _parse_trades_event(event, products, frame)
    elif channel == SUBSCRIPTIONS:
        subscriptions = events[0].get("subscriptions") if events and isinstance(events[0], dict) else None
        if not isinstance(subscriptions, dict):
            return Rejected("malformed_subscriptions")
        return Frame(
            channel,
            sequence_num,
            timestamp_ms,
            subscriptions={
                k: [p for p in v if isinstance(p, str)] for k, v in subscriptions.items() if isinstance(v, list)
            },
        )
    elif channel != HEARTBEATS:
        frame.rejects.append(("unknown_channel", channel))
    return frame


def _parse_book_event(event: Any, products: frozenset[str] | None, frame: Frame) -> None:
    if not isinstance(event, dict) or event.get("type") not in ("snapshot", "update"):
        frame.rejects.append(("malformed_book_event", event))
        return
    product, updates = event.get("product_id"), event.get("updates")
    if not isinstance(product, str) or not isinstance(updates, list):
        frame.rejects.append(("malformed_book_event", event))
        return
    if products is not None and product not in products:
        frame.rejects.append((UNSUBSCRIBED, event))
        return
    bids: list[Level] = []
    asks: list[Level] = []
    reject = None
    for update in updates:
        side = _BOOK_SIDES.get(update.get("side")) if isinstance(update, dict) else None
        level = checked_level(update.get("price_level"), update.get("new_quantity")) if side else "malformed_level"
        if isinstance(level, str):
            reject = level
            frame.rejects.append((level, update))
            break
        (bids if side == "bid" else asks).append(level)
    frame.books.append(BookEvent(product, event["type"] == "snapshot", bids, asks, reject))


def _parse_trades_event(event: Any, products: frozenset[str] | None, frame: Frame) -> None:
    trades = event.get("trades") if isinstance(event, dict) else None
    if not isinstance(trades, list):
        frame.rejects.append(("malformed_trades_event", event))
        return
    parsed = []
    for entry in trades:
        trade = parse_trade(entry)
        if isinstance(trade, str):
            frame.rejects.append((trade, entry))
        elif products is not None and entry["product_id"] not in products:
            frame.rejects.append((UNSUBSCRIBED, entry))
        else:
            parsed.append(trade)
    # Snapshots list the newest trade first; downstream expects each exchange's ids in order.
    frame.trades.extend(sorted(parsed, key=lambda t: t["trade_id"]))


def parse_trade(entry: Any) -> Trade | str:
    """A ``market_trades`` entry as a `Trade` (pair in BASE/QUOTE form), or the reason it is not one."""
    if not isinstance(entry, dict):
        return "malformed_trade_entry"
    if any(key not in entry for key in ("product_id", "trade_id", "price", "size", "time", "side")):
        return "missing_field"
    try:
        pair = pair_of(entry["product_id"])
    except (ValueError, AttributeError):
        return "bad_product"
    trade_id = _trade_id(entry["trade_id"])
    if trade_id is None:
        return "bad_trade_id"
    level = checked_level(entry["price"], entry["size"])
    if isinstance(level, str) or not level[1]:
        return level if isinstance(level, str) else "zero_size"
    side = _SIDES.get(entry["side"]) if isinstance(entry["side"], str) else None
    if side is None:
        return "bad_side"
    try:
        timestamp_ms = rfc3339_to_ms(entry["time"])
    except (ValueError, TypeError):
        return "bad_timestamp"
    return Trade(
        exchange=EXCHANGE,
        pair=pair,
        trade_id=trade_id,
        price=float(level[0]),
        qty=float(level[1]),
        side=side,
        timestamp_ms=timestamp_ms,
    )


def _trade_id(value: Any) -> int | None:
    """Coinbase's trade id (a decimal string, or an int) within int64; None otherwise."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= len(str(MAX_INT64))):
            return None
        value = int(value)
    return checked_id(value) if isinstance(value, int) and not isinstance(value, bool) else None


# --- server side -----------------------------------------------------------


def parse_request(text: str | bytes) -> Request | None:
    """A client (un)subscribe request, or None when the frame is not one."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or message.get("type") not in ("subscribe", "unsubscribe"):
        return None
    products = message.get("product_ids")
    channel = message.get("channel")
    return Request(
        kind=message["type"],
        channel=channel if isinstance(channel, str) else None,
        products=tuple(p for p in products if isinstance(p, str)) if isinstance(products, list) else (),
    )


def frame_channel(text: str) -> str | None:
    """The channel of a recorded frame (None when it has none)."""
    try:
        channel = json.loads(text).get("channel")
    except (ValueError, AttributeError):
        return None
    return channel if isinstance(channel, str) else None


def frame_products(message: Mapping[str, Any]) -> set[str]:
    """The products a decoded frame concerns (empty for connection-wide ones such as heartbeats)."""
    products: set[str] = set()
    for event in message.get("events", []):
        if not isinstance(event, dict):
            continue
        if isinstance(event.get("product_id"), str):
            products.add(event["product_id"])
        for key in ("trades", "tickers", "candles"):
            for item in event.get(key, []) or []:
                if isinstance(item, dict) and isinstance(item.get("product_id"), str):
                    products.add(item["product_id"])
    return products


def with_sequence_num(text: str, sequence_num: int) -> str:
    """A recorded frame, byte for byte, with the connection's own ``sequence_num``."""
    return _SEQUENCE.sub(f'"sequence_num":{sequence_num}', text, count=1)


def format_subscriptions(subscriptions: Mapping[str, Iterable[str]], sequence_num: int, now_ms: int) -> str:
    """The ``subscriptions`` message answering every (un)subscribe: the connection's subscriptions now."""
    state = {channel: sorted(products) for channel, products in subscriptions.items() if products}
    return json.dumps(
        {
            "channel": SUBSCRIPTIONS,
            "client_id": "",
            "timestamp": _ns_time(now_ms),
            "sequence_num": sequence_num,
            "events": [{"subscriptions": state}],
        }
    )


def format_l2_snapshot(product: str, book: OrderBook, sequence_num: int, now_ms: int) -> str:
    """An ``l2_data`` snapshot of a whole book (bids best first, then offers best first)."""
    stamp = ms_to_rfc3339(now_ms)
    updates = [
        {"side": "bid", "event_time": stamp, "price_level": format(p, "f"), "new_quantity": format(q, "f")}
        for p, q in book.top_bids(len(book.bids))
    ]
    updates += [
        {"side": "offer", "event_time": stamp, "price_level": format(p, "f"), "new_quantity": format(q, "f")}
        for p, q in book.top_asks(len(book.asks))
    ]
    return json.dumps(
        {
            "channel": DATA_CHANNEL[LEVEL2],
            "client_id": "",
            "timestamp": _ns_time(now_ms),
            "sequence_num": sequence_num,
            "events": [{"type": "snapshot", "product_id": product, "updates": updates}],
        }
    )


def _ns_time(now_ms: int) -> str:
    return ms_to_rfc3339(now_ms)[:-1] + "000Z"
