"""Prometheus metrics of a trading session, in a registry of its own (one per session, so tests can build several).

A collector reads the live state of the session and its execution service
at each scrape (orders by status, fills, positions, balances, equity and
PnL at the session's mids, refused orders, skipped decisions and undone legs by reason,
reports refused, the kill switch), so the trading loop does no work for
them. The scrape runs in the HTTP server's thread: it copies each dict or
counter in one call (atomic under the GIL) and reads only immutable values,
so a scrape never disturbs the loop, though its numbers need not be one
instant's. Only the order-to-fill latency is observed as it happens, by a
listener of the service's applied reports.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from coinflow.trading.accounting import Position, mark_to_market
from coinflow.trading.orders import EventKind, Order, OrderEvent, Status
from inference_pipeline.execution.session import TradingSession

logger = logging.getLogger(__name__)

# Seconds from an order's creation (its decision) to each of its fills: a market order on paper takes the order
# and report latencies (70 ms by default), a resting order as long as the market takes to come to it.
FILL_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class SessionCollector:
    """The session's state as metric families, read at scrape time."""

    def __init__(self, session: TradingSession) -> None:
        self.session = session

    def collect(self) -> Iterator[Metric]:
        session = self.session
        service = session.service
        venue = service.venue.name
        orders: list[Order] = list(service.orders.values())
        positions: dict[tuple[str, str], Position] = dict(service.positions)
        balances: dict[tuple[str, str], Decimal] = dict(service.balances)
        marks = {product: quote.mid for product, quote in dict(session.quotes).items()}

        products = sorted(
            {session.product} | {o.request.product for o in orders} | {p for v, p in positions if v == venue}
        )
        by_status = {(p, s): 0 for p in products for s in Status}
        fills = dict.fromkeys(products, 0)
        for order in orders:
            by_status[(order.request.product, order.status)] += 1
            fills[order.request.product] += service.fill_count(order.client_order_id)
        family: GaugeMetricFamily | CounterMetricFamily = GaugeMetricFamily(
            "coinflow_trading_orders",
            "Orders of the account by product and status.",
            labels=["venue", "product", "status"],
        )
        for (product, status), count in by_status.items():
            family.add_metric([venue, product, str(status)], count)
        yield family
        family = CounterMetricFamily(
            "coinflow_trading_fills", "Fills recorded in the account, by product.", labels=["venue", "product"]
        )
        for product, count in fills.items():
            family.add_metric([venue, product], count)
        yield family

        held = {product: positions.get((venue, product)) or Position(venue, product) for product in products}
        per_product = {
            "coinflow_trading_position": ("Coin held per product (negative: short).", lambda p: p.quantity),
            "coinflow_trading_average_cost": ("Average cost of the position.", lambda p: p.average_cost),
            "coinflow_trading_realised_pnl": ("Realised PnL per product, before fees.", lambda p: p.realised_pnl),
            "coinflow_trading_fees": ("Fees paid per product.", lambda p: p.fees),
        }
        for name, (documentation, value) in per_product.items():
            family = GaugeMetricFamily(name, documentation, labels=["venue", "product"])
            for product, position in held.items():
                family.add_metric([venue, product], float(value(position)))
            yield family
        family = GaugeMetricFamily(
            "coinflow_trading_unrealised_pnl",
            "Unrealised PnL per product at the mid (absent: no book yet).",
            labels=["venue", "product"],
        )
        for product, position in held.items():
            if product in marks:
                family.add_metric([venue, product], float(position.unrealised_pnl(marks[product])))
        yield family
        family = GaugeMetricFamily(
            "coinflow_trading_balance", "Balances per asset (the ledger's sums).", labels=["venue", "asset"]
        )
        for (v, asset), amount in sorted(balances.items()):
            if v == venue:
                family.add_metric([venue, asset], float(amount))
        yield family
        family = GaugeMetricFamily(
            "coinflow_trading_equity",
            "Equity in the quote asset, every coin at its product's mid (absent: a coin without a book yet).",
            labels=["venue", "quote"],
        )
        try:
            mark = mark_to_market(balances, positions, marks, venue, session.quote_asset)
        except (ValueError, KeyError):  # a coin or a position without a mid: its value would be a guess
            pass
        else:
            family.add_metric([venue, session.quote_asset], float(mark.equity))
        yield family

        labels = [venue, session.product]
        log = session.log
        family = CounterMetricFamily(
            "coinflow_trading_decisions", "Decisions taken (marked).", labels=["venue", "product"]
        )
        family.add_metric(labels, len(log.equity))
        yield family
        counted = {
            "coinflow_trading_risk_refusals": ("Orders refused before sending, by limit.", log.refused),
            "coinflow_trading_skipped_decisions": ("Decisions skipped, by reason.", log.skipped),
            "coinflow_trading_legs_unwound": (
                "Multi-leg intents undone (a leg did not fill: its filled legs unwound), by reason.",
                log.unwound,
            ),
        }
        for name, (documentation, counter) in counted.items():
            family = CounterMetricFamily(name, documentation, labels=["venue", "product", "reason"])
            for reason, count in sorted(dict(counter).items()):
                family.add_metric([*labels, reason], count)
            yield family
        family = CounterMetricFamily(
            "coinflow_trading_bad_reports",
            "Venue reports refused (never recorded), by reason.",
            labels=["venue", "reason"],
        )
        for reason, count in sorted(dict(service.bad_reports).items()):
            family.add_metric([venue, reason], count)
        yield family
        family = GaugeMetricFamily("coinflow_trading_kill_switch", "1 while the kill switch is on.", labels=["venue"])
        family.add_metric([venue], 1 if service.kill_switch else 0)
        yield family


@dataclass(eq=False)  # registered in a CollectorRegistry, which keys collectors by identity
class LatencyHistogram:
    """Order-to-fill latencies per (venue, product), kept in this object. Not a prometheus-client `Histogram`: that
    keeps its values where the process-wide value class says, and importing Feast switches it to shared files by
    metric name (so two sessions in one process would add up)."""

    buckets: tuple[float, ...] = FILL_LATENCY_BUCKETS
    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)

    def start(self, venue: str, product: str) -> None:
        self.counts.setdefault((venue, product), [0] * (len(self.buckets) + 1))
        self.sums.setdefault((venue, product), 0.0)

    def observe(self, venue: str, product: str, seconds: float) -> None:
        self.start(venue, product)
        self.counts[(venue, product)][bisect.bisect_left(self.buckets, seconds)] += 1
        self.sums[(venue, product)] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "coinflow_trading_order_fill_latency_seconds",
            "Time from an order's creation (its decision) to each of its fills, on the session's clock.",
            labels=["venue", "product"],
        )
        for key, counts in sorted(dict(self.counts).items()):
            cumulative = list(itertools.accumulate(counts))
            edges = [*(repr(b) for b in self.buckets), "+Inf"]
            family.add_metric(list(key), list(zip(edges, cumulative, strict=True)), self.sums[key])
        yield family


class TradingMetrics:
    """A session's metrics: the collector and the order-to-fill latency, which listens to the service's reports."""

    def __init__(self, session: TradingSession, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(SessionCollector(session))
        self.fill_latency = LatencyHistogram()
        self.fill_latency.start(session.service.venue.name, session.product)  # there from the start, at 0
        self.registry.register(self.fill_latency)
        session.service.listeners.append(self.observe)

    def observe(self, event: OrderEvent, order: Order) -> None:
        """Time a fill the service applied (reports of a replay, already recorded, never reach it)."""
        fill = event.fill
        if event.kind == EventKind.FILL and fill is not None:
            seconds = max(fill.local_ms - order.request.created_ms, 0) / 1000
            self.fill_latency.observe(fill.venue, fill.product, seconds)


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> WSGIServer | None:
    """Serve `registry` on http://addr:port/metrics in a thread (port 0: not at all); `stop_metrics` stops it."""
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ValueError(
            f"trading metrics port {port} is taken ({exc}): set COINFLOW_TRADING_METRICS_PORT (0: off)"
        ) from exc
    logger.info("trading metrics on http://%s:%d/metrics", addr, port)
    return server


def stop_metrics(server: WSGIServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
