"""The trading session's Prometheus metrics, read from a real execution service on SQLite and the paper venue: orders
by status, fills, position, PnL, refusals and skipped decisions by reason, the order-to-fill latency; and served."""

from __future__ import annotations

import urllib.request
from decimal import Decimal as D

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import OrderType, Side, TimeInForce
from inference_pipeline.execution.metrics import TradingMetrics, serve_metrics, stop_metrics
from inference_pipeline.execution.paper import Latency, PaperVenue
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import BookEvent, DecisionEvent, TradingSession
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.strategies import Intent, MarketView, Place, PortfolioView
from tests.support.ports import free_port

FEES = FeeSchedule(maker=D("0.001"), taker=D("0.002"))
BIDS = [(D(99), D(1)), (D(98), D(2))]
ASKS = [(D(101), D("0.5")), (D(102), D(1)), (D(103), D(4))]
SCRIPT = {
    2_000: [Place(Side.BUY, OrderType.MARKET, D(1), "take")],  # fills 0.5 at 101 and 0.5 at 102
    3_000: [Place(Side.BUY, OrderType.LIMIT, D(1), "rest", D(98), TimeInForce.GTC, post_only=True)],  # rests
    4_000: [
        Place(Side.BUY, OrderType.LIMIT, D(1), "cross", D(103), TimeInForce.GTC, post_only=True)
    ],  # takes: rejected
    5_000: [Place(Side.BUY, OrderType.MARKET, D(3), "big")],  # above the order size limit: refused
}


class Scripted:
    """The intents of SCRIPT at each decision's time."""

    name = "scripted"

    def decide(self, market: MarketView, portfolio: PortfolioView) -> list[Intent]:
        return list(SCRIPT.get(market.at_ms, []))


def traded(tmp_path) -> tuple[TradingSession, TradingMetrics]:
    venue = PaperVenue(FEES, Latency(order_ms=50, report_ms=20))
    limits = RiskLimits(max_order_quantity=D(2), max_book_age_ms=10_000)
    service = ExecutionService.restore(
        TradingStore(connect(f"sqlite:///{tmp_path / 'trading.db'}")), venue, limits, FEES
    )
    service.deposit("USD", D(10_000), 0)
    session = TradingSession(service, Scripted(), "BTC-USD", limits.max_book_age_ms)
    metrics = TradingMetrics(session)
    events = [DecisionEvent("BTC-USD", 500, {}), BookEvent("BTC-USD", True, BIDS, ASKS, 1_000)]  # no book yet: skipped
    session.run([*events, *(DecisionEvent("BTC-USD", at, {}) for at in sorted(SCRIPT))])
    return session, metrics


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics[(name, frozenset(({"venue": "paper"} | labels).items()))]


def test_the_metrics_are_the_sessions_state_at_the_scrape(tmp_path) -> None:
    session, metrics = traded(tmp_path)
    m = samples(generate_latest(metrics.registry).decode())
    product = {"product": "BTC-USD"}
    orders = {status: value(m, "coinflow_trading_orders", status=status, **product) for status in
              ("new", "open", "partially_filled", "filled", "cancelled", "rejected", "expired")}  # fmt: skip
    assert orders == {"new": 0, "open": 1, "partially_filled": 0, "filled": 1, "cancelled": 0, "rejected": 1,
                      "expired": 0}  # fmt: skip
    assert value(m, "coinflow_trading_fills_total", **product) == 2
    assert value(m, "coinflow_trading_position", **product) == 1
    assert value(m, "coinflow_trading_average_cost", **product) == 101.5
    assert value(m, "coinflow_trading_fees", **product) == 0.203  # 0.2 % of 50.5 + 51
    assert value(m, "coinflow_trading_realised_pnl", **product) == 0
    assert value(m, "coinflow_trading_unrealised_pnl", **product) == -1.5  # at the mid, 100
    assert value(m, "coinflow_trading_balance", asset="USD") == 9898.297
    assert value(m, "coinflow_trading_balance", asset="BTC") == 1
    assert value(m, "coinflow_trading_equity", quote="USD") == 9998.297
    assert value(m, "coinflow_trading_risk_refusals_total", reason="order_size", **product) == 1
    assert value(m, "coinflow_trading_skipped_decisions_total", reason="no_book", **product) == 1
    assert value(m, "coinflow_trading_decisions_total", **product) == 4
    assert value(m, "coinflow_trading_kill_switch") == 0
    # each fill: the order's 50 ms to the book and the report's 20 ms
    assert value(m, "coinflow_trading_order_fill_latency_seconds_count", **product) == 2
    assert value(m, "coinflow_trading_order_fill_latency_seconds_sum", **product) == 0.14
    assert value(m, "coinflow_trading_order_fill_latency_seconds_bucket", le="0.05", **product) == 0
    assert value(m, "coinflow_trading_order_fill_latency_seconds_bucket", le="0.075", **product) == 2

    session.service.set_kill_switch(True, 6_000)
    session.service.poll(6_100)  # the resting order's cancel is reported
    m = samples(generate_latest(metrics.registry).decode())
    assert value(m, "coinflow_trading_kill_switch") == 1
    assert value(m, "coinflow_trading_orders", status="open", **product) == 0
    assert value(m, "coinflow_trading_orders", status="cancelled", **product) == 1


def test_the_metrics_are_served_over_http_and_port_0_serves_none(tmp_path) -> None:
    _, metrics = traded(tmp_path)
    assert serve_metrics(metrics.registry, 0) is None
    port = free_port()
    server = serve_metrics(metrics.registry, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            m = samples(response.read().decode())
    finally:
        stop_metrics(server)
    assert value(m, "coinflow_trading_fills_total", product="BTC-USD") == 2


def test_after_a_restart_the_counts_are_the_databases_and_the_latency_starts_empty(tmp_path) -> None:
    first, _ = traded(tmp_path)
    service = ExecutionService.restore(first.service.store, PaperVenue(FEES), first.service.limits, FEES)
    metrics = TradingMetrics(TradingSession(service, Scripted(), "BTC-USD", 10_000))
    m = samples(generate_latest(metrics.registry).decode())
    assert value(m, "coinflow_trading_fills_total", product="BTC-USD") == len(service.store.load().fills) == 2
    assert value(m, "coinflow_trading_orders", status="open", product="BTC-USD") == 1
    assert value(m, "coinflow_trading_position", product="BTC-USD") == 1
    assert value(m, "coinflow_trading_order_fill_latency_seconds_count", product="BTC-USD") == 0
