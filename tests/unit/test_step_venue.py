"""The step venue (fills against candles or book samples) on hand-computed cases, and the in-memory account."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from coinflow.trading.accounting import Account
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import (
    EventKind,
    IllegalTransition,
    OrderEvent,
    OrderRequest,
    OrderType,
    Side,
    Status,
    TimeInForce,
)
from coinflow.trading.steps import Step, StepVenue, on_grid

FEES = FeeSchedule(maker=D("0.001"), taker=D("0.002"))
PRODUCT = "BTC-USD"


def step(at: int, close: str, low: str | None = None, high: str | None = None) -> Step:
    return Step(at, D(close), D(close), D(low or close), D(high or close))


def request(name: str, side: Side, quantity: str, limit: str | None = None, **extra) -> OrderRequest:
    kind = OrderType.MARKET if limit is None else OrderType.LIMIT
    tif = extra.pop("time_in_force", TimeInForce.IOC if limit is None else TimeInForce.GTC)
    return OrderRequest(name, "paper", PRODUCT, side, kind, D(quantity), None if limit is None else D(limit), tif,
                        **extra)  # fmt: skip


def kinds(events) -> list[tuple[str, EventKind]]:
    return [(e.client_order_id, e.kind) for e in events]


def test_a_market_order_fills_at_once_at_the_step_s_price_as_a_taker():
    venue = StepVenue(FEES)
    venue.on_step(PRODUCT, Step(1, D("99"), D("101"), D("98"), D("102")))
    venue.submit(request("b", Side.BUY, "2"), 1)
    venue.submit(request("s", Side.SELL, "1"), 1)
    events = venue.advance(1)
    assert kinds(events) == [("b", EventKind.ACCEPTED), ("b", EventKind.FILL), ("s", EventKind.ACCEPTED),
                             ("s", EventKind.FILL)]  # fmt: skip
    buy, sell = events[1].fill, events[3].fill
    assert (buy.price, buy.quantity, buy.fee, buy.liquidity) == (D("101"), D("2"), D("0.404"), "taker")
    assert (sell.price, sell.fee) == (D("99"), D("0.198"))


def test_post_only_that_would_cross_is_rejected_an_ioc_limit_that_does_not_is_cancelled_and_no_step_rejects():
    venue = StepVenue(FEES)
    venue.submit(request("early", Side.BUY, "1"), 0)
    venue.on_step(PRODUCT, step(1, "100"))
    venue.submit(request("p", Side.BUY, "1", "100", post_only=True), 1)
    venue.submit(request("i", Side.BUY, "1", "99", time_in_force=TimeInForce.IOC), 1)
    venue.submit(request("x", Side.BUY, "1", "100.5"), 1)  # crosses: takes at the step's offer
    events = venue.advance(1)
    assert kinds(events) == [("early", EventKind.REJECTED), ("p", EventKind.REJECTED), ("i", EventKind.ACCEPTED),
                             ("i", EventKind.CANCELLED), ("x", EventKind.ACCEPTED), ("x", EventKind.FILL)]  # fmt: skip
    assert events[-1].fill.price == D("100")
    assert venue.open_orders() == []


def test_a_resting_order_fills_through_fully_at_a_touch_partly_and_keeps_resting():
    venue = StepVenue(FEES, touch_fill=D("0.25"))
    venue.on_step(PRODUCT, step(1, "100"))
    venue.submit(request("b", Side.BUY, "4", "99"), 1)
    venue.submit(request("s", Side.SELL, "2", "101"), 1)
    venue.advance(1)
    venue.on_step(PRODUCT, step(2, "100", low="99.5", high="101"))  # the bid untouched, the offer touched
    venue.on_step(PRODUCT, step(3, "100", low="99"))  # the bid touched
    venue.on_step(PRODUCT, step(4, "100", low="98", high="102"))  # both traded through
    fills = [e.fill for e in venue.advance(4) if e.fill is not None]
    assert [(f.client_order_id, f.quantity, f.exchange_ms) for f in fills] == [
        ("s", D("0.50"), 2),
        ("b", D("1.00"), 3),
        ("b", D("3.00"), 4),
        ("s", D("1.50"), 4),
    ]
    assert all(f.liquidity == "maker" and f.fee == f.price * f.quantity * D("0.001") for f in fills)
    assert {f.price for f in fills if f.side == Side.BUY} == {D("99")} and venue.open_orders() == []


def test_good_till_time_is_tried_against_the_steps_before_its_expiry_then_expires_and_cancel_and_ids():
    venue = StepVenue(FEES)
    venue.on_step(PRODUCT, step(10, "100"))
    venue.submit(request("g", Side.BUY, "1", "99", time_in_force=TimeInForce.GTT, expire_ms=11), 10)
    venue.submit(request("c", Side.BUY, "1", "98"), 10)
    venue.submit(request("c", Side.BUY, "5", "90"), 10)  # the same id again is the same order
    venue.advance(10)
    venue.on_step(PRODUCT, step(20, "100", low="99.5"))
    venue.cancel("c", 20)
    venue.cancel("c", 21)  # not resting any more: nothing to say
    venue.on_step(PRODUCT, step(30, "100", low="90"))
    assert kinds(venue.advance(30)) == [("g", EventKind.EXPIRED), ("c", EventKind.CANCELLED)]


def test_prices_go_on_the_tick_grid():
    assert on_grid(6850.0049999999, D("0.01")) == D("6850.00")
    assert on_grid(0.30000000000000004, D("0.1")) == D("0.3")


def test_the_account_folds_the_venue_s_reports_into_orders_and_balances():
    venue, account = StepVenue(FEES), Account("paper")
    account.deposit("USD", D("1000"), 0)
    venue.on_step(PRODUCT, step(1, "100"))
    order = request("b", Side.BUY, "2")
    account.send(order)
    venue.submit(order, 1)
    account.apply(venue.advance(1))
    assert account.orders["b"].status == Status.FILLED
    assert account.balance("BTC") == D("2") and account.balance("USD") == D("1000") - D("200") - D("0.4")
    with pytest.raises(IllegalTransition):  # a filled order cannot be cancelled: the account refuses it
        account.apply([OrderEvent("b", EventKind.CANCELLED, 2)])


def test_slippage_moves_market_fills_against_the_order_but_never_past_a_limit():
    venue = StepVenue(FEES, slippage=D("0.01"))
    venue.on_step(PRODUCT, step(1, "100"))
    venue.submit(request("b", Side.BUY, "1"), 1)
    venue.submit(request("s", Side.SELL, "1"), 1)
    venue.submit(request("l", Side.BUY, "1", "100.5"), 1)
    prices = [e.fill.price for e in venue.advance(1) if e.fill is not None]
    assert prices == [D("101.00"), D("99.00"), D("100.5")]
