"""The order state machine (every legal and illegal transition), the accounting against hand-computed cases, and
the risk checks (each limit refuses, by name)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from coinflow.trading.accounting import (
    EntryKind,
    LedgerEntry,
    Position,
    apply_fill,
    available,
    balances,
    fill_entries,
    mark_to_market,
    positions,
)
from coinflow.trading.orders import (
    ACCEPTS,
    EventKind,
    Fill,
    IllegalTransition,
    Liquidity,
    Order,
    OrderEvent,
    OrderRequest,
    OrderType,
    Side,
    Status,
    TimeInForce,
    apply_event,
    request_problem,
    split_product,
)
from inference_pipeline.execution.risk import RiskContext, RiskLimits, check_order, reduces

LIMIT_BUY = OrderRequest("o1", "paper", "BTC-USD", Side.BUY, OrderType.LIMIT, D("2"), D("100"))


def fill(quantity: str, price: str = "100", fee: str = "0", order: OrderRequest = LIMIT_BUY, n: int = 1) -> Fill:
    return Fill(
        f"f{n}", order.client_order_id, order.venue, order.product, order.side, D(price), D(quantity), D(fee),
        Liquidity.MAKER, 1_000 + n, 1_010 + n,
    )  # fmt: skip


def event(kind: EventKind, f: Fill | None = None, name: str = "o1") -> OrderEvent:
    return OrderEvent(name, kind, 1_000, venue_order_id="v1", fill=f)


# --- the state machine ---------------------------------------------------------------------------------------


def order_in(status: Status) -> Order:
    """An order brought to `status` through legal events."""
    order = Order(LIMIT_BUY)
    path = {
        Status.NEW: [],
        Status.OPEN: [event(EventKind.ACCEPTED)],
        Status.PARTIALLY_FILLED: [event(EventKind.ACCEPTED), event(EventKind.FILL, fill("0.5"))],
        Status.FILLED: [event(EventKind.ACCEPTED), event(EventKind.FILL, fill("2"))],
        Status.CANCELLED: [event(EventKind.ACCEPTED), event(EventKind.CANCELLED)],
        Status.REJECTED: [event(EventKind.REJECTED)],
        Status.EXPIRED: [event(EventKind.ACCEPTED), event(EventKind.EXPIRED)],
    }[status]
    for e in path:
        order = apply_event(order, e)
    assert order.status == status
    return order


def an_event(kind: EventKind, order: Order) -> OrderEvent:
    """An event of `kind` that would be valid for an order with quantity left (a fill of a tenth of the rest)."""
    quantity = order.remaining / 10 if order.remaining > 0 else D("0.1")
    return event(kind, fill(str(quantity), n=9) if kind == EventKind.FILL else None)


EXPECTED = {
    (Status.NEW, EventKind.ACCEPTED): Status.OPEN,
    (Status.NEW, EventKind.FILL): Status.PARTIALLY_FILLED,  # the ack may be lost or late
    (Status.NEW, EventKind.CANCELLED): Status.CANCELLED,
    (Status.NEW, EventKind.REJECTED): Status.REJECTED,
    (Status.NEW, EventKind.EXPIRED): Status.EXPIRED,
    (Status.OPEN, EventKind.FILL): Status.PARTIALLY_FILLED,
    (Status.OPEN, EventKind.CANCELLED): Status.CANCELLED,
    (Status.OPEN, EventKind.EXPIRED): Status.EXPIRED,
    (Status.PARTIALLY_FILLED, EventKind.FILL): Status.PARTIALLY_FILLED,
    (Status.PARTIALLY_FILLED, EventKind.CANCELLED): Status.CANCELLED,
    (Status.PARTIALLY_FILLED, EventKind.EXPIRED): Status.EXPIRED,
}


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("kind", list(EventKind))
def test_every_transition_is_applied_or_refused_as_the_table_says(status: Status, kind: EventKind) -> None:
    order = order_in(status)
    expected = EXPECTED.get((status, kind))
    assert (kind in ACCEPTS[status]) == (expected is not None)
    if expected is None:
        with pytest.raises(IllegalTransition) as refused:
            apply_event(order, an_event(kind, order))
        assert refused.value.reason == f"{kind}_when_{status}"
    else:
        assert apply_event(order, an_event(kind, order)).status == expected


def test_fills_add_up_to_filled_with_the_average_price_and_fees() -> None:
    order = order_in(Status.OPEN)
    order = apply_event(order, event(EventKind.FILL, fill("0.5", "99", "0.1", n=1)))
    order = apply_event(order, event(EventKind.FILL, fill("1.5", "100", "0.3", n=2)))
    assert order.status == Status.FILLED
    assert order.filled == D("2") and order.remaining == 0
    assert order.average_price == (D("49.5") + D("150")) / 2  # 99.75
    assert order.fees == D("0.4")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (fill("2.5"), "overfill"),
        (replace(fill("1"), client_order_id="o2"), "other_order"),
        (replace(fill("1"), side=Side.SELL), "mismatched_fill"),
        (replace(fill("1"), product="ETH-USD"), "mismatched_fill"),
        (fill("0"), "bad_fill"),
        (fill("1", "NaN"), "bad_fill"),
        (fill("1", fee="-1"), "bad_fill"),
        (fill("1", "100.5"), "through_limit"),  # a buy at 100 cannot fill above it
    ],
)
def test_a_fill_that_cannot_belong_to_the_order_is_refused(bad: Fill, reason: str) -> None:
    order = order_in(Status.OPEN)
    with pytest.raises(IllegalTransition) as refused:
        apply_event(order, event(EventKind.FILL, bad))
    assert refused.value.reason == reason


def test_an_event_of_another_order_is_refused() -> None:
    with pytest.raises(IllegalTransition) as refused:
        apply_event(order_in(Status.OPEN), event(EventKind.CANCELLED, name="o2"))
    assert refused.value.reason == "other_order"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, None),
        ({"quantity": D("0")}, "positive"),
        ({"quantity": D("NaN")}, "positive"),
        ({"limit_price": None}, "limit price"),
        ({"limit_price": D("-1")}, "limit price"),
        ({"type": OrderType.MARKET}, "no limit price"),
        ({"type": OrderType.MARKET, "limit_price": None}, "immediate or cancel"),
        ({"post_only": True, "time_in_force": TimeInForce.IOC}, "post-only"),
        ({"time_in_force": TimeInForce.GTT}, "expiry"),
        ({"expire_ms": 5}, "expiry"),
        ({"product": "BTCUSD"}, "BASE-QUOTE"),
        ({"client_order_id": ""}, "client order id"),
    ],
)
def test_malformed_requests_are_named(changes: dict, problem: str | None) -> None:
    found = request_problem(replace(LIMIT_BUY, **changes))
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_products_of_both_exchanges_split_into_base_and_quote() -> None:
    assert split_product("BTC-USD") == ("BTC", "USD")
    assert split_product("XBT/USDC") == ("XBT", "USDC")
    with pytest.raises(ValueError):
        split_product("BTC-USD-X")


# --- accounting ------------------------------------------------------------------------------------------------

SELL = replace(LIMIT_BUY, client_order_id="s1", side=Side.SELL)


def test_average_cost_realised_and_unrealised_pnl_by_hand() -> None:
    # buy 1 @ 100, buy 3 @ 120: 4 held at (100 + 360) / 4 = 115
    p = apply_fill(Position("paper", "BTC-USD"), fill("1", "100", "0.5", n=1))
    p = apply_fill(p, fill("3", "120", "1.5", n=2))
    assert (p.quantity, p.average_cost, p.realised_pnl, p.fees) == (D(4), D(115), D(0), D(2))
    # sell 2 @ 130: realises 2 * (130 - 115) = 30; the cost of the rest stays 115
    p = apply_fill(p, fill("2", "130", "1", order=SELL, n=3))
    assert (p.quantity, p.average_cost, p.realised_pnl, p.fees) == (D(2), D(115), D(30), D(3))
    assert p.unrealised_pnl(D(110)) == D(-10)
    # sell 3 @ 100: closes 2 (realises 2 * -15 = -30) and opens a short of 1 at 100
    p = apply_fill(p, fill("3", "100", order=SELL, n=4))
    assert (p.quantity, p.average_cost, p.realised_pnl) == (D(-1), D(100), D(0))
    assert p.unrealised_pnl(D(90)) == D(10)  # a short gains as the price falls
    # buy 1 @ 95 closes the short: +5
    p = apply_fill(p, fill("1", "95", n=5))
    assert (p.quantity, p.average_cost, p.realised_pnl, p.bought, p.sold) == (D(0), D(0), D(5), D(5), D(5))


def test_balances_follow_from_the_entries_and_equity_adds_up() -> None:
    deposit = LedgerEntry("paper", "USD", D("1000"), EntryKind.DEPOSIT, "start", 0)
    fills = [fill("2", "100", "0.6", n=1), fill("1", "110", "0.33", order=SELL, n=2)]
    entries = [deposit, *(e for f in fills for e in fill_entries(f))]
    held = balances(entries)
    assert held[("paper", "BTC")] == D(1)
    assert held[("paper", "USD")] == D(1000) - D(200) - D("0.6") + D(110) - D("0.33")
    book = positions(fills)
    mark = mark_to_market(held, book, {"BTC-USD": D(105)}, "paper", "USD")
    assert mark.equity == held[("paper", "USD")] + D(105)
    assert mark.realised_pnl == D(10) and mark.unrealised_pnl == D(5) and mark.fees == D("0.93")
    # equity = deposit + realised + unrealised - fees: nothing is lost between the two ways of counting
    assert mark.equity == D(1000) + mark.realised_pnl + mark.unrealised_pnl - mark.fees


def test_a_coin_without_a_mark_is_an_error_not_a_guess() -> None:
    held = {("paper", "USD"): D(10), ("paper", "ETH"): D(1)}
    with pytest.raises(ValueError, match="no mark for ETH"):
        mark_to_market(held, {}, {}, "paper", "USD")


def test_open_orders_hold_back_reserves() -> None:
    buy = order_in(Status.PARTIALLY_FILLED)  # 1.5 left at 100
    sell = apply_event(Order(replace(SELL, quantity=D("0.25"))), event(EventKind.ACCEPTED, name="s1"))
    done = order_in(Status.FILLED)
    free = available({("paper", "USD"): D(1000), ("paper", "BTC"): D(1)}, [buy, sell, done], {"paper": D("0.01")})
    assert free[("paper", "USD")] == D(1000) - D("1.5") * 100 * D("1.01")
    assert free[("paper", "BTC")] == D("0.75")


# --- risk --------------------------------------------------------------------------------------------------


def context(**changes) -> RiskContext:
    base = RiskContext(
        now_ms=10_000, kill_switch=False, mid=D(100), book_ms=9_900, position=D(0), notionals={},
        available_base=D(5), available_quote=D(10_000), taker_fee=D("0.01"), recent_orders_ms=[], daily_pnl=D(0),
    )  # fmt: skip
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("limits", "request_changes", "ctx", "refused_by"),
    [
        (RiskLimits(), {}, context(), None),
        (RiskLimits(), {}, context(kill_switch=True), "kill_switch"),
        (RiskLimits(), {}, context(mid=None, book_ms=None), "no_book"),
        (RiskLimits(max_book_age_ms=50), {}, context(), "stale_book"),
        (RiskLimits(price_band=D("0.01")), {"limit_price": D("98")}, context(), "price_band"),
        (RiskLimits(price_band=D("0.01")), {"limit_price": D("99.5")}, context(), None),
        (RiskLimits(max_order_quantity=D(1)), {}, context(), "order_size"),
        (RiskLimits(max_orders_per_second=2), {}, context(recent_orders_ms=[9_500, 9_800]), "order_rate"),
        (RiskLimits(max_orders_per_second=2), {}, context(recent_orders_ms=[8_000, 9_800]), None),
        (RiskLimits(), {}, context(available_quote=D(201)), "reserves"),  # 2 * 100 * 1.01 = 202
        (RiskLimits(), {"side": Side.SELL}, context(available_base=D(1)), "reserves"),
        (RiskLimits(max_position=D(3)), {}, context(position=D(2)), "position"),
        (RiskLimits(max_notional=D(300)), {}, context(position=D(2)), "notional"),
        (RiskLimits(max_total_notional=D(500)), {}, context(notionals={"ETH-USD": D(350)}), "total_notional"),
        (RiskLimits(max_daily_loss=D(50)), {}, context(daily_pnl=D(-50)), "daily_loss"),
        # after the daily loss, reducing orders still pass; so do they past the position limits
        (RiskLimits(max_daily_loss=D(50)), {"side": Side.SELL}, context(daily_pnl=D(-80), position=D(2)), None),
        (RiskLimits(max_position=D(1)), {"side": Side.SELL}, context(position=D(3)), None),
    ],
)
def test_each_limit_refuses_by_name(limits, request_changes, ctx, refused_by) -> None:
    refusal = check_order(replace(LIMIT_BUY, **request_changes), limits, ctx)
    assert (refusal.limit if refusal else None) == refused_by


def test_a_market_order_is_valued_at_the_edge_of_the_band() -> None:
    market = replace(LIMIT_BUY, type=OrderType.MARKET, limit_price=None, time_in_force=TimeInForce.IOC)
    # 2 * 100 * 1.05 * 1.01 = 212.1: refused with 212 available, sent with 213
    band = RiskLimits(price_band=D("0.05"))
    assert check_order(market, band, context(available_quote=D(212))).limit == "reserves"
    assert check_order(market, band, context(available_quote=D(213))) is None


def test_reducing_means_trading_against_the_position_without_passing_zero() -> None:
    sell = replace(LIMIT_BUY, side=Side.SELL)
    assert reduces(sell, D(2)) and not reduces(sell, D("1.5")) and not reduces(sell, D(0))
    assert reduces(LIMIT_BUY, D(-3)) and not reduces(LIMIT_BUY, D(1))


def test_the_contracts_action_names_are_the_action_models_in_its_order() -> None:
    from coinflow.contracts import ACTION_NAMES
    from training_pipeline.action.labels import ACTIONS

    assert tuple(action.name.lower() for action in ACTIONS) == ACTION_NAMES


def test_a_market_order_is_valued_at_the_worst_price_it_walks_to() -> None:
    market = replace(LIMIT_BUY, type=OrderType.MARKET, limit_price=None, time_in_force=TimeInForce.IOC)
    asks = [(D("100.5"), D("1.5")), (D(101), D(1)), (D(130), D(9))]
    ctx = context(levels=asks)
    # 2 coins reach the second level: valued at 2 * 101 * 1.01 = 204.02
    assert check_order(market, RiskLimits(), replace(ctx, available_quote=D("204.01"))).limit == "reserves"
    assert check_order(market, RiskLimits(), replace(ctx, available_quote=D("204.02"))) is None
    # 3 coins would reach 130, 30 % from the mid: past a 2 % band
    big = replace(market, quantity=D(3))
    assert check_order(big, RiskLimits(price_band=D("0.02")), ctx).limit == "price_band"


def test_a_market_buy_is_sized_to_what_the_risk_check_lets_through() -> None:
    from inference_pipeline.execution.service import Quote
    from inference_pipeline.execution.strategies import market_buy_size

    asks = ((D(100), D(1)), (D(101), D(1)), (D(102), D(5)))
    quote = Quote("BTC-USD", D(99), D(100), 0, ((D(99), D(1)),), asks)
    # 150 at 100 (fee 1 %) would be 1.485 coins, past the first level; at 101 it is 1.4705...: 1.47 in 0.01 lots
    size = market_buy_size(quote, D(150), D("0.01"), D("0.01"))
    assert size == D("1.47")
    market = replace(LIMIT_BUY, type=OrderType.MARKET, limit_price=None, time_in_force=TimeInForce.IOC, quantity=size)
    assert check_order(market, RiskLimits(), context(levels=asks, available_quote=D(150))) is None
    assert check_order(replace(market, quantity=size + D("0.01")), RiskLimits(),
                       context(levels=asks, available_quote=D(150))).limit == "reserves"  # fmt: skip
    # within the first level: all of it at the best offer
    assert market_buy_size(quote, D("50.5"), D("0.01"), D("0.01")) == D("0.5")
