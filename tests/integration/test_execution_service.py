"""The execution service on the real trading database (SQLite and PostgreSQL), driven by real Coinbase BTC-USD books
through the paper venue: a restart rebuilds every order, balance and position exactly; bad reports are refused,
counted and never reach the ledger; the kill switch cancels and blocks, and survives a restart."""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from coinflow.settings import Settings
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import EventKind, OrderEvent, Status
from inference_pipeline.execution.backtest import in_time_order, run_backtest
from inference_pipeline.execution.paper import Latency, PaperVenue
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import BookEvent, DecisionEvent, MarketEvent, TradingSession
from inference_pipeline.execution.store import TradingStore, connect, ledger_table
from inference_pipeline.execution.strategies import ActionStrategy
from tests.support.paths import COINBASE_SNAPSHOTS
from tests.support.postgres import temporary_database

PRODUCT = "BTC-USD"
FEES = FeeSchedule(maker=D("0.006"), taker=D("0.012"))
LIMITS = RiskLimits(max_notional=D(50_000), price_band=D("0.02"), max_orders_per_second=10, max_book_age_ms=10_000)
CYCLE = ("close_buy", "noop", "force_buy", "close_sell", "noop", "force_sell", "close_buy", "close_buy", "close_sell")


def snapshots(rows: int) -> Iterator[BookEvent]:
    """The first `rows` real snapshots of the bundled file as book events (the file's times are UTC-4)."""
    from datetime import datetime

    with gzip.open(COINBASE_SNAPSHOTS, "rt", newline="") as handle:
        for row in itertools.islice(csv.DictReader(handle), rows):
            side = {
                s: [(D(row[f"{s}_{i}_Price"]), D(row[f"{s}_{i}_Size"])) for i in range(1, 51)] for s in ("Bid", "Ask")
            }
            at_ms = int(datetime.fromisoformat(row["Timestamp"]).timestamp() * 1000)
            yield BookEvent(PRODUCT, True, side["Bid"], side["Ask"], at_ms)


def with_decisions(events: Iterator[BookEvent], every_ms: int = 4_000) -> Iterator[MarketEvent]:
    """The book events with a decision at each `every_ms` boundary, after the last book before it."""
    boundary = None
    for event in events:
        if boundary is None:
            boundary = (event.at_ms // every_ms + 1) * every_ms
        while event.at_ms >= boundary:
            yield DecisionEvent(PRODUCT, boundary, {})
            boundary += every_ms
        yield event


def scripted() -> ActionStrategy:
    """The action strategy with a fixed cycle of actions by decision time instead of a model (stateless, as a model
    is; the model's part is tested apart)."""
    return ActionStrategy(
        lambda market: CYCLE[(market.at_ms // 4000) % len(CYCLE)],
        tick=D("0.01"),
        size_increment=D("0.00000001"),
        trade_fraction=D("0.5"),
    )


def open_service(url: str, first: bool) -> ExecutionService:
    venue = PaperVenue(FEES, Latency(order_ms=50, report_ms=20))
    service = ExecutionService.restore(TradingStore(connect(url)), venue, LIMITS, FEES)
    if first:
        service.deposit("USD", D(10_000), 0)
    return service


def state(service: ExecutionService) -> tuple:
    return (
        {k: v for k, v in service.orders.items()},
        dict(service.balances),
        dict(service.positions),
        service.kill_switch,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trading.db'}"
    else:
        with temporary_database("coinflow_trading") as url:
            yield url.replace("postgresql://", "postgresql+psycopg://")


def test_a_restart_rebuilds_every_order_balance_and_position_exactly(db_url: str) -> None:
    service = open_service(db_url, first=True)
    session = TradingSession(service, scripted(), PRODUCT, LIMITS.max_book_age_ms)
    log = session.run(with_decisions(snapshots(400)))
    statuses = {o.status for o in service.orders.values()}
    assert log.sent >= 20 and {Status.FILLED, Status.CANCELLED} <= statuses, (log, statuses)
    assert service.bad_reports == {}

    restored = open_service(db_url, first=False)
    assert state(restored) == state(service)
    # the ledger is the sum of its parts: cash = deposit - what the fills cost - their fees
    fills = [o for o in service.orders.values() if o.filled]
    spent = sum((o.filled_notional * (1 if o.request.side == "buy" else -1) for o in fills), D(0))
    fees = sum((o.fees for o in service.orders.values()), D(0))
    assert service.balances[("paper", "USD")] == D(10_000) - spent - fees
    assert service.balances.get(("paper", "BTC"), D(0)) == service.position(PRODUCT).quantity
    assert fees > 0


def test_bad_reports_are_refused_counted_and_never_reach_the_ledger(db_url: str) -> None:
    service = open_service(db_url, first=True)
    session = TradingSession(service, scripted(), PRODUCT, LIMITS.max_book_age_ms)
    session.run(with_decisions(snapshots(60)))
    filled = next(o for o in service.orders.values() if o.status == Status.FILLED and o.request.type == "market")
    cancelled = next(o for o in service.orders.values() if o.status == Status.CANCELLED)
    engine = service.store.engine
    with engine.connect() as c:
        ledger_rows = c.execute(sa.select(sa.func.count()).select_from(ledger_table)).scalar_one()
    a_fill = next(e.fill for e in service.store.load().events if e.fill and e.client_order_id == filled.client_order_id)
    before = state(service)
    bad = [
        OrderEvent(filled.client_order_id, EventKind.FILL, 1, fill=a_fill),  # the same fill again
        OrderEvent("never-sent", EventKind.FILL, 1, fill=replace(a_fill, fill_id="x1", client_order_id="never-sent")),
        OrderEvent(filled.client_order_id, EventKind.FILL, 1, fill=replace(a_fill, fill_id="x2")),  # past its quantity
        OrderEvent(cancelled.client_order_id, EventKind.ACCEPTED, 1),  # after it is done
        OrderEvent(cancelled.client_order_id, EventKind.FILL, 1,
                   fill=replace(a_fill, fill_id="x3", client_order_id=cancelled.client_order_id)),
    ]  # fmt: skip
    assert service.handle(bad) == []
    assert service.bad_reports["duplicate_fill"] == 1
    assert service.bad_reports["unknown_order"] == 1
    assert sum(service.bad_reports.values()) == 5
    assert state(service) == before
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(ledger_table)).scalar_one() == ledger_rows
    assert state(open_service(db_url, first=False)) == before


def test_the_kill_switch_cancels_every_open_order_blocks_new_ones_and_survives_a_restart(db_url: str) -> None:
    service = open_service(db_url, first=True)
    session = TradingSession(service, scripted(), PRODUCT, LIMITS.max_book_age_ms)
    events = list(with_decisions(snapshots(120)))
    seen = 0
    while not service.open_orders():  # until a close order rests
        session.on_event(events[seen])
        seen += 1
    resting = service.open_orders()
    at = events[seen - 1].at_ms
    service.set_kill_switch(True, at, "test")
    service.poll(at + 1_000)
    assert service.open_orders() == []
    assert all(service.orders[o.client_order_id].status == Status.CANCELLED for o in resting)
    refused = session.log.refused["kill_switch"]
    for event in events[seen:]:
        session.on_event(event)
    assert session.log.refused["kill_switch"] > refused and service.open_orders() == []
    restored = open_service(db_url, first=False)
    assert restored.kill_switch
    restored.set_kill_switch(False, events[-1].at_ms)
    assert not open_service(db_url, first=False).kill_switch


def test_a_backtest_is_deterministic_and_its_numbers_add_up(tmp_path) -> None:
    settings = Settings(run_dir=tmp_path, trading_max_daily_loss=None)
    results = []
    for n in (1, 2):
        events = in_time_order(
            snapshots(400), (e for e in with_decisions(snapshots(400)) if isinstance(e, DecisionEvent))
        )
        results.append(
            run_backtest(settings, scripted(), PRODUCT, "coinbase", events, f"sqlite:///{tmp_path}/bt{n}.db")
        )
    first, second = results
    assert first.service.orders == second.service.orders and first.service.balances == second.service.balances
    metrics = first.metrics
    last = first.log.equity[-1]
    assert metrics["pnl"] == pytest.approx(float(last.equity) - 10_000)
    cash, coin = first.service.balances[("paper", "USD")], first.service.balances.get(("paper", "BTC"), D(0))
    assert last.equity == cash + coin * last.mid
    assert metrics["fees"] == pytest.approx(float(sum(o.fees for o in first.service.orders.values())))
    assert 0 < metrics["passive_fill_ratio"] < 1
    hold = first.benchmarks["buy and hold"]
    coin_held = D(10_000) / (first.log.equity[0].ask * D("1.012"))
    assert hold["pnl"] == pytest.approx(float(coin_held * last.mid) - 10_000)
    assert first.benchmarks["no-op"]["pnl"] == 0
    with pytest.raises(ValueError, match="already holds an account"):
        run_backtest(settings, scripted(), PRODUCT, "coinbase", [], f"sqlite:///{tmp_path}/bt1.db")


def test_the_commands_show_the_account_and_set_the_kill_switch(tmp_path) -> None:
    from typer.testing import CliRunner

    from inference_pipeline.__main__ import app

    url = f"sqlite:///{tmp_path / 'trading.db'}"
    service = open_service(url, first=True)
    TradingSession(service, scripted(), PRODUCT, LIMITS.max_book_age_ms).run(with_decisions(snapshots(100)))
    runner = CliRunner()
    shown = runner.invoke(app, ["positions", "--db", url], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert f"{service.balances[('paper', 'USD')]:f}" in shown.output and "kill switch: off" in shown.output
    live = runner.invoke(app, ["orders", "--db", url], env={"COLUMNS": "250"})
    assert all(o.client_order_id in live.output for o in service.open_orders()) and service.open_orders()
    turned = runner.invoke(app, ["kill-switch", "on", "--db", url, "--reason", "test"])
    assert turned.exit_code == 0 and f"{len(service.open_orders())} live order(s)" in turned.output
    assert open_service(url, first=False).kill_switch
    assert runner.invoke(app, ["kill-switch", "maybe", "--db", url]).exit_code == 2
    unmeant = runner.invoke(app, ["trade", "--product", "coinbase:BTC-USD", "--venue", "coinbase"])
    assert unmeant.exit_code == 2 and "--live" in unmeant.output  # real money needs saying so


@pytest.mark.parametrize("crash_after", [37, 101, 166, 250, 333])
def test_a_session_recovered_after_a_crash_ends_exactly_as_an_uninterrupted_one(db_url: str, tmp_path, crash_after):
    """The process dies after `crash_after` events (resting orders, queues, replacements waiting for cancels and
    reports in flight die with it); a new one folds the account back from the database, replays the same events
    from the start with the recorded requests (`recover`) and trades on: the same orders, fills, cash and
    positions as a session that never stopped."""
    events = list(with_decisions(snapshots(400)))
    whole = open_service(f"sqlite:///{tmp_path / 'whole.db'}", first=True)
    TradingSession(whole, scripted(), PRODUCT, LIMITS.max_book_age_ms).run(events)

    first = open_service(db_url, first=True)
    crashed = TradingSession(first, scripted(), PRODUCT, LIMITS.max_book_age_ms)
    for event in events[:crash_after]:
        crashed.on_event(event)
    assert any(o.live for o in first.orders.values()) or crash_after == 333

    service = open_service(db_url, first=False)
    restarted = TradingSession(service, scripted(), PRODUCT, LIMITS.max_book_age_ms)
    times = [r.at_ms for r in service.venue_requests] + [o.updated_ms for o in service.orders.values()]
    restarted.recover(service.venue_requests, max(times))
    restarted.run(events)
    assert service.orders == whole.orders
    assert service.balances == whole.balances
    assert service.positions == whole.positions
    assert service.bad_reports == {} and service.replayed_reports > 0
