"""Kraken v2 and REST parsing on real-shaped messages, and the server-side formats."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from coinflow.times import ms_to_rfc3339, rfc3339_to_ms
from feature_pipeline.sources.kraken_protocol import (
    Heartbeat,
    Pong,
    Rejected,
    Request,
    Status,
    SubscribeAck,
    TradeBatch,
    book_request,
    format_error,
    format_heartbeat,
    format_pong,
    format_status,
    format_subscribe_ack,
    format_trades,
    parse_message,
    parse_request,
    parse_rest_trades,
    rest_pair,
    subscribe_request,
)

SNAPSHOT = """{
    "channel": "trade",
    "type": "snapshot",
    "data": [
        {"symbol": "MATIC/USD", "side": "buy", "price": 0.5147, "qty": 6423.46326,
         "ord_type": "limit", "trade_id": 4665846, "timestamp": "2023-09-25T07:48:36.925533Z"},
        {"symbol": "MATIC/USD", "side": "buy", "price": 0.5147, "qty": 1136.19677815,
         "ord_type": "limit", "trade_id": 4665847, "timestamp": "2023-09-25T07:49:36.925603Z"}
    ]
}"""

UPDATE = """{"channel": "trade", "type": "update", "data": [
    {"symbol": "MATIC/USD", "side": "sell", "price": 0.5117, "qty": 40.0, "ord_type": "market",
     "trade_id": 4665906, "timestamp": "2023-09-25T07:49:37.708706Z"}]}"""

ACK_OK = """{"method": "subscribe", "result": {"channel": "trade", "snapshot": true, "symbol": "MATIC/USD"},
    "success": true, "time_in": "2023-09-25T09:04:31.742599Z", "time_out": "2023-09-25T09:04:31.742648Z",
    "req_id": 7}"""

ACK_ERROR = """{"error": "Currency pair not supported XYZ/USD", "method": "subscribe", "success": false,
    "symbol": "XYZ/USD", "time_in": "2023-09-25T09:04:31.742599Z", "time_out": "2023-09-25T09:04:31.742648Z"}"""

STATUS = """{"channel": "status", "type": "update", "data": [{"api_version": "v2",
    "connection_id": 12393906104898154338, "system": "online", "version": "2.0.0"}]}"""

TS_MS = 1695628116925  # 2023-09-25T07:48:36.925Z


def test_trade_snapshot_and_update_become_trades() -> None:
    snapshot = parse_message(SNAPSHOT)
    assert isinstance(snapshot, TradeBatch)
    assert snapshot.snapshot is True
    assert snapshot.rejects == []
    assert snapshot.trades[0] == {
        "exchange": "kraken",
        "pair": "MATIC/USD",
        "trade_id": 4665846,
        "price": 0.5147,
        "qty": 6423.46326,
        "side": "buy",
        "timestamp_ms": TS_MS,
    }
    assert [t["trade_id"] for t in snapshot.trades] == [4665846, 4665847]
    assert snapshot.trades[1]["timestamp_ms"] == TS_MS + 60_000

    update = parse_message(UPDATE)
    assert isinstance(update, TradeBatch) and update.snapshot is False
    assert [(t["side"], t["price"], t["qty"]) for t in update.trades] == [("sell", 0.5117, 40.0)]


def test_acks_heartbeat_status_and_pong() -> None:
    assert parse_message(ACK_OK) == SubscribeAck(success=True, symbol="MATIC/USD", error=None, req_id=7)
    assert parse_message(ACK_ERROR) == SubscribeAck(
        success=False, symbol="XYZ/USD", error="Currency pair not supported XYZ/USD"
    )
    assert parse_message('{"channel": "heartbeat"}') == Heartbeat()
    assert parse_message(STATUS) == Status(system="online", version="2.0.0")
    maintenance = STATUS.replace('"online"', '"maintenance"')
    assert parse_message(maintenance) == Status(system="maintenance", version="2.0.0")
    assert parse_message('{"method": "pong", "req_id": 101}') == Pong(req_id=101)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"channel": "trade", "type": "update", "data": [', "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        ("[1, 2, 3]", "not_an_object"),
        ('{"channel": "ohlc", "type": "update", "data": []}', "unknown_channel"),
        ('{"method": "add_order", "success": true}', "unknown_method"),
        ('{"hello": "world"}', "unknown_message"),
        ('{"channel": "trade", "type": "delta", "data": []}', "malformed_trade_message"),
        ('{"channel": "trade", "type": "update", "data": {}}', "malformed_trade_message"),
        ('{"channel": "status", "type": "update", "data": []}', "malformed_status"),
        ('{"method": "subscribe", "result": {}}', "malformed_ack"),
    ],
)
def test_anything_else_is_a_reject_reason(frame: str | bytes, reason: str) -> None:
    assert parse_message(frame) == Rejected(reason)


def _entry(**changes: object) -> dict:
    entry = {
        "symbol": "BTC/USD",
        "side": "buy",
        "price": 26000.5,
        "qty": 0.01,
        "ord_type": "market",
        "trade_id": 1,
        "timestamp": "2023-09-25T07:48:36.925533Z",
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not _DROP}


_DROP = object()


def test_one_bad_entry_among_good_ones_costs_only_itself() -> None:
    bad = [
        ("missing_field", _entry(price=_DROP)),
        ("non_positive_or_nan", _entry(price=-1.0)),
        ("non_positive_or_nan", _entry(qty=0)),
        ("non_positive_or_nan", _entry(price=math.nan)),
        ("non_positive_or_nan", _entry(qty="lots")),
        ("bad_trade_id", _entry(trade_id="abc")),
        ("bad_trade_id", _entry(trade_id=True)),
        ("bad_side", _entry(side="hold")),
        ("bad_timestamp", _entry(timestamp="yesterday")),
        ("bad_timestamp", _entry(timestamp="2023-09-25T07:48:36")),  # no offset
        ("bad_symbol", _entry(symbol="BTCUSD")),
        ("malformed_trade_entry", "not a dict"),
    ]
    data = [_entry(trade_id=100)]
    for i, (_, entry) in enumerate(bad):
        data.append(entry)
        data.append(_entry(trade_id=101 + i))
    frame = json.dumps({"channel": "trade", "type": "update", "data": data})  # NaN -> JSON NaN literal

    batch = parse_message(frame)

    assert isinstance(batch, TradeBatch)
    assert [t["trade_id"] for t in batch.trades] == list(range(100, 101 + len(bad)))
    assert [reason for reason, _ in batch.rejects] == [reason for reason, _ in bad]
    assert batch.rejects[1][1]["price"] == -1.0  # the raw entry travels with its reason


def test_subscribe_request_covers_all_pairs_on_one_connection() -> None:
    request = json.loads(subscribe_request(["BTC/USD", "ETH/USD"], req_id=3))
    assert request == {
        "method": "subscribe",
        "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": True},
        "req_id": 3,
    }
    assert parse_request(json.dumps(request)) == Request(
        method="subscribe", req_id=3, channel="trade", symbols=("BTC/USD", "ETH/USD"), snapshot=True
    )
    assert parse_request("not json") is None
    assert parse_request('{"params": {}}') is None


def test_server_formats_round_trip_through_the_client_parser() -> None:
    trades = parse_message(SNAPSHOT).trades  # type: ignore[union-attr]
    for kind in ("snapshot", "update"):
        text = format_trades(trades, kind)  # type: ignore[arg-type]
        body = json.loads(text)
        assert body["channel"] == "trade" and body["type"] == kind
        assert set(body["data"][0]) == {"symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp"}
        assert body["data"][0]["timestamp"] == "2023-09-25T07:48:36.925000Z"
        assert parse_message(text) == TradeBatch(snapshot=kind == "snapshot", trades=trades)

    ok = json.loads(format_subscribe_ack("BTC/USD", TS_MS, req_id=4))
    assert ok["result"] == {"channel": "trade", "snapshot": True, "symbol": "BTC/USD"}
    assert ok["success"] is True and ok["req_id"] == 4 and ok["time_in"].endswith("Z")
    assert parse_message(json.dumps(ok)) == SubscribeAck(True, "BTC/USD", None, 4)
    failed = format_subscribe_ack("XYZ/USD", TS_MS, error="Currency pair not supported XYZ/USD")
    assert parse_message(failed) == SubscribeAck(False, "XYZ/USD", "Currency pair not supported XYZ/USD")

    assert json.loads(format_heartbeat()) == {"channel": "heartbeat"}
    assert parse_message(format_heartbeat()) == Heartbeat()
    status = json.loads(format_status(connection_id=9))
    assert status == {
        "channel": "status",
        "type": "update",
        "data": [{"api_version": "v2", "connection_id": 9, "system": "online", "version": "2.0.0"}],
    }
    assert parse_message(format_pong(TS_MS, req_id=5)) == Pong(req_id=5)
    error = json.loads(format_error("Method not found: foo", TS_MS, method="foo", req_id=2))
    assert error["success"] is False and error["method"] == "foo" and error["req_id"] == 2
    assert parse_message(json.dumps(error)) == Rejected("unknown_method")


def test_rfc3339_times() -> None:
    assert rfc3339_to_ms("2023-09-25T07:48:36.925533Z") == TS_MS
    assert rfc3339_to_ms("2023-09-25T09:48:36.925+02:00") == TS_MS
    assert rfc3339_to_ms("2023-09-25T07:48:36.925533123Z") == TS_MS  # nanoseconds
    assert ms_to_rfc3339(TS_MS) == "2023-09-25T07:48:36.925000Z"
    assert rfc3339_to_ms(ms_to_rfc3339(1561939203172)) == 1561939203172
    for bad in ("2023-09-25", "2023-09-25T07:48:36", "soon"):
        with pytest.raises(ValueError):
            rfc3339_to_ms(bad)


@pytest.mark.parametrize(
    ("symbol", "rest"),
    [("BTC/USD", "XBTUSD"), ("ETH/USD", "ETHUSD"), ("ETH/BTC", "ETHXBT"), ("SOL/EUR", "SOLEUR"), ("btc/eur", "XBTEUR")],
)
def test_rest_pair_names(symbol: str, rest: str) -> None:
    assert rest_pair(symbol) == rest


def test_rest_pair_refuses_a_non_symbol() -> None:
    with pytest.raises(ValueError):
        rest_pair("BTCUSD")


def test_rest_trades_response() -> None:
    body = {
        "error": [],
        "result": {
            "XXBTZUSD": [
                ["30243.40000", "0.34507674", 1688669597.8277369, "b", "m", "", 61044952],
                ["30243.30000", "0.00376160", 1688669598.2804112, "s", "l", "", 61044953],
                ["-1", "0.1", 1688669598.3, "s", "l", "", 61044954],
                ["30243.30000", "0.1", 1688669598.3, "x", "l", "", 61044955],
                ["30243.30000", "0.1", 1688669598.3, "s", "l", ""],
            ],
            "last": "1688669598280411177",
        },
    }
    page = parse_rest_trades(json.dumps(body), "BTC/USD")
    assert page.errors == []
    assert page.last == 1688669598280411177
    assert page.trades == [
        {
            "exchange": "kraken",
            "pair": "BTC/USD",
            "trade_id": 61044952,
            "price": 30243.4,
            "qty": 0.34507674,
            "side": "buy",
            "timestamp_ms": 1688669597828,
        },
        {
            "exchange": "kraken",
            "pair": "BTC/USD",
            "trade_id": 61044953,
            "price": 30243.3,
            "qty": 0.0037616,
            "side": "sell",
            "timestamp_ms": 1688669598280,
        },
    ]
    assert [reason for reason, _ in page.rejects] == ["non_positive_or_nan", "bad_side", "malformed_rest_row"]


def test_rest_error_list_is_surfaced() -> None:
    limited = parse_rest_trades('{"error": ["EAPI:Rate limit exceeded"]}', "BTC/USD")
    assert limited.errors == ["EAPI:Rate limit exceeded"] and limited.trades == [] and limited.last is None
    unknown = parse_rest_trades({"error": ["EQuery:Unknown asset pair"], "result": {}}, "FOO/USD")
    assert unknown.errors == ["EQuery:Unknown asset pair"]
    warned = parse_rest_trades({"error": ["WGeneral:Deprecated"], "result": {"XXBTZUSD": [], "last": "5"}}, "BTC/USD")
    assert warned.errors == [] and warned.last == 5
    with pytest.raises(ValueError):
        parse_rest_trades("<html>Bad gateway</html>", "BTC/USD")
    with pytest.raises(ValueError):
        parse_rest_trades({"error": []}, "BTC/USD")


def test_book_messages_keep_exact_decimals_and_name_bad_levels():
    text = (
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":45283.50,"qty":0.10000000}],'
        '"asks":[],"checksum":123,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
    )
    batch = parse_message(text)
    (book,) = batch.books
    assert book.bids == [(Decimal("45283.50"), Decimal("0.10000000"))] and book.checksum == 123 and not book.snapshot
    assert book.timestamp_ms == 1696613755440 and book.reject is None
    bad = parse_message(text.replace('"qty":0.10000000', '"qty":-1'))
    assert bad.books[0].reject == "negative_qty"
    assert parse_message(text.replace(',"checksum":123', "")).rejects[0][0] == "missing_checksum"
    assert json.loads(book_request(["BTC/USD"], 25, req_id=3))["params"] == {
        "channel": "book",
        "symbol": ["BTC/USD"],
        "depth": 25,
        "snapshot": True,
    }
