"""The pairs strategy on hand-made spread rows, through the session and the step venue: its decisions, the legs'
sizes, and leg risk (an intent whose second leg does not fill is undone: the first unwound, the account flat apart
from fees)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal as D

import pytest

from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import Order, OrderRequest, OrderType, Side, Status, TimeInForce
from coinflow.trading.pairs import PairRule, PairState, leg_quantities, next_state
from coinflow.trading.steps import StepVenue
from inference_pipeline.execution.legs import LegGroup, Verdict, leg_verdict, unwind_requests
from inference_pipeline.execution.live import PairRowFeed, pair_row_events
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import MarketEvent, TradingSession
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.strategies import PairsStrategy

PAIR, Y, X = "BTC-USDT__ETH-USDT", "BTC/USDT", "ETH/USDT"
FEES = FeeSchedule(D("0.001"), D("0.001"))
RULE = PairRule(entry=2.0, exit=0.5, stop=4.0)
NOTIONAL = D("5000")
START = D("10000")


def rule_policy(pair: str, features: Mapping[str, float], state: PairState) -> PairState:
    """What the registered pyfunc decides (its rule, no cost hurdle)."""
    return next_state(state, features["z"], RULE)[0]


def row(minute: int, z: float, y: float = 40000.0, x: float = 2000.0, pair: str = PAIR) -> dict:
    return {"pair_id": pair, "window_end_ms": minute * 60_000, "y_close": y, "x_close": x, "x_lag_s": 0.0,
            "beta": 1.5, "spread": 0.01, "z": z, "half_life": 30.0}  # fmt: skip


def run_rows(rows: list[dict], tmp_path, limits: RiskLimits | None = None) -> TradingSession:
    """The rows through a PairRowFeed into a pairs session on the step venue, a fresh account of START."""
    service = ExecutionService.restore(TradingStore(connect(f"sqlite:///{tmp_path / 't.db'}")), StepVenue(FEES),
                                       limits or RiskLimits(allow_short=True), FEES)  # fmt: skip
    service.deposit("USDT", START, 0)
    strategy = PairsStrategy(rule_policy, NOTIONAL, D("0.00000001"))
    session = TradingSession(service, strategy, "pairs-1m", 10_000, quote_asset="USDT", leg_timeout_ms=5000)
    events: list[MarketEvent] = []
    feed = PairRowFeed({PAIR: (Y, X)}, events.append)
    for record in rows:
        feed.on_row(record)
    session.run(events)
    return session


def test_a_row_is_its_legs_candles_then_the_pairs_decision() -> None:
    events = pair_row_events({**row(3, 2.5), "x_lag_s": 60.0}, (Y, X))
    assert not isinstance(events, str)
    y, x, decision = events
    assert (y.product, y.close, y.at_ms) == (Y, D("40000.0"), 180_000)
    assert (x.product, x.close, x.at_ms) == (X, D("2000.0"), 120_000)  # x's candle at its own close
    assert (decision.product, decision.at_ms, decision.legs, decision.features["z"]) == (PAIR, 180_000, (Y, X), 2.5)
    warming = pair_row_events({**row(3, 0.0), "z": None}, (Y, X))
    assert not isinstance(warming, str) and math.isnan(warming[2].features["z"])
    assert pair_row_events({**row(3, 0.0), "x_close": 0}, (Y, X)) == "bad_price"


def test_entry_sizes_both_legs_dollar_neutral_and_exit_closes_them(tmp_path) -> None:
    session = run_rows([row(1, 0.0), row(2, 2.5), row(3, 1.5), row(4, 0.2)], tmp_path)
    service = session.service
    orders = list(service.orders.values())
    want_y, want_x = leg_quantities(-1, NOTIONAL, D("40000.0"), D("2000.0"), D("1.5"))  # short the spread
    assert [(o.request.product, o.request.side, o.request.quantity) for o in orders] == [
        (Y, Side.SELL, -want_y), (X, Side.BUY, want_x),  # entry at z 2.5
        (Y, Side.BUY, -want_y), (X, Side.SELL, want_x),  # exit at z 0.2 (1.5 holds)
    ]  # fmt: skip
    assert all(o.status == Status.FILLED for o in orders) and not session.log.unwound
    assert service.position(Y).quantity == 0 and service.position(X).quantity == 0
    assert orders[0].client_order_id == f"pairs-{PAIR}-120000-0" and orders[0].request.strategy == f"pairs:{PAIR}:enter"
    assert session.strategy.states[PAIR] == PairState(0, False)  # type: ignore[attr-defined]


def test_rows_of_other_pairs_and_repeated_rows_are_not_traded(tmp_path) -> None:
    events: list[MarketEvent] = []
    feed = PairRowFeed({PAIR: (Y, X)}, events.append)
    for record in [row(1, 2.5, pair="SOL-USDT__ETH-USDT"), row(2, 2.5), row(2, 2.5), {"pair_id": PAIR}]:
        feed.on_row(record)
    assert len(events) == 3 and feed.rejects.counts == {"stale_row": 1, "bad_time": 1}
    feed.on_row({"control": "end"})
    assert feed.ended


def assert_flat_apart_from_fees(session: TradingSession) -> None:
    service = session.service
    assert service.position(Y).quantity == 0 and service.position(X).quantity == 0
    fees = sum((o.fees for o in service.orders.values()), D(0))
    assert fees > 0 and service.balances[("paper", "USDT")] == START - fees
    assert session.strategy.states[PAIR] == PairState(0, False)  # type: ignore[attr-defined]


def test_a_second_leg_refused_by_a_risk_limit_unwinds_the_first(tmp_path) -> None:
    # the ETH leg (1.25 coins) is over the order size limit; the BTC leg (0.0625) is not
    session = run_rows([row(1, 0.0), row(2, 2.5)], tmp_path, RiskLimits(max_order_quantity=D("1"), allow_short=True))
    orders = list(session.service.orders.values())
    assert [(o.request.product, o.request.side, o.status) for o in orders] == [
        (Y, Side.SELL, Status.FILLED),
        (Y, Side.BUY, Status.FILLED),  # the unwind, a market order
    ]
    assert orders[1].client_order_id == f"{orders[0].client_order_id}-unwind"
    assert orders[1].request.quantity == orders[0].filled
    assert session.log.unwound == {"refused": 1} and session.log.refused == {"order_size": 1}
    assert_flat_apart_from_fees(session)


def test_without_a_margin_account_the_short_leg_is_refused_and_the_long_one_unwound(tmp_path) -> None:
    # long the spread: buy BTC, sell ETH not held; a cash account refuses the sale
    session = run_rows([row(1, 0.0), row(2, -2.5)], tmp_path, RiskLimits(allow_short=False))
    orders = list(session.service.orders.values())
    assert [(o.request.product, o.request.side) for o in orders] == [(Y, Side.BUY), (Y, Side.SELL)]
    assert session.log.unwound == {"refused": 1} and session.log.refused == {"reserves": 1}
    assert_flat_apart_from_fees(session)


def test_after_an_undone_entry_the_pair_enters_again_at_the_next_signal(tmp_path) -> None:
    limits = RiskLimits(max_order_quantity=D("1"), allow_short=True)
    session = run_rows([row(1, 0.0), row(2, 2.5), row(3, 2.6, x=4000.0)], tmp_path, limits)
    filled = [o for o in session.service.orders.values() if o.status == Status.FILLED]
    assert len(filled) == 4 and session.log.unwound == {"refused": 1}  # minute 3's ETH leg is 0.625 coins
    assert session.strategy.states[PAIR].position == -1  # type: ignore[attr-defined]


def order(status: Status, filled: str = "0", name: str = "a", side: Side = Side.BUY) -> Order:
    request = OrderRequest(name, "paper", Y, side, OrderType.MARKET, D("2"), None, TimeInForce.IOC)
    return Order(request, status, D(filled))


@pytest.mark.parametrize(
    ("legs", "now", "verdict", "why"),
    [
        ({"a": order(Status.FILLED, "2"), "b": order(Status.FILLED, "2", "b")}, 0, Verdict.FILLED, "filled"),
        ({"a": order(Status.FILLED, "2")}, 0, Verdict.UNDO, "refused"),  # b never sent
        ({"a": order(Status.FILLED, "2"), "b": order(Status.REJECTED, name="b")}, 0, Verdict.UNDO, "rejected"),
        ({"a": order(Status.FILLED, "2"), "b": order(Status.OPEN, name="b")}, 4999, Verdict.PENDING, "pending"),
        ({"a": order(Status.FILLED, "2"), "b": order(Status.OPEN, name="b")}, 5000, Verdict.UNDO, "timeout"),
    ],
)
def test_the_leg_verdict(legs: dict[str, Order], now: int, verdict: Verdict, why: str) -> None:
    assert leg_verdict(LegGroup("g", ("a", "b" if "b" in legs else None), 5000), legs, now) == (verdict, why)


def test_unwinding_reverses_what_each_leg_filled() -> None:
    legs = [order(Status.PARTIALLY_FILLED, "1.5"), order(Status.OPEN, name="b", side=Side.SELL)]
    (unwind,) = unwind_requests(legs, 7, "pairs")
    assert (unwind.client_order_id, unwind.side, unwind.quantity, unwind.type) == ("a-unwind", Side.SELL, D("1.5"),
                                                                                   OrderType.MARKET)  # fmt: skip
