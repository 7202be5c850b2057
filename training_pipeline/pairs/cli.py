"""`pairs-discover` and `pairs-backtest`: wiring only (see run.py)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table

from coinflow import services
from coinflow.logs import configure_logging
from coinflow.redact import redact
from coinflow.settings import Settings
from training_pipeline.pairs.run import INTERVAL_SECONDS, pairs_backtest, pairs_discover

console = Console()
IntervalOption = Annotated[str, typer.Option(help="Candle interval of the universe view: 1m or 5m.")]
StartOption = Annotated[str | None, typer.Option(help="ISO start (UTC; default: all the store holds).")]
EndOption = Annotated[str | None, typer.Option(help="ISO end (UTC).")]


def _start(interval: str) -> tuple[Settings, str]:
    if interval not in INTERVAL_SECONDS:
        console.print(f"[red]--interval {interval}: 1m or 5m.[/red]")
        raise typer.Exit(2)
    settings = Settings()
    configure_logging(settings.services.log_level)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return settings, services.ensure_mlflow(settings)
    except services.ServiceError as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add the pairs commands to the training pipeline's CLI."""

    @app.command("pairs-discover")
    def discover_command(interval: IntervalOption = "1m", start: StartOption = None, end: EndOption = None) -> None:
        """Screen the universe for cointegrated pairs (clusters, then tests within them) and log it to MLflow."""
        settings, uri = _start(interval)
        try:
            found, run_id = pairs_discover(settings, uri, interval, start, end)
        except (ValueError, MlflowException) as exc:
            console.print(f"[red]{redact(exc)}[/red]")
            raise typer.Exit(1) from exc
        table = Table(title=f"pairs accepted ({found.tests} tested in {len(found.clusters)} clusters)")
        for column in ("pair", "p (BH)", "hedge", "half-life", "crossings", "Hurst"):
            table.add_column(column, justify="right")
        for p in sorted(found.accepted, key=lambda p: p.p_adjusted):
            table.add_row(p.pair_id, f"{p.p_adjusted:.2g}", f"{p.hedge_ratio:.3f}", f"{p.half_life:.1f}",
                          str(p.crossings), f"{p.hurst:.3f}")  # fmt: skip
        console.print(table)
        console.print(f"not tested: {found.skipped or 'none'}; MLflow run {run_id}")

    @app.command("pairs-backtest")
    def backtest_command(interval: IntervalOption = "1m", start: StartOption = None, end: EndOption = None) -> None:
        """Walk-forward pairs backtest over the universe (pairs, filters and thresholds chosen on earlier folds),
        logged to MLflow; the last fold's configuration registered as pairs-<interval>, promoted only if it beats
        doing nothing after fees."""
        settings, uri = _start(interval)
        try:
            result = pairs_backtest(settings, uri, interval, start, end)
        except (ValueError, MlflowException) as exc:
            console.print(f"[red]{redact(exc)}[/red]")
            raise typer.Exit(1) from exc
        folds = Table(title=f"pairs backtest, {interval}: walk-forward folds")
        for column in ("fold", "from", "to", "pairs", "entry |z|", "PnL"):
            folds.add_column(column, justify="right")
        for n, fold in enumerate(result.folds, start=1):
            pnl = "no trading" if fold.run is None else f"{fold.run.equity[-1] - fold.run.initial:,.2f}"
            folds.add_row(str(n), f"{fold.start:%Y-%m-%d %H:%M}", f"{fold.end:%Y-%m-%d %H:%M}", str(len(fold.pairs)),
                          "-" if fold.entry is None else f"{fold.entry:g}", pnl)  # fmt: skip
        summary = Table(title="portfolio against holding the universe equally weighted")
        summary.add_column("")
        summary.add_column("pairs", justify="right")
        summary.add_column("equal weight", justify="right")
        for metric in ("pnl", "return", "sharpe", "max_drawdown"):
            summary.add_row(metric, f"{result.portfolio[metric]:,.4f}", f"{result.benchmark[metric]:,.4f}")
        for metric in ("fees", "turnover", "round_trips", "hit_rate"):
            summary.add_row(metric, f"{result.portfolio[metric]:,.4f}", "")
        console.print(folds, summary)
        if not result.pairs.empty:
            per_pair = result.pairs.groupby("pair_id")[["pnl", "fees", "round_trips"]].sum()
            console.print(per_pair.sort_values("pnl").to_string(float_format=lambda v: f"{v:,.2f}"))
        registered = f"version {result.version}: {result.reason}" if result.version else result.reason
        console.print(f"MLflow run {result.run_id}; pairs-{interval} {registered}")
