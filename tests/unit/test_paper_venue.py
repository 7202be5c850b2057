"""The paper venue's fill model: walking the book, partial fills, post-only, the queue in front of a resting order,
trades through and at its price, a crossing book, latency, expiry and cancels; and one real Coinbase book."""

from __future__ import annotations

import csv
import gzip
from dataclasses import replace
from decimal import Decimal as D

import pytest

from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import (
    EventKind,
    Liquidity,
    Order,
    OrderRequest,
    OrderType,
    Side,
    Status,
    TimeInForce,
    apply_event,
)
from inference_pipeline.execution.paper import Latency, PaperVenue
from tests.support.paths import COINBASE_SNAPSHOTS

FEES = FeeSchedule(maker=D("0.001"), taker=D("0.002"))
BIDS = [(D(99), D(1)), (D(98), D(2)), (D(97), D(5))]
ASKS = [(D(101), D("0.5")), (D(102), D(1)), (D(103), D(4))]
MARKET_BUY = OrderRequest(
    "m1", "paper", "BTC-USD", Side.BUY, OrderType.MARKET, D(2), time_in_force=TimeInForce.IOC, created_ms=1_000
)

BID_AT_99 = OrderRequest("b1", "paper", "BTC-USD", Side.BUY, OrderType.LIMIT, D(2), D(99), created_ms=1_000)


def venue(latency: Latency | None = None) -> PaperVenue:
    v = PaperVenue(FEES, latency)
    v.on_book("BTC-USD", True, BIDS, ASKS, 0)
    return v


def folded(request: OrderRequest, events) -> Order:
    order = Order(request)
    for e in events:
        if e.client_order_id == request.client_order_id:
            order = apply_event(order, e)
    return order


def fills_of(events) -> list[tuple[D, D, Liquidity]]:
    return [(e.fill.price, e.fill.quantity, e.fill.liquidity) for e in events if e.kind == EventKind.FILL]


def test_a_market_order_walks_the_book_level_by_level_with_taker_fees() -> None:
    v = venue()
    v.submit(MARKET_BUY, 1_000)
    events = v.advance(1_000)
    assert [e.kind for e in events] == [EventKind.ACCEPTED, EventKind.FILL, EventKind.FILL, EventKind.FILL]
    assert fills_of(events) == [(D(101), D("0.5"), Liquidity.TAKER), (D(102), D(1), Liquidity.TAKER),
                                (D(103), D("0.5"), Liquidity.TAKER)]  # fmt: skip
    assert [e.fill.fee for e in events[1:]] == [D("0.1010"), D("0.204"), D("0.1030")]
    assert folded(MARKET_BUY, events).status == Status.FILLED
    # the liquidity it took is gone from the venue's copy until the exchange rewrites those levels
    assert v.books["BTC-USD"].best_ask() == (D(103), D("3.5"))


def test_what_depth_cannot_fill_is_cancelled() -> None:
    v = venue()
    v.submit(replace(MARKET_BUY, quantity=D(10)), 1_000)
    events = v.advance(1_000)
    assert sum(q for _, q, _ in fills_of(events)) == D("5.5")
    assert events[-1].kind == EventKind.CANCELLED
    order = folded(replace(MARKET_BUY, quantity=D(10)), events)
    assert (order.status, order.filled) == (Status.CANCELLED, D("5.5"))


def test_an_ioc_limit_takes_up_to_its_price_and_cancels_the_rest() -> None:
    v = venue()
    ioc = replace(BID_AT_99, limit_price=D(102), time_in_force=TimeInForce.IOC)
    v.submit(ioc, 1_000)
    events = v.advance(1_000)
    assert fills_of(events) == [(D(101), D("0.5"), Liquidity.TAKER), (D(102), D(1), Liquidity.TAKER)]
    assert folded(ioc, events).status == Status.CANCELLED


def test_a_marketable_gtc_limit_takes_then_rests_the_rest() -> None:
    v = venue()
    gtc = replace(BID_AT_99, limit_price=D(101))
    v.submit(gtc, 1_000)
    events = v.advance(1_000)
    assert fills_of(events) == [(D(101), D("0.5"), Liquidity.TAKER)]
    assert folded(gtc, events).status == Status.PARTIALLY_FILLED
    assert v.resting["b1"].remaining == D("1.5")


def test_a_post_only_order_that_would_take_is_rejected() -> None:
    v = venue()
    v.submit(replace(BID_AT_99, limit_price=D(101), post_only=True), 1_000)
    (rejected,) = v.advance(1_000)
    assert rejected.kind == EventKind.REJECTED and "post-only" in rejected.reason


def test_an_order_without_a_book_is_rejected() -> None:
    v = PaperVenue(FEES)
    v.submit(MARKET_BUY, 1_000)
    (rejected,) = v.advance(1_000)
    assert rejected.kind == EventKind.REJECTED


def test_a_resting_bid_waits_behind_the_queue_at_its_price() -> None:
    v = venue()
    v.submit(BID_AT_99, 1_000)
    assert [e.kind for e in v.advance(1_000)] == [EventKind.ACCEPTED]
    assert v.resting["b1"].queue_ahead == D(1)  # the 1 BTC bid at 99 was there first
    v.on_trade("BTC-USD", D(99), D("0.6"), Side.SELL, 2_000)  # eats into the queue only
    assert v.advance(2_000) == [] and v.resting["b1"].queue_ahead == D("0.4")
    v.on_trade("BTC-USD", D(99), D(1), Side.SELL, 3_000)  # 0.4 clears the queue, 0.6 is ours
    events = v.advance(3_000)
    assert fills_of(events) == [(D(99), D("0.6"), Liquidity.MAKER)]
    assert events[0].fill.fee == D(99) * D("0.6") * D("0.001")


def test_touching_the_price_fills_nothing_and_buy_aggressors_do_not_fill_a_bid() -> None:
    v = venue()
    v.submit(BID_AT_99, 1_000)
    v.advance(1_000)
    v.on_book("BTC-USD", False, [(D(99), D(3))], [(D("99.01"), D(1))], 2_000)  # the offer comes down to 99.01
    v.on_trade("BTC-USD", D(99), D(5), Side.BUY, 2_500)  # a buyer lifting: not our side's trade
    assert v.advance(3_000) == []


def test_a_trade_through_the_price_fills_up_to_its_quantity() -> None:
    v = venue()
    v.submit(BID_AT_99, 1_000)
    v.on_trade("BTC-USD", D("98.5"), D("1.5"), Side.SELL, 2_000)
    events = v.advance(2_000)
    assert fills_of(events) == [(D(99), D("1.5"), Liquidity.MAKER)]  # filled at its limit, not the print
    v.on_trade("BTC-USD", D(98), D(7), Side.SELL, 2_100)
    events = v.advance(2_100)
    assert fills_of(events) == [(D(99), D("0.5"), Liquidity.MAKER)]
    assert "b1" not in v.resting


def test_the_queue_never_exceeds_what_the_level_holds_later() -> None:
    v = venue()
    v.submit(BID_AT_99, 1_000)
    v.advance(1_000)
    v.on_book("BTC-USD", False, [(D(99), D("0.2"))], [], 2_000)  # cancellations at 99: at most 0.2 is ahead now
    assert v.resting["b1"].queue_ahead == D("0.2")
    v.on_trade("BTC-USD", D(99), D("0.5"), Side.SELL, 3_000)
    assert fills_of(v.advance(3_000)) == [(D(99), D("0.3"), Liquidity.MAKER)]


def test_a_book_crossing_a_resting_order_fills_it_as_maker_at_its_limit() -> None:
    v = venue()
    ask = OrderRequest("a1", "paper", "BTC-USD", Side.SELL, OrderType.LIMIT, D(1), D(102), created_ms=1_000)
    v.submit(ask, 1_000)
    v.advance(1_000)
    v.on_book("BTC-USD", False, [(D("102.5"), D("0.4"))], [], 2_000)  # a bid above our offer
    events = v.advance(2_000)
    assert fills_of(events) == [(D(102), D("0.4"), Liquidity.MAKER)]


def test_latency_delays_arrival_and_reports() -> None:
    v = venue(Latency(order_ms=50, report_ms=20))
    v.submit(MARKET_BUY, 1_000)
    v.on_book("BTC-USD", True, BIDS, [(D(105), D(5))], 1_040)  # before the order arrives: it pays 105
    assert v.advance(1_060) == []  # it arrived at 1,050; the reports come at 1,070
    events = v.advance(1_070)
    assert fills_of(events) == [(D(105), D(2), Liquidity.TAKER)]
    (f,) = [e.fill for e in events if e.fill]
    assert (f.exchange_ms, f.local_ms) == (1_050, 1_070)


def test_an_order_due_at_a_market_event_arrives_before_it() -> None:
    v = venue(Latency(order_ms=50))
    v.submit(MARKET_BUY, 1_000)
    v.on_book("BTC-USD", True, BIDS, [(D(110), D(5))], 1_050)
    assert fills_of(v.advance(1_050))[0][0] == D(101)


def test_good_till_time_expires_and_cancels_take_effect_on_arrival() -> None:
    v = venue(Latency(order_ms=10))
    gtt = replace(BID_AT_99, time_in_force=TimeInForce.GTT, expire_ms=5_000)
    v.submit(gtt, 1_000)
    v.submit(replace(BID_AT_99, client_order_id="b2"), 1_000)
    v.advance(1_010)
    v.cancel("b2", 2_000)
    assert [e.kind for e in v.advance(2_010)] == [EventKind.CANCELLED]
    (expired,) = v.advance(6_000)
    assert (expired.kind, expired.at_ms) == (EventKind.EXPIRED, 5_000)
    assert v.resting == {}


def test_the_same_client_order_id_twice_is_one_order() -> None:
    v = venue()
    v.submit(BID_AT_99, 1_000)
    v.submit(BID_AT_99, 1_001)
    assert [e.kind for e in v.advance(2_000)] == [EventKind.ACCEPTED]


def first_snapshot() -> tuple[list[tuple[D, D]], list[tuple[D, D]]]:
    """The bids and asks (best first, 50 a side) of the first real Coinbase BTC-USD snapshot of the bundled file."""
    with gzip.open(COINBASE_SNAPSHOTS, "rt", newline="") as handle:
        row = next(csv.DictReader(handle))
    side = {s: [(D(row[f"{s}_{i}_Price"]), D(row[f"{s}_{i}_Size"])) for i in range(1, 51)] for s in ("Bid", "Ask")}
    return side["Bid"], side["Ask"]


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_a_real_coinbase_book_fills_a_market_order_at_its_own_levels(side: Side) -> None:
    bids, asks = first_snapshot()
    v = PaperVenue(FEES)
    v.on_book("BTC-USD", True, bids, asks, 0)
    other = asks if side == Side.BUY else bids
    quantity = sum(q for _, q in other[:7]) + other[7][1] / 2  # into the eighth level
    v.submit(replace(MARKET_BUY, side=side, quantity=quantity), 1_000)
    got = fills_of(v.advance(1_000))
    assert [p for p, _, _ in got] == [p for p, _ in other[:8]]
    assert [q for _, q, _ in got] == [q for _, q in other[:7]] + [other[7][1] / 2]
    assert sum(q for _, q, _ in got) == quantity
