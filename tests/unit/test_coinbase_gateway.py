"""The Coinbase gateway's pure parts: request bodies, answers to events and fills, error mapping, the REST JWT, and
building a gateway from the settings (the HTTP side is tested against a local server in the integration tests)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coinflow.coinbase_auth import cdp_jwt, rest_uri
from coinflow.settings import Settings
from coinflow.trading.orders import EventKind, Liquidity, OrderRequest, OrderType, Side, TimeInForce
from inference_pipeline.execution.coinbase import (
    Balance,
    CdpAuth,
    CoinbaseGateway,
    balances_of,
    cancel_failure,
    create_event,
    error_reason,
    failure_reason,
    fill_of,
    order_body,
    order_settled,
    read_decimal,
    retry_delay,
    status_event,
    wire_decimal,
)

KEY_NAME = "organizations/org/apiKeys/key"
KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
).decode()
LIMIT = OrderRequest("c-1", "coinbase", "BTC-USD", Side.BUY, OrderType.LIMIT, D("0.015"), D("50000.5"))


def _request(**changes) -> OrderRequest:
    return replace(LIMIT, **changes)


# --- request bodies ----------------------------------------------------------------------------------------------


def test_order_bodies_follow_the_documented_configurations() -> None:
    assert order_body(LIMIT) == {
        "client_order_id": "c-1",
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {
            "limit_limit_gtc": {"base_size": "0.015", "limit_price": "50000.5", "post_only": False}
        },
    }
    post_only = order_body(_request(post_only=True, side=Side.SELL))
    assert post_only["side"] == "SELL"
    assert post_only["order_configuration"]["limit_limit_gtc"]["post_only"] is True
    gtd = order_body(_request(time_in_force=TimeInForce.GTT, expire_ms=1_700_000_000_123))
    assert gtd["order_configuration"] == {
        "limit_limit_gtd": {
            "base_size": "0.015",
            "limit_price": "50000.5",
            "end_time": "2023-11-14T22:13:20.123000Z",
            "post_only": False,
        }
    }
    ioc = order_body(_request(time_in_force=TimeInForce.IOC))
    assert ioc["order_configuration"] == {"sor_limit_ioc": {"base_size": "0.015", "limit_price": "50000.5"}}
    market = order_body(_request(type=OrderType.MARKET, limit_price=None, time_in_force=TimeInForce.IOC))
    assert market["order_configuration"] == {"market_market_ioc": {"base_size": "0.015"}}


def test_decimals_go_on_the_wire_as_plain_strings_and_come_back_only_from_strings() -> None:
    assert wire_decimal(D("1E-8")) == "0.00000001"
    assert wire_decimal(D("2.50E+3")) == "2500"
    assert (
        order_body(_request(quantity=D("1E-8"), product="BTC/USD"))["order_configuration"]["limit_limit_gtc"][
            "base_size"
        ]
        == "0.00000001"
    )
    assert order_body(_request(product="BTC/USD"))["product_id"] == "BTC-USD"
    assert read_decimal("0.10000000") == D("0.10000000")
    for bad in (0.1, 1, D("0.1"), None, "abc", "NaN", "Infinity", ""):
        with pytest.raises(ValueError):
            read_decimal(bad)


# --- answers to events -------------------------------------------------------------------------------------------


def test_a_created_order_is_accepted_with_the_exchanges_id() -> None:
    answer = {
        "success": True,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": "x",
        "success_response": {"order_id": "ex-1", "product_id": "BTC-USD", "side": "BUY", "client_order_id": "c-1"},
    }
    event = create_event("c-1", 200, answer, 7)
    assert event is not None and (event.kind, event.venue_order_id, event.at_ms) == (EventKind.ACCEPTED, "ex-1", 7)
    assert create_event("c-1", 200, {"success": True, "success_response": {}}, 7) is None  # no id: unknown


def _failure(error: str, preview: str, message: str) -> dict:
    return {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "error_response": {
            "error": error,
            "message": message,
            "error_details": "",
            "preview_failure_reason": preview,
            "new_order_failure_reason": error,
        },  # fmt: skip
    }


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (_failure("INSUFFICIENT_FUND", "PREVIEW_INSUFFICIENT_FUND", "Insufficient balance in source account"),
         "INSUFFICIENT_FUND: Insufficient balance in source account"),
        (_failure("INVALID_LIMIT_PRICE_POST_ONLY", "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY", ""),
         "INVALID_LIMIT_PRICE_POST_ONLY"),
        (_failure("UNKNOWN_FAILURE_REASON", "PREVIEW_INVALID_PRODUCT_ID", "bad product"),
         "PREVIEW_INVALID_PRODUCT_ID: bad product"),
        ({"success": False}, "UNKNOWN_FAILURE_REASON"),
    ],
)  # fmt: skip
def test_a_documented_failure_is_rejected_with_its_reason(answer: dict, reason: str) -> None:
    event = create_event("c-1", 200, answer, 7)
    assert event is not None and event.kind == EventKind.REJECTED and event.reason == reason
    assert failure_reason(answer) == reason


def test_a_refused_request_is_rejected_and_an_unclear_answer_leaves_the_order_unknown() -> None:
    bad = {"error": "INVALID_ARGUMENT", "code": 3, "message": "base_size must be a string", "details": []}
    event = create_event("c-1", 400, bad, 7)
    assert event is not None and event.kind == EventKind.REJECTED
    assert event.reason == "HTTP 400 INVALID_ARGUMENT: base_size must be a string"
    unauthorised = create_event("c-1", 401, "Unauthorized\n", 7)
    assert unauthorised is not None and unauthorised.reason == "HTTP 401: Unauthorized"
    for status, body in ((429, {"error": "RESOURCE_EXHAUSTED"}), (500, "oops"), (503, ""), (504, {}), (200, "<html>")):
        assert create_event("c-1", status, body, 7) is None, status


def test_error_reasons_are_redacted_and_short() -> None:
    reason = error_reason(400, {"error": "INVALID_ARGUMENT", "message": "token=s3cr3t " + "x" * 1000})
    assert "s3cr3t" not in reason and "token=***" in reason and len(reason) <= 300


def test_cancel_answers() -> None:
    ok = {"results": [{"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": "ex-1"}]}
    assert cancel_failure(200, ok, "ex-1") is None
    refused = {"results": [{"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": "ex-1"}]}
    assert cancel_failure(200, refused, "ex-1") == "UNKNOWN_CANCEL_ORDER"
    assert cancel_failure(200, ok, "ex-2") == "the answer does not name the order"
    assert cancel_failure(401, "Unauthorized", "ex-1") == "HTTP 401: Unauthorized"


FILL = {
    "entry_id": "e-1",
    "trade_id": "t-1",
    "order_id": "ex-1",
    "trade_time": "2023-11-14T22:13:20.123456Z",
    "trade_type": "FILL",
    "price": "50000.5",
    "size": "0.005",
    "commission": "1.5000150",
    "product_id": "BTC-USD",
    "sequence_timestamp": "2023-11-14T22:13:20.123456Z",
    "liquidity_indicator": "MAKER",
    "size_in_quote": False,
    "user_id": "u",
    "side": "BUY",
}


def test_a_fill_entry_is_a_fill_with_exact_numbers() -> None:
    fill = fill_of(FILL, LIMIT, "coinbase", 9)
    assert (fill.fill_id, fill.client_order_id, fill.venue, fill.product, fill.side) == (
        "e-1", "c-1", "coinbase", "BTC-USD", Side.BUY
    )  # fmt: skip
    assert (fill.price, fill.quantity, fill.fee) == (D("50000.5"), D("0.005"), D("1.5000150"))
    assert (fill.liquidity, fill.exchange_ms, fill.local_ms) == (Liquidity.MAKER, 1_700_000_000_123, 9)
    assert fill_of({**FILL, "entry_id": None}, LIMIT, "coinbase", 9).fill_id == "t-1"
    assert fill_of({**FILL, "liquidity_indicator": "TAKER"}, LIMIT, "coinbase", 9).liquidity == Liquidity.TAKER
    assert fill_of({**FILL, "liquidity_indicator": "UNKNOWN_LIQUIDITY_INDICATOR"}, LIMIT, "c", 9).liquidity == (
        Liquidity.TAKER
    )
    assert fill_of(FILL, _request(product="BTC/USD"), "coinbase", 9).product == "BTC/USD"
    assert (
        fill_of({**FILL, "product_id": "ETH-USD"}, LIMIT, "coinbase", 9).product == "ETH-USD"
    )  # the service refuses it


@pytest.mark.parametrize(
    "change",
    [
        {"entry_id": None, "trade_id": None},
        {"price": 50000.5},
        {"size": "junk"},
        {"commission": None},
        {"liquidity_indicator": "BOTH"},
        {"side": "buy"},
        {"trade_time": "yesterday"},
        {"trade_type": "REVERSAL"},
        {"size_in_quote": True},
        {"product_id": None},
    ],
)
def test_a_fill_entry_that_is_not_a_plain_fill_is_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        fill_of({**FILL, **change}, LIMIT, "coinbase", 9)


def test_an_orders_end_once_its_fills_are_in() -> None:
    record = {"order_id": "ex-1", "status": "CANCELLED", "filled_size": "0.005", "cancel_message": "User requested"}
    assert not order_settled(record, D(0))
    assert order_settled(record, D("0.005"))
    assert not order_settled({**record, "status": "OPEN"}, D("0.005"))
    assert order_settled({**record, "status": "FILLED", "filled_size": "0.015"}, D("0.015"))
    with pytest.raises(ValueError):
        order_settled({**record, "filled_size": 0.005}, D(1))
    cancelled = status_event("c-1", record, accepted=True, now_ms=5)
    assert cancelled is not None and cancelled.kind == EventKind.CANCELLED and cancelled.venue_order_id == "ex-1"
    assert cancelled.reason == "cancelled on the exchange: User requested"
    expired = status_event("c-1", {**record, "status": "EXPIRED"}, accepted=True, now_ms=5)
    assert expired is not None and expired.kind == EventKind.EXPIRED
    failed = {**record, "status": "FAILED", "reject_reason": "HOLD_FAILURE"}
    before, after = (status_event("c-1", failed, accepted=a, now_ms=5) for a in (False, True))
    assert before is not None and (before.kind, before.reason) == (
        EventKind.REJECTED,
        "failed on the exchange: HOLD_FAILURE",
    )
    assert after is not None and after.kind == EventKind.CANCELLED  # an accepted order can no longer be rejected
    for live in ("OPEN", "PENDING", "QUEUED", "CANCEL_QUEUED", "FILLED"):
        assert status_event("c-1", {**record, "status": live}, accepted=True, now_ms=5) is None


def test_balances_per_asset() -> None:
    def account(currency: str, available: str, hold: str) -> dict:
        return {"currency": currency, "available_balance": {"value": available, "currency": currency},
                "hold": {"value": hold, "currency": currency}}  # fmt: skip

    accounts = [account("USD", "100.25", "0.75"), account("BTC", "0.5", "0"), account("USD", "1", "0")]
    assert balances_of(accounts) == {"USD": Balance(D("101.25"), D("0.75")), "BTC": Balance(D("0.5"), D(0))}
    assert balances_of(accounts)["USD"].total == D("102.00")
    for bad in ({"currency": "USD"}, {**account("USD", "1", "0"), "hold": {"value": 0}}, "USD"):
        with pytest.raises(ValueError):
            balances_of([bad])


def test_a_429_waits_its_retry_after_else_backs_off() -> None:
    assert retry_delay("2", 0, 0.5) == 2.0
    assert retry_delay("0", 3, 0.5) == 0.0
    assert [retry_delay(None, attempt, 0.5) for attempt in range(3)] == [0.5, 1.0, 2.0]
    assert retry_delay("Wed, 21 Oct 2015 07:28:00 GMT", 1, 0.5) == 1.0
    assert retry_delay("-1", 0, 0.5) == retry_delay("inf", 0, 0.5) == 0.5


# --- the REST JWT --------------------------------------------------------------------------------------------------


def test_a_rest_jwt_names_its_method_host_and_path() -> None:
    uri = rest_uri("post", "api.coinbase.com", "/api/v3/brokerage/orders")
    assert uri == "POST api.coinbase.com/api/v3/brokerage/orders"
    token = cdp_jwt(KEY_NAME, PEM, 1_700_000_000, uri=uri)
    claims = jwt.decode(
        token, KEY.public_key(), algorithms=["ES256"], options={"verify_exp": False, "verify_nbf": False}
    )
    assert claims == {"iss": "cdp", "sub": KEY_NAME, "nbf": 1_700_000_000, "exp": 1_700_000_120, "uri": uri}
    header = jwt.get_unverified_header(token)
    assert header["kid"] == KEY_NAME and header["alg"] == "ES256" and header["nonce"]
    websocket = jwt.decode(
        cdp_jwt(KEY_NAME, PEM, 1_700_000_000), KEY.public_key(), algorithms=["ES256"], options={"verify_exp": False}
    )
    assert "uri" not in websocket


def test_every_request_gets_a_fresh_jwt_for_its_own_uri() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    clock = iter([1_700_000_000.0, 1_700_000_001.0])
    auth = CdpAuth(KEY_NAME, PEM, lambda: next(clock))
    with httpx.Client(transport=httpx.MockTransport(answer), auth=auth, base_url="https://api.coinbase.com") as client:
        client.post("/api/v3/brokerage/orders", json={})
        client.get("/api/v3/brokerage/orders/historical/fills", params={"order_ids": ["a", "b"]})
    tokens = [r.headers["Authorization"].removeprefix("Bearer ") for r in seen]
    claims = [jwt.decode(t, KEY.public_key(), algorithms=["ES256"], options={"verify_nbf": False, "verify_exp": False})
              for t in tokens]  # fmt: skip
    assert [c["uri"] for c in claims] == [
        "POST api.coinbase.com/api/v3/brokerage/orders",
        "GET api.coinbase.com/api/v3/brokerage/orders/historical/fills",
    ]
    assert [c["nbf"] for c in claims] == [1_700_000_000, 1_700_000_001]
    assert seen[1].url.query == b"order_ids=a&order_ids=b"


# --- from the settings ---------------------------------------------------------------------------------------------


def test_a_gateway_from_the_settings() -> None:
    settings = Settings(_env_file=None).override(
        coinbase_rest_url="https://api.coinbase.com",
        coinbase_api_key=KEY_NAME,
        coinbase_api_secret=PEM,
        trading_gateway_timeout_s=1.5,
    )
    with CoinbaseGateway.from_settings(settings, settle_ms=5_000) as gateway:
        assert gateway.name == "coinbase" and gateway.settle_ms == 5_000
        assert gateway._client.timeout == httpx.Timeout(1.5)
        assert str(gateway._client.base_url) == "https://api.coinbase.com"
    with pytest.raises(ValueError, match="COINFLOW_COINBASE_API_KEY"):
        CoinbaseGateway.from_settings(settings.override(coinbase_api_key=None))
    with pytest.raises(ValueError, match="not a PEM") as raised:
        CoinbaseGateway.from_settings(settings.override(coinbase_api_secret="hunter2"))
    assert "hunter2" not in str(raised.value)
