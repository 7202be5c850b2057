"""The trading commands of `python -m inference_pipeline`: positions, orders and the kill switch of an account in
the trading database (COINFLOW_TRADING_DB_URL, or --db)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from coinflow.exchange_files import FileFormatError
from coinflow.redact import redact
from coinflow.services import ServiceError
from coinflow.settings import Settings
from coinflow.trading.accounting import balances, positions
from inference_pipeline.execution.backtest import metrics_table
from inference_pipeline.execution.coinbase import GatewayError
from inference_pipeline.execution.models import ModelNotFound
from inference_pipeline.execution.runs import BacktestRun, backtest_action, backtest_threshold
from inference_pipeline.execution.service import KILL_SWITCH, fold_orders
from inference_pipeline.execution.store import Control, Recorded, TradingStore, connect
from inference_pipeline.execution.trading import run_pairs_trading, run_threshold_trading, run_trading

console = Console()

DbOption = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL of the trading database (default: the settings').")
]


def _recorded(settings: Settings, db: str | None) -> tuple[TradingStore, Recorded]:
    url = db or settings.trading_db_url
    try:
        store = TradingStore(connect(url))
        return store, store.load()
    except SQLAlchemyError as exc:
        console.print(f"[red]The trading database {redact(url)} cannot be read: {redact(exc)}[/red]")
        raise typer.Exit(1) from exc


def kill_switch_state(recorded: Recorded) -> bool:
    states = [c.value == "on" for c in recorded.controls if c.name == KILL_SWITCH]
    return bool(states and states[-1])


def show_positions(settings: Settings, db: str | None) -> None:
    """Balances and positions, folded from the ledger and the fills."""
    _, recorded = _recorded(settings, db)
    held = Table(title="balances")
    for column in ("venue", "asset", "balance"):
        held.add_column(column)
    for (venue, asset), amount in sorted(balances(recorded.ledger).items()):
        held.add_row(venue, asset, format(amount, "f"))
    table = Table(title="positions")
    for column in ("venue", "product", "quantity", "average cost", "realised PnL", "fees", "bought", "sold"):
        table.add_column(column)
    for (venue, product), p in sorted(positions(recorded.fills).items()):
        table.add_row(venue, product, *(f"{v:f}" for v in (p.quantity, p.average_cost, p.realised_pnl, p.fees,
                                                            p.bought, p.sold)))  # fmt: skip
    console.print(held, table)
    console.print(f"kill switch: {'ON' if kill_switch_state(recorded) else 'off'}")


def show_orders(settings: Settings, db: str | None, every: bool, last: int) -> None:
    """Live orders (or the last `last` of all orders)."""
    _, recorded = _recorded(settings, db)
    orders = list(fold_orders(recorded).values())
    chosen = orders[-last:] if every else [o for o in orders if o.live]
    table = Table(title="orders" if every else "live orders")
    for column in ("client order id", "product", "side", "type", "quantity", "limit", "status", "filled", "avg price"):
        table.add_column(column)
    for o in chosen:
        r = o.request
        table.add_row(r.client_order_id, r.product, r.side, r.type, f"{r.quantity:f}",
                      "" if r.limit_price is None else f"{r.limit_price:f}", o.status, f"{o.filled:f}",
                      "" if o.average_price is None else f"{o.average_price:.2f}")  # fmt: skip
    console.print(table)


def set_kill_switch(settings: Settings, db: str | None, on: bool, reason: str) -> None:
    """Record the kill switch; a trading process cancels its live orders and refuses new ones when it reads it."""
    store, recorded = _recorded(settings, db)
    store.set_control(Control(KILL_SWITCH, "on" if on else "off", reason or None, int(time.time() * 1000)))
    live = sum(1 for o in list(fold_orders(recorded).values()) if o.live)
    state = "ON: new orders are refused" if on else "off: orders pass the risk checks again"
    console.print(f"kill switch {state} ({live} live order(s) in the database).")


def backtest_problem(strategy: str, product: str | None, book_file: Path | None, pair: str | None) -> str | None:
    """What is wrong with the backtest command's options (None: nothing)."""
    if strategy == "action":
        if product is None or book_file is None:
            return "--strategy action needs --product <exchange>:<product> and --book-file."
        return _book_problem(product)
    if strategy == "threshold":
        return None if pair else "--strategy threshold needs --pair (BTC/USD)."
    return f"--strategy {strategy}: action or threshold."


def trade_problem(strategy: str, product: str | None, pair: str | None, venue: str, live: bool) -> str | None:
    """What is wrong with the trade command's options (None: nothing)."""
    if venue not in ("paper", "coinbase"):
        return f"--venue {venue}: paper or coinbase."
    if strategy == "action":
        if product is None:
            return "--strategy action needs --product <exchange>:<product>."
        if venue == "coinbase" and not live:
            return "--venue coinbase sends real orders with real money: add --live to mean it."
        return _book_problem(product)
    if strategy == "threshold":
        if venue != "paper":
            return ("--strategy threshold trades on the paper venue only (its step venue fills candles; the Coinbase "
                    "gateway trades books).")  # fmt: skip
        return None if pair else "--strategy threshold needs --pair (BTC/USD)."
    if strategy == "pairs":
        return None if venue == "paper" else "--strategy pairs trades on the paper venue only."
    return f"--strategy {strategy}: action, threshold or pairs."


def _book_problem(product: str) -> str | None:
    return None if ":" in product else f"--product {product!r} is not <exchange>:<product> (coinbase:BTC-USD)."


def _unwound(unwound: Counter[str]) -> str:
    return f"Intents undone (a leg did not fill): {dict(unwound)}. " if unwound else ""


def show_backtest(run: BacktestRun) -> None:
    """The strategy's and the benchmarks' numbers, side by side."""
    rows = metrics_table(run.result)
    table = Table(title=f"{run.model} on paper, {run.start:%Y-%m-%d %H:%M} to {run.end:%Y-%m-%d %H:%M} UTC")
    table.add_column("")
    for name in rows:
        table.add_column(name, justify="right")
    for metric in ("pnl", "return", "sharpe", "max_drawdown"):
        table.add_row(metric, *(f"{rows[name].get(metric, float('nan')):,.4f}" for name in rows))
    console.print(table)
    m = run.result.metrics
    console.print(
        f"orders {m['orders']:.0f} ({m['filled_orders']:.0f} with fills), fees {m['fees']:,.2f}, turnover "
        f"{m['turnover']:,.2f}, passive fill ratio {m['passive_fill_ratio']:.3f}; skipped decisions "
        f"{dict(run.result.log.skipped) or 'none'}, refused orders {dict(run.result.log.refused) or 'none'}. "
        f"{run.market_rejects.summary()}"
    )
    console.print(f"MLflow run {run.run_id}; the account is in {run.db_url} (`positions --db ...`).")


def register(app: typer.Typer, settings: Callable[[], Settings], tracking_uri: Callable[[Settings], str]) -> None:
    """Add the trading commands to the inference pipeline's CLI (`settings` reads them, once per command;
    `tracking_uri` finds or starts MLflow)."""

    @app.command("trade")
    def trade_command(
        strategy: Annotated[
            str,
            typer.Option(
                help="action: the action model over books; threshold: a price model over candles; pairs: the "
                "registered pairs configuration over the pair jobs' rows."
            ),
        ] = "action",
        product: Annotated[
            str | None, typer.Option(help="action: the book, <exchange>:<product> (coinbase:BTC-USD).")
        ] = None,
        pair: Annotated[str | None, typer.Option(help="threshold: the pair (BTC/USD).")] = None,
        horizon: Annotated[int, typer.Option(help="threshold: the price model's horizon in minutes.")] = 1,
        exchange: Annotated[str, typer.Option(help="threshold: whose fees the paper account pays.")] = "kraken",
        interval: Annotated[str, typer.Option(help="pairs: the configuration's interval (pairs-<interval>).")] = "1m",
        venue: Annotated[
            str, typer.Option(help="paper (the default) or coinbase (action only; real orders: needs --live).")
        ] = "paper",
        live: Annotated[
            bool, typer.Option("--live", help="Really send orders to the exchange (--venue coinbase).")
        ] = False,
        model_alias: Annotated[str | None, typer.Option(help="Registry alias (default champion).")] = None,
        model_version: Annotated[int | None, typer.Option(help="Registered version (instead of the alias).")] = None,
    ) -> None:
        """Trade a registered model live over the topics (action: the book's; threshold: the pair's candles; pairs:
        the pair jobs' rows), on the paper venue (or the action model on Coinbase with --live), until the input ends (a replay) or Ctrl-C; the
        account is in the trading database, the session in MLflow."""
        problem = trade_problem(strategy, product, pair, venue, live)
        if problem:
            console.print(f"[red]{problem}[/red]")
            raise typer.Exit(2)
        if venue == "coinbase":
            console.print(f"[bold red]LIVE TRADING on Coinbase: real orders for {product}, real money "
                          "(risk limits: COINFLOW_TRADING_*; stop: kill-switch on).[/bold red]")  # fmt: skip
        current = settings()
        uri = tracking_uri(current)
        try:
            if strategy == "action":
                assert product is not None
                run = run_trading(current, uri, product, model_alias, model_version, venue=venue)
            elif strategy == "pairs":
                run = run_pairs_trading(current, uri, interval, model_alias, model_version)
            else:
                assert pair is not None
                run = run_threshold_trading(current, uri, pair, horizon, exchange, model_alias, model_version)
        except (ModelNotFound, ValueError, ServiceError, GatewayError) as exc:
            console.print(f"[red]{redact(exc)}[/red]")
            raise typer.Exit(1) from exc
        if run.result is None:
            console.print(f"No decision was taken. {run.feed_rejects.summary()}")
            return
        m = run.result.metrics
        console.print(
            f"{m['orders']:.0f} orders, PnL {m['pnl']:,.2f} after {m['fees']:,.2f} fees over "
            f"{len(run.result.log.equity)} decisions"
            f"{'' if run.resumed_at_ms is None else ' after replaying the session to where it had stopped'}. "
            f"{_unwound(run.result.log.unwound)}MLflow run {run.run_id}. {run.feed_rejects.summary()}"
        )

    @app.command("backtest")
    def backtest_command(
        strategy: Annotated[
            str, typer.Option(help="action: the action model over books; threshold: a price model over candles.")
        ] = "action",
        product: Annotated[
            str | None, typer.Option(help="action: the book, <exchange>:<product> (coinbase:BTC-USD).")
        ] = None,
        book_file: Annotated[
            Path | None, typer.Option(help="action: L2 snapshots of the book (the replay-snapshots layout).")
        ] = None,
        pair: Annotated[str | None, typer.Option(help="threshold: the pair (BTC/USD).")] = None,
        horizon: Annotated[int, typer.Option(help="threshold: the price model's horizon in minutes.")] = 1,
        exchange: Annotated[str, typer.Option(help="threshold: whose fees the paper account pays.")] = "kraken",
        start: Annotated[str | None, typer.Option(help="ISO start (default: the model's test period).")] = None,
        end: Annotated[str | None, typer.Option(help="ISO end (default: the model's test period).")] = None,
        model_alias: Annotated[str | None, typer.Option(help="Registry alias (default champion).")] = None,
        model_version: Annotated[int | None, typer.Option(help="Registered version (instead of the alias).")] = None,
        db: DbOption = None,
    ) -> None:
        """Paper-trade a registered model over recorded books (action) or candles (threshold), log the session to
        MLflow, print its numbers."""
        problem = backtest_problem(strategy, product, book_file, pair)
        if problem:
            console.print(f"[red]{problem}[/red]")
            raise typer.Exit(2)
        current = settings()
        uri = tracking_uri(current)
        try:
            if strategy == "action":
                assert product is not None and book_file is not None
                run = backtest_action(current, uri, product, book_file, start, end, model_alias, model_version, db)
            else:
                assert pair is not None
                run = backtest_threshold(current, uri, pair, horizon, exchange, start, end, model_alias,
                                         model_version, db)  # fmt: skip
        except (ModelNotFound, ValueError, FileFormatError) as exc:
            console.print(f"[red]{redact(exc)}[/red]")
            raise typer.Exit(1) from exc
        show_backtest(run)

    @app.command("positions")
    def positions_command(db: DbOption = None) -> None:
        """Balances and positions of the trading account (from the append-only ledger and fills)."""
        show_positions(settings(), db)

    @app.command("orders")
    def orders_command(
        db: DbOption = None,
        every: Annotated[bool, typer.Option("--all", help="All orders, not only the live ones.")] = False,
        last: Annotated[int, typer.Option(help="With --all: how many of the newest.")] = 50,
    ) -> None:
        """Live orders of the trading account."""
        show_orders(settings(), db, every, last)

    @app.command("kill-switch")
    def kill_switch_command(
        state: Annotated[str, typer.Argument(help="on: cancel every live order and refuse new ones; off: resume.")],
        db: DbOption = None,
        reason: Annotated[str, typer.Option(help="Why (kept in the database).")] = "",
    ) -> None:
        """Turn the kill switch on or off."""
        if state not in ("on", "off"):
            console.print(f"[red]kill-switch takes on or off, not {state!r}.[/red]")
            raise typer.Exit(2)
        set_kill_switch(settings(), db, state == "on", reason)
