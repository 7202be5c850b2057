"""Benchmark of the execution service on the paper venue: decision-to-fill latency and orders per second.

    .venv/bin/python -m bench.bench_trading [--quick] [--databases sqlite,postgresql]

Input: the real Coinbase BTC-USD snapshots (data/coinbase/l2_snapshots_...),
one book update per order. Each step: a snapshot reaches the session (the
paper venue's book and the quotes), a market order of 0.001 BTC is decided,
checked by every risk limit, recorded and sent, the paper venue fills it
(no simulated latency, and the venue's clock moved on at once: the time
measured is the service's own), and its acceptance and fill are recorded (order row, request, events, fill, ledger) in the trading
database. Latency: from the book update's arrival to the fill's commit.

1. At a fixed rate (100 orders/s, the issue's target: p99 under 10 ms), per
   database.
2. As fast as it goes: orders/s, against a bare loop that writes the same
   rows to the same database in the same transactions and does nothing else
   (the database's own cost), in the same run.

SQLite is a file in a temporary directory (WAL, synchronous=FULL: each
commit waits for the disk); PostgreSQL is a temporary database on the
machine's server (127.0.0.1:5432), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from rich.table import Table

from bench.bench_feature_pipeline import console, machine_info
from coinflow.books import frame_sides
from coinflow.exchange_files import iter_snapshot_csv
from coinflow.quality import Rejects
from coinflow.trading.accounting import fill_entries
from coinflow.trading.fees import COINBASE_FEES
from coinflow.trading.orders import OrderType, Side, TimeInForce
from inference_pipeline.execution.paper import PaperVenue
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import BookEvent, DecisionEvent, TradingSession
from inference_pipeline.execution.store import (
    TradingStore,
    _entry_row,
    _fill_row,
    _request_row,
    connect,
    events_table,
    fills_table,
    ledger_table,
    orders_table,
    requests_table,
)
from inference_pipeline.execution.strategies import Place

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = ROOT / "data" / "coinbase" / "l2_snapshots_BTC-USD_2020-04-11.csv.gz"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
LIMITS = RiskLimits(
    max_notional=Decimal(10**9), max_total_notional=Decimal(10**9), max_orders_per_second=10**6,
    max_daily_loss=Decimal(10**9), price_band=Decimal("0.02"), max_book_age_ms=10**9,
)  # fmt: skip
TARGET_P99_MS = 10.0


class EveryStep:
    """Alternately buys and sells 0.001 BTC at market on every decision (the orders the bench times)."""

    name = "bench"

    def __init__(self) -> None:
        self.n = 0

    def decide(self, market, portfolio):
        self.n += 1
        side = Side.BUY if self.n % 2 else Side.SELL
        return [Place(side, OrderType.MARKET, Decimal("0.001"), "bench", time_in_force=TimeInForce.IOC)]


def book_events(count: int) -> list[BookEvent]:
    events = []
    for frame in iter_snapshot_csv(SNAPSHOTS, "coinbase", "BTC-USD", Rejects("bench")):
        sides = frame_sides(frame["bids"], frame["asks"])
        assert not isinstance(sides, str), "the parser passes only usable levels"
        events.append(BookEvent("BTC-USD", True, sides[0], sides[1], frame["timestamp_ms"]))
        if len(events) == count:
            return events
    return events


def run_service(url: str, events: list[BookEvent], rate: float | None) -> dict:
    """One order per book update through the session and service; latency from the update to the fill's commit."""
    venue = PaperVenue(COINBASE_FEES)
    service = ExecutionService.restore(TradingStore(connect(url)), venue, LIMITS, COINBASE_FEES)
    service.deposit("USD", Decimal(10**7), 0)
    service.deposit("BTC", Decimal(100), 0)
    session = TradingSession(service, EveryStep(), "BTC-USD", LIMITS.max_book_age_ms or 0)
    latencies = []
    started = time.perf_counter()
    for i, event in enumerate(events):
        if rate:
            due = started + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.002))
        arrived = time.perf_counter()
        session.on_event(event)
        session.on_event(DecisionEvent("BTC-USD", event.at_ms, {}))
        service.poll(event.at_ms)  # the venue's clock moves on at once (no simulated latency here)
        order = service.orders.get(f"bench-BTC-USD-{event.at_ms}-0")
        if order is not None and order.filled:
            latencies.append((time.perf_counter() - arrived) * 1000)
    elapsed = time.perf_counter() - started
    fills = sum(1 for o in service.orders.values() if o.filled)
    return {
        "orders": len(service.orders),
        "filled": fills,
        "orders_per_s": len(service.orders) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "refused": dict(session.log.refused),
    }


def run_bare(url: str, template_url: str, count: int) -> dict:
    """The same rows, written in the same transactions (order + request; accepted event; fill + ledger + event),
    with nothing else: the database's share of the service's cost."""
    done = TradingStore(connect(template_url)).load()
    orders = {r.client_order_id: r for r in done.requests}
    fills = {f.client_order_id: f for f in done.fills}
    engine = connect(url)
    names = list(orders)[:count]
    started = time.perf_counter()
    for name in names:
        request, fill = orders[name], fills.get(name)
        with engine.begin() as c:
            c.execute(orders_table.insert(), _request_row(request))
            c.execute(requests_table.insert(), {"kind": "send", "client_order_id": name, "at_ms": 0})
        with engine.begin() as c:
            c.execute(events_table.insert(), {"client_order_id": name, "kind": "accepted", "at_ms": 0})
            if fill is not None:
                c.execute(fills_table.insert(), _fill_row(fill))
                c.execute(ledger_table.insert(), [_entry_row(e) for e in fill_entries(fill)])
                c.execute(events_table.insert(), {"client_order_id": name, "kind": "fill", "at_ms": 0,
                                                  "fill_venue": fill.venue, "fill_id": fill.fill_id})  # fmt: skip
    elapsed = time.perf_counter() - started
    return {"orders": len(names), "orders_per_s": len(names) / elapsed}


class Database:
    """A fresh database of one kind per call of `url`."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder = kind, folder
        self.created: list[str] = []

    def url(self) -> str:
        name = f"bench_trading_{uuid.uuid4().hex[:8]}"
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder / name}.db"
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def drop(self) -> None:
        for name in self.created:
            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 orders per phase instead of 3,000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--rate", type=float, default=100.0, help="orders/s of the fixed-rate phase")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    count = 500 if args.quick else 3000
    events = book_events(count)
    results: dict = {"machine": machine_info(), "orders": count, "rate": args.rate, "databases": {}}
    with tempfile.TemporaryDirectory(prefix="bench-trading-") as folder:
        for kind in args.databases.split(","):
            db = Database(kind, Path(folder))
            try:
                paced = run_service(db.url(), events, args.rate)
                fastest_url = db.url()
                fastest = run_service(fastest_url, events, None)
                bare = run_bare(db.url(), fastest_url, count)
            finally:
                db.drop()
            results["databases"][kind] = {"paced": paced, "fastest": fastest, "bare": bare}
    results["machine"]["load_end"] = __import__("os").getloadavg()[0]
    table = Table(title=f"execution service on the paper venue, {count} orders, one per real book update")
    for column in ("database", f"at {args.rate:g}/s: p50 / p99 ms", "fastest: orders/s", "p99 ms",
                   "bare writes: orders/s", "service / bare"):  # fmt: skip
        table.add_column(column, justify="right")
    for kind, r in results["databases"].items():
        table.add_row(
            kind,
            f"{r['paced']['p50_ms']:.2f} / {r['paced']['p99_ms']:.2f}",
            f"{r['fastest']['orders_per_s']:,.0f}",
            f"{r['fastest']['p99_ms']:.2f}",
            f"{r['bare']['orders_per_s']:,.0f}",
            f"{r['fastest']['orders_per_s'] / r['bare']['orders_per_s']:.2f}",
        )
    console.print(table)
    m = results["machine"]
    console.print(f"{m['cpu_model']}, {m['cores']} cores, load {m['load_start']:.2f} -> {m['load_end']:.2f}")
    met = all(r["paced"]["p99_ms"] <= TARGET_P99_MS for r in results["databases"].values())
    console.print(f"target p99 <= {TARGET_P99_MS:g} ms at {args.rate:g} orders/s: {'met' if met else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
