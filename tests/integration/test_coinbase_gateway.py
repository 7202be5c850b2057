"""The Coinbase gateway over real HTTP against the local Advanced Trade server (`tests.support.coinbase_trading_mock`),
which verifies every request's JWT with the public key of a key made here: fills fold to the right orders, fees and
liquidity; refusals are rejected with their reason; a rate limit is waited out; a timeout leaves the order unknown
until the exchange is asked; a fill listed twice is one fill; a bad JWT is refused."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coinflow.coinbase_auth import cdp_jwt, rest_uri
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import (
    EventKind,
    Liquidity,
    Order,
    OrderEvent,
    OrderRequest,
    OrderType,
    Side,
    Status,
    TimeInForce,
    apply_event,
)
from inference_pipeline.execution.coinbase import NEVER_RECEIVED, Balance, CoinbaseGateway, GatewayError
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService, Quote
from inference_pipeline.execution.store import TradingStore, connect
from tests.support.coinbase_trading_mock import CoinbaseTradingMock
from tests.support.ports import running

KEY_NAME = "organizations/org-1/apiKeys/key-1"
PRODUCT = "BTC-USD"
FEES = FeeSchedule(maker=D("0.004"), taker=D("0.008"))  # not the defaults: the fees must come from the exchange


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


@dataclass
class Exchange:
    mock: CoinbaseTradingMock
    url: str
    pem: str

    def gateway(self, **options: Any) -> CoinbaseGateway:
        return CoinbaseGateway(self.url, KEY_NAME, options.pop("pem", self.pem), **{"timeout_s": 5.0, **options})

    def uri(self, method: str, path: str) -> str:
        return rest_uri(method, httpx.URL(self.url).netloc.decode(), path)


def _exchange(**options: Any) -> Iterator[Exchange]:
    key = ec.generate_private_key(ec.SECP256R1())
    options = {"balances": {"USD": "10000", "BTC": "1"}, "quotes": {PRODUCT: ("50000", "50010")}, "fees": FEES,
               **options}  # fmt: skip
    mock = CoinbaseTradingMock(KEY_NAME, key.public_key(), **options)
    with running(mock.app) as url:
        yield Exchange(mock, url, _pem(key))


@pytest.fixture
def exchange() -> Iterator[Exchange]:
    yield from _exchange(page_size=2)  # small pages: every listing is read across its cursor


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def limit(name: str, quantity: str, price: str, side: Side = Side.BUY, **fields: Any) -> OrderRequest:
    return OrderRequest(name, "coinbase", PRODUCT, side, OrderType.LIMIT, D(quantity), D(price), **fields)


def market(name: str, quantity: str, side: Side = Side.BUY) -> OrderRequest:
    return OrderRequest(name, "coinbase", PRODUCT, side, OrderType.MARKET, D(quantity), None, TimeInForce.IOC)


def fold(order: Order, events: Iterable[OrderEvent]) -> Order:
    for event in events:
        order = apply_event(order, event)
    return order


def kinds(events: Iterable[OrderEvent]) -> list[EventKind]:
    return [e.kind for e in events]


def test_a_limit_order_is_accepted_then_filled_in_parts_with_the_exchanges_fees_and_liquidity(exchange) -> None:
    request = limit("buy-1", "0.1", "49000")
    with exchange.gateway() as gateway:
        gateway.submit(request, now_ms())
        accepted = gateway.advance(now_ms())
        assert kinds(accepted) == [EventKind.ACCEPTED]
        venue_order_id = exchange.mock.order_of("buy-1").order_id
        assert accepted[0].venue_order_id == venue_order_id
        order = fold(Order(request), accepted)
        assert order.status == Status.OPEN and gateway.open_orders() == ["buy-1"]

        made = exchange.mock.fill("buy-1", "49000", "0.04", "MAKER")
        learnt_ms = now_ms()
        first = gateway.advance(learnt_ms)
        assert kinds(first) == [EventKind.FILL] and gateway.advance(now_ms()) == []  # each fill once
        order = fold(order, first)
        assert order.status == Status.PARTIALLY_FILLED and order.filled == D("0.04")
        fill = first[0].fill
        assert fill is not None
        assert (fill.fill_id, fill.price, fill.quantity, fill.liquidity) == (made.entry_id, D("49000"), D("0.04"),
                                                                            Liquidity.MAKER)  # fmt: skip
        assert fill.fee == D("49000") * D("0.04") * FEES.maker == made.commission
        assert (fill.exchange_ms, fill.local_ms) == (made.trade_ms, learnt_ms)

        taken = []
        for price, size in (("48990", "0.05"), ("48980", "0.01")):
            taken.append(exchange.mock.fill("buy-1", price, size, "TAKER"))
            time.sleep(0.002)  # a ms apart: fills of one ms are in the order of their ids
        rest = gateway.advance(now_ms())
        assert [e.fill.fill_id for e in rest if e.fill] == [t.entry_id for t in taken]  # oldest first
        order = fold(order, rest)
        assert order.status == Status.FILLED and order.filled == D("0.1")
        assert order.fees == made.commission + sum(t.commission for t in taken)
        assert order.fees == D("49000") * D("0.04") * D("0.004") + (
            D("48990") * D("0.05") + D("48980") * D("0.01")
        ) * D("0.008")
        assert [e.fill.liquidity for e in rest if e.fill] == [Liquidity.TAKER, Liquidity.TAKER]
        assert order.venue_order_id == venue_order_id
        assert gateway.advance(now_ms()) == [] and gateway.open_orders() == []
        assert gateway.balances()["BTC"] == Balance(D("1.1"), D(0))
        assert gateway.balances()["USD"].available == D(10000) - order.filled_notional - order.fees


def test_a_market_order_fills_at_once_as_a_taker(exchange) -> None:
    request = market("mkt-1", "0.02")
    with exchange.gateway() as gateway:
        gateway.submit(request, now_ms())
        events = gateway.advance(now_ms())
        assert kinds(events) == [EventKind.ACCEPTED, EventKind.FILL]
        order = fold(Order(request), events)
        assert order.status == Status.FILLED and order.average_price == D("50010")
        assert order.fees == D("50010") * D("0.02") * FEES.taker
        assert events[1].fill is not None and events[1].fill.liquidity == Liquidity.TAKER
        assert gateway.advance(now_ms()) == [] and gateway.open_orders() == []
    body = exchange.mock.order_of("mkt-1").configuration
    assert body == {"market_market_ioc": {"base_size": "0.02"}}


def test_a_cancel_ends_the_order_after_its_fills(exchange) -> None:
    request = limit("buy-2", "0.1", "49000")
    with exchange.gateway() as gateway:
        gateway.submit(request, now_ms())
        order = fold(Order(request), gateway.advance(now_ms()))
        exchange.mock.fill("buy-2", "49000", "0.03")
        gateway.cancel("buy-2", now_ms())
        assert exchange.mock.order_of("buy-2").status == "CANCELLED"
        events = gateway.advance(now_ms())
        assert kinds(events) == [EventKind.FILL, EventKind.CANCELLED]
        order = fold(order, events)
        assert order.status == Status.CANCELLED and order.filled == D("0.03")
        assert gateway.advance(now_ms()) == [] and gateway.open_orders() == []
        assert gateway.balances()["USD"].hold == 0  # what the order held is free again
    assert [s.path for s in exchange.mock.seen if s.method == "POST"][-1] == "/api/v3/brokerage/orders/batch_cancel"


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (limit("big", "1", "49000"), "INSUFFICIENT_FUND"),  # 49,000 USD and its fee, with 10,000
        (limit("sell-big", "2", "51000", Side.SELL), "INSUFFICIENT_FUND"),  # 2 BTC, with 1
        (
            OrderRequest("doge", "coinbase", "DOGE-USD", Side.BUY, OrderType.LIMIT, D(10), D("0.1")),
            "INVALID_PRODUCT_ID",
        ),
        (limit("cross", "0.01", "50010", post_only=True), "INVALID_LIMIT_PRICE_POST_ONLY"),  # at the offer
        (limit("cross-sell", "0.01", "50000", Side.SELL, post_only=True), "INVALID_LIMIT_PRICE_POST_ONLY"),
    ],
)
def test_a_refused_order_is_rejected_with_the_exchanges_reason(exchange, request_: OrderRequest, reason: str) -> None:
    with exchange.gateway() as gateway:
        gateway.submit(request_, now_ms())
        events = gateway.advance(now_ms())
        assert kinds(events) == [EventKind.REJECTED]
        assert events[0].reason is not None and events[0].reason.startswith(reason)
        assert fold(Order(request_), events).status == Status.REJECTED
        assert exchange.mock.order_of(request_.client_order_id) is None
        assert gateway.balances()["USD"] == Balance(D(10000), D(0)) and gateway.unknown_orders() == []


def test_an_orders_end_waits_for_its_fills_when_the_fills_listing_lags(exchange) -> None:
    request = limit("buy-4", "0.1", "49000")
    with exchange.gateway() as gateway:
        gateway.submit(request, now_ms())
        gateway.submit(market("mkt-4", "0.01"), now_ms())
        exchange.mock.hide_fills = True
        assert kinds(gateway.advance(now_ms())) == [EventKind.ACCEPTED, EventKind.ACCEPTED]  # mkt-4 is filled there
        time.sleep(0.002)  # after the market order's fill
        exchange.mock.fill("buy-4", "49000", "0.03")
        gateway.cancel("buy-4", now_ms())
        assert gateway.advance(now_ms()) == [] and gateway.open_orders() == ["buy-4", "mkt-4"]
        exchange.mock.hide_fills = False
        events = gateway.advance(now_ms())
        assert [(e.client_order_id, e.kind) for e in events] == [
            ("mkt-4", EventKind.FILL),
            ("buy-4", EventKind.FILL),
            ("buy-4", EventKind.CANCELLED),
        ]
        assert fold(Order(request), [OrderEvent("buy-4", EventKind.ACCEPTED, 0), *events[1:]]).filled == D("0.03")


def test_a_post_only_order_that_rests_is_accepted(exchange) -> None:
    with exchange.gateway() as gateway:
        gateway.submit(limit("maker", "0.01", "50009", post_only=True), now_ms())
        assert kinds(gateway.advance(now_ms())) == [EventKind.ACCEPTED]
    assert exchange.mock.order_of("maker").configuration["limit_limit_gtc"]["post_only"] is True


def test_a_good_till_time_order_expires(exchange) -> None:
    request = limit("gtd", "0.01", "49000", time_in_force=TimeInForce.GTT, expire_ms=now_ms() + 60_000)
    with exchange.gateway() as gateway:
        gateway.submit(request, now_ms())
        order = fold(Order(request), gateway.advance(now_ms()))
        assert exchange.mock.order_of("gtd").kind == "limit_limit_gtd"
        exchange.mock.clock = lambda: time.time() + 120
        events = gateway.advance(now_ms())
        assert kinds(events) == [EventKind.EXPIRED] and fold(order, events).status == Status.EXPIRED


def test_a_rate_limit_is_waited_out_then_the_order_goes_through() -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    for exchange in _exchange(rate_limit=(2, 1.0), page_size=1):
        with exchange.gateway(sleep=sleep) as gateway:
            gateway.balances()  # two requests (two pages of USD and BTC): the window is full
            gateway.submit(market("mkt-2", "0.01"), now_ms())
            assert kinds(gateway.advance(now_ms())) == [EventKind.ACCEPTED, EventKind.FILL]
        posts = [s.status for s in exchange.mock.seen if s.method == "POST"]
        assert posts == [429, 200] and waits[0] == 1.0 and set(waits) == {1.0}  # the Retry-After the server sent


def test_a_rate_limit_past_the_retries_leaves_the_order_unknown() -> None:
    for exchange in _exchange(rate_limit=(1, 1.0), page_size=2):
        with exchange.gateway(max_retries=0, settle_ms=0) as gateway:
            gateway.balances()
            sent_ms = now_ms()
            gateway.submit(market("mkt-3", "0.01"), sent_ms)
            assert gateway.advance(now_ms()) == [] and gateway.unknown_orders() == ["mkt-3"]
            time.sleep(1.1)  # the window passes
            events = gateway.reconcile_unknown(now_ms())
            assert kinds(events) == [EventKind.REJECTED] and events[0].reason == NEVER_RECEIVED
            assert gateway.unknown_orders() == []


def test_a_timeout_gives_no_event_and_reconciling_finds_the_order_the_exchange_got(exchange, caplog) -> None:
    request = limit("slow-1", "0.1", "49000")
    exchange.mock.delay_next(1.0, received=True)
    with exchange.gateway(timeout_s=0.3) as gateway, caplog.at_level(logging.DEBUG):
        gateway.submit(request, now_ms())
        assert gateway.advance(now_ms()) == [] and gateway.unknown_orders() == ["slow-1"]
        assert "slow-1" in caplog.text and "unknown" in caplog.text
        assert "Bearer" not in caplog.text and "eyJ" not in caplog.text  # no JWT (base64 JSON) in any log
        assert exchange.pem.splitlines()[1] not in caplog.text
        order = Order(request)  # the service's view: still new
        made = exchange.mock.fill("slow-1", "49000", "0.04")
        events = gateway.reconcile_unknown(now_ms())
        assert kinds(events) == [EventKind.ACCEPTED, EventKind.FILL]
        assert events[0].venue_order_id == exchange.mock.order_of("slow-1").order_id
        order = fold(order, events)
        assert order.status == Status.PARTIALLY_FILLED and order.fees == made.commission
        assert gateway.unknown_orders() == [] and gateway.reconcile_unknown(now_ms()) == []
        exchange.mock.fill("slow-1", "49000", "0.06")
        order = fold(order, gateway.advance(now_ms()))  # followed like any other order from now on
        assert order.status == Status.FILLED


def test_a_timeout_of_a_request_the_exchange_never_got_is_rejected_once_settled(exchange) -> None:
    exchange.mock.delay_next(1.0, received=False)
    with exchange.gateway(timeout_s=0.3, settle_ms=30_000) as gateway:
        sent_ms = now_ms()
        gateway.submit(limit("lost-1", "0.1", "49000"), sent_ms)
        assert gateway.advance(now_ms()) == []
        assert gateway.reconcile_unknown(sent_ms + 29_999) == []  # too early to tell
        assert gateway.unknown_orders() == ["lost-1"]
        events = gateway.reconcile_unknown(sent_ms + 30_000)
        assert kinds(events) == [EventKind.REJECTED] and events[0].reason == NEVER_RECEIVED
        assert fold(Order(limit("lost-1", "0.1", "49000")), events).status == Status.REJECTED
    assert exchange.mock.order_of("lost-1") is None


def test_a_cancel_of_an_order_of_unknown_fate_is_sent_once_it_is_found(exchange) -> None:
    exchange.mock.delay_next(1.0, received=True)
    with exchange.gateway(timeout_s=0.3) as gateway:
        gateway.submit(limit("slow-2", "0.1", "49000"), now_ms())
        gateway.cancel("slow-2", now_ms())
        assert exchange.mock.order_of("slow-2").status == "OPEN"
        assert kinds(gateway.reconcile_unknown(now_ms())) == [EventKind.ACCEPTED]
        assert exchange.mock.order_of("slow-2").status == "CANCELLED"
        assert kinds(gateway.advance(now_ms())) == [EventKind.CANCELLED]


def test_the_service_keeps_orders_of_unknown_fate_new_until_the_exchange_is_asked(exchange, tmp_path) -> None:
    store = TradingStore(connect(f"sqlite:///{tmp_path / 'trading.db'}"))
    exchange.mock.delay_next(1.0, received=False)  # svc-1 never reaches the exchange
    exchange.mock.delay_next(1.0, received=True)  # svc-2 does, but its answer comes too late
    with exchange.gateway(timeout_s=0.3, settle_ms=0) as gateway:
        service = ExecutionService(store, gateway, RiskLimits(), FEES)
        service.deposit("USD", D(10000), now_ms())
        quotes = {PRODUCT: Quote(PRODUCT, D(50000), D(50010), now_ms())}
        for name in ("svc-1", "svc-2"):
            assert service.submit(limit(name, "0.1", "49000"), quotes, now_ms()).status == Status.NEW
        assert service.poll(now_ms()) == [] and service.reconcile(now_ms()) == []  # neither is taken for gone
        assert {o.status for o in service.orders.values()} == {Status.NEW}
        exchange.mock.fill("svc-2", "49000", "0.1")
        service.handle(gateway.reconcile_unknown(now_ms()))
        assert service.orders["svc-1"].status == Status.REJECTED and service.orders["svc-1"].reason == NEVER_RECEIVED
        assert service.orders["svc-2"].status == Status.FILLED
        assert service.position(PRODUCT).quantity == D("0.1") and service.bad_reports == {}
        restored = ExecutionService.restore(store, gateway, RiskLimits(), FEES).orders
        assert (restored["svc-1"].status, restored["svc-2"].status) == (Status.REJECTED, Status.FILLED)


def test_a_fill_reported_twice_is_one_fill(exchange) -> None:
    request = limit("buy-3", "0.1", "49000")
    exchange.mock.duplicate_fills = True
    with exchange.gateway() as gateway:
        gateway.submit(request, now_ms())
        exchange.mock.fill("buy-3", "49000", "0.04")
        events = gateway.advance(now_ms()) + gateway.advance(now_ms())
        assert kinds(events) == [EventKind.ACCEPTED, EventKind.FILL]
        assert fold(Order(request), events).filled == D("0.04")
        assert gateway.counts["duplicate_fill"] >= 2


def test_a_bad_jwt_is_refused_by_the_exchange(exchange) -> None:
    other_key = _pem(ec.generate_private_key(ec.SECP256R1()))
    with exchange.gateway(pem=other_key) as gateway:
        gateway.submit(limit("bad-key", "0.01", "49000"), now_ms())
        events = gateway.advance(now_ms())
        assert kinds(events) == [EventKind.REJECTED] and events[0].reason == "HTTP 401: Unauthorized"
        with pytest.raises(GatewayError, match="HTTP 401"):
            gateway.balances()
    with exchange.gateway(clock=lambda: time.time() - 600) as gateway, pytest.raises(GatewayError, match="401"):
        gateway.balances()  # expired
    assert exchange.mock.order_of("bad-key") is None

    path = "/api/v3/brokerage/accounts"
    signed = {
        "good": cdp_jwt(KEY_NAME, exchange.pem, int(time.time()), uri=exchange.uri("GET", path)),
        "other path": cdp_jwt(KEY_NAME, exchange.pem, int(time.time()), uri=exchange.uri("GET", "/api/v3/brokerage/orders")),
        "other method": cdp_jwt(KEY_NAME, exchange.pem, int(time.time()), uri=exchange.uri("POST", path)),
        "other host": cdp_jwt(KEY_NAME, exchange.pem, int(time.time()), uri=rest_uri("GET", "api.coinbase.com", path)),
        "no uri": cdp_jwt(KEY_NAME, exchange.pem, int(time.time())),
        "other key name": cdp_jwt("organizations/o/apiKeys/other", exchange.pem, int(time.time()), uri=exchange.uri("GET", path)),
        "not yet valid": cdp_jwt(KEY_NAME, exchange.pem, int(time.time()) + 60, uri=exchange.uri("GET", path)),
    }  # fmt: skip
    with httpx.Client(base_url=exchange.url, trust_env=False) as client:
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer junk"}).status_code == 401
        answers = {
            name: client.get(path, headers={"Authorization": f"Bearer {t}"}).status_code for name, t in signed.items()
        }
    assert answers == {name: 200 if name == "good" else 401 for name in signed}


def test_every_request_carries_a_jwt_for_its_own_method_and_path(exchange) -> None:
    exchange.mock.delay_next(1.0, received=True)
    with exchange.gateway(timeout_s=0.3) as gateway:
        gateway.submit(limit("slow-3", "0.01", "49000"), now_ms())
        gateway.submit(limit("rest-1", "0.01", "49000"), now_ms())
        gateway.reconcile_unknown(now_ms())
        exchange.mock.fill("rest-1", "49000", "0.005")
        gateway.advance(now_ms())
        gateway.cancel("rest-1", now_ms())
        gateway.advance(now_ms())
        gateway.open_orders()
        gateway.balances()
    seen = exchange.mock.seen
    one_order = f"/api/v3/brokerage/orders/historical/{exchange.mock.order_of('rest-1').order_id}"
    assert {(s.method, s.path) for s in seen} >= {
        ("POST", "/api/v3/brokerage/orders"),
        ("POST", "/api/v3/brokerage/orders/batch_cancel"),
        ("GET", "/api/v3/brokerage/orders/historical/batch"),
        ("GET", "/api/v3/brokerage/orders/historical/fills"),
        ("GET", one_order),
        ("GET", "/api/v3/brokerage/accounts"),
    }
    assert all(s.uri == exchange.uri(s.method, s.path) and s.status == 200 for s in seen), seen


def test_the_exchange_refuses_a_body_or_query_of_the_wrong_shape(exchange) -> None:
    path = "/api/v3/brokerage/orders"
    good = {"client_order_id": "x", "product_id": PRODUCT, "side": "BUY",
            "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "49000"}}}  # fmt: skip
    bad = [
        {**good, "side": "buy"},
        {**good, "order_configuration": {"limit_limit_gtc": {"base_size": 0.01, "limit_price": "49000"}}},
        {**good, "order_configuration": {"limit_limit_gtc": {"base_size": "0.01"}}},
        {**good, "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "1", "x": 1}}},
        {**good, "order_configuration": {"stop_limit_stop_limit_gtc": {"base_size": "0.01"}}},
        {**good, "client_order_id": ""},
        {**good, "price": "49000"},
    ]

    def send(method: str, url: str, **kwargs: Any) -> httpx.Response:
        token = cdp_jwt(KEY_NAME, exchange.pem, int(time.time()), uri=exchange.uri(method, url.split("?")[0]))
        return client.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    with httpx.Client(base_url=exchange.url, trust_env=False) as client:
        for body in bad:
            answer = send("POST", path, json=body)
            assert answer.status_code == 400, body
            assert answer.json()["error"] == "INVALID_ARGUMENT" and answer.json()["message"]
        assert send("POST", path, content=b"not json").status_code == 400
        assert send("POST", f"{path}/batch_cancel", json={"order_ids": "x"}).status_code == 400
        assert send("GET", f"{path}/historical/batch?order_status=OPEN&order_status=FILLED").status_code == 400
        assert send("GET", f"{path}/historical/fills?orderid=x").status_code == 400
        assert send("GET", f"{path}/historical/nope").status_code == 404
        assert send("POST", path, json=good).json()["success"] is True
