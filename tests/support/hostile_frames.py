"""Hostile frames from an exchange, one of each kind per channel, with the reason each must be rejected for:
nesting past the parser's recursion limit, a 400-digit number, an id past 2**64, a 10 MB malformed frame, a binary
frame that is not UTF-8, a symbol never subscribed. Good frames of the same shapes are built here too.
"""

from __future__ import annotations

import json

KINDS = ("nested", "digits_400", "id_2_64", "ten_mb", "binary", "unsubscribed")
NESTING = 100_000  # far past Python's recursion limit
TEN_MB = 10 * 1024 * 1024
NOT_UTF8 = bytes(range(128, 256)) * 8
HUGE = int("9" * 400)
STAMP = "2026-08-09T21:05:48.100000Z"

KRAKEN_PAIR, KRAKEN_OTHER = "BTC/USD", "DOGE/USD"
COINBASE_PRODUCT, COINBASE_OTHER = "ETH-USD", "BTC-USD"


def kraken_trade(
    trade_id: int, timestamp: str = STAMP, *, symbol: str = KRAKEN_PAIR, price: object = 100.5, qty: object = 0.25
) -> dict:
    return {
        "symbol": symbol,
        "side": "buy",
        "price": price,
        "qty": qty,
        "ord_type": "market",
        "trade_id": trade_id,
        "timestamp": timestamp,
    }


def kraken_trades_frame(*entries: dict) -> str:
    return json.dumps({"channel": "trade", "type": "update", "data": list(entries)})


def kraken_book_frame(*, symbol: str = KRAKEN_PAIR, price: str = "100.5", checksum: int = 1) -> str:
    """A book update written as Kraken writes it (numbers as JSON numbers, ``price`` verbatim)."""
    return (
        f'{{"channel":"book","type":"update","data":[{{"symbol":{json.dumps(symbol)},'
        f'"bids":[{{"price":{price},"qty":1.5}}],"asks":[],"checksum":{checksum},"timestamp":"{STAMP}"}}]}}'
    )


def coinbase_frame(channel: str, events: list, sequence_num: int = 0) -> str:
    return json.dumps(
        {"channel": channel, "client_id": "", "timestamp": STAMP, "sequence_num": sequence_num, "events": events}
    )


def coinbase_l2_event(product: str = COINBASE_PRODUCT, price: str = "100.5") -> dict:
    return {
        "type": "update",
        "product_id": product,
        "updates": [{"side": "bid", "event_time": STAMP, "price_level": price, "new_quantity": "1.5"}],
    }


def coinbase_trade(trade_id: str, time: str = STAMP, *, product: str = COINBASE_PRODUCT, price: str = "100.5") -> dict:
    return {"product_id": product, "trade_id": trade_id, "price": price, "size": "0.25", "time": time, "side": "BUY"}


def _nested(prefix: str) -> str:
    return prefix + "[" * NESTING + "]" * NESTING + "}"


def _ten_mb(prefix: str) -> str:
    return prefix + '["' + "x" * TEN_MB  # never closed: malformed


def _binary(prefix: str) -> bytes:
    return prefix.encode() + NOT_UTF8


def kraken_trade_hostile(kind: str) -> tuple[str | bytes, str]:
    """A hostile ``trade`` frame of one kind, and the reason it must be rejected for."""
    prefix = '{"channel":"trade","type":"update","data":'
    return {
        "nested": (_nested(prefix), "nested_too_deep"),
        "digits_400": (kraken_trades_frame(kraken_trade(7, price=HUGE)), "non_positive_or_nan"),
        "id_2_64": (kraken_trades_frame(kraken_trade(2**64)), "bad_trade_id"),
        "ten_mb": (_ten_mb(prefix), "malformed_json"),
        "binary": (_binary(prefix), "malformed_json"),
        "unsubscribed": (kraken_trades_frame(kraken_trade(8, symbol=KRAKEN_OTHER)), "unsubscribed_symbol"),
    }[kind]


def kraken_book_hostile(kind: str) -> tuple[str | bytes, str]:
    prefix = '{"channel":"book","type":"update","data":'
    return {
        "nested": (_nested(prefix), "nested_too_deep"),
        "digits_400": (kraken_book_frame(price="9" * 400), "out_of_range"),
        "id_2_64": (kraken_book_frame(checksum=2**64), "malformed_checksum"),
        "ten_mb": (_ten_mb(prefix), "malformed_json"),
        "binary": (_binary(prefix), "malformed_json"),
        "unsubscribed": (kraken_book_frame(symbol=KRAKEN_OTHER), "unsubscribed_symbol"),
    }[kind]


def coinbase_l2_hostile(kind: str, sequence_num: int = 0) -> tuple[str | bytes, str]:
    prefix = f'{{"channel":"l2_data","timestamp":"{STAMP}","sequence_num":{sequence_num},"events":'
    return {
        "nested": (_nested(prefix), "nested_too_deep"),
        "digits_400": (coinbase_frame("l2_data", [coinbase_l2_event(price="9" * 400)], sequence_num), "out_of_range"),
        "id_2_64": (coinbase_frame("l2_data", [coinbase_l2_event()], 2**64), "bad_sequence_num"),
        "ten_mb": (_ten_mb(prefix), "malformed_json"),
        "binary": (_binary(prefix), "malformed_json"),
        "unsubscribed": (
            coinbase_frame("l2_data", [coinbase_l2_event(COINBASE_OTHER)], sequence_num),
            "unsubscribed_symbol",
        ),
    }[kind]


def coinbase_trades_hostile(kind: str, sequence_num: int = 0) -> tuple[str | bytes, str]:
    prefix = f'{{"channel":"market_trades","timestamp":"{STAMP}","sequence_num":{sequence_num},"events":'

    def frame(trade: dict) -> str:
        return coinbase_frame("market_trades", [{"type": "update", "trades": [trade]}], sequence_num)

    return {
        "nested": (_nested(prefix), "nested_too_deep"),
        "digits_400": (frame(coinbase_trade("7", price="9" * 400)), "out_of_range"),
        "id_2_64": (frame(coinbase_trade(str(2**64))), "bad_trade_id"),
        "ten_mb": (_ten_mb(prefix), "malformed_json"),
        "binary": (_binary(prefix), "malformed_json"),
        "unsubscribed": (frame(coinbase_trade("8", product=COINBASE_OTHER)), "unsubscribed_symbol"),
    }[kind]
