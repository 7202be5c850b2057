"""`python -m feature_pipeline`: run the streaming feature pipeline live, over files, or as a backfill.

Every command starts the local services it needs when none are configured,
registers the feature repository if it is not yet, and can be run again:
the same input leaves the same rows in the feature store.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from quixstreams.sources import Source
from rich.console import Console
from rich.table import Table

from coinflow import services
from coinflow.logs import configure_logging
from coinflow.settings import INTERVALS_SECONDS, Settings
from coinflow.store import apply_feature_repo
from feature_pipeline.runner import run_pipeline
from feature_pipeline.sources.file_sources import CandlesFileSource, TradesFileSource

console = Console()
app = typer.Typer(
    help="The streaming feature pipeline: trades -> Kafka -> candles + indicators -> Feast (Redis online, Parquet offline).",
    no_args_is_help=True,
)

PairsOption = Annotated[
    str | None,
    typer.Option("--pairs", help="Comma-separated pairs in BASE/QUOTE form, e.g. BTC/USD,ETH/USD (default: COINFLOW_PAIRS)."),
]


def _settings(**overrides) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level)
    return settings


def _run(settings: Settings, source: Source, into_candles: bool, finite_pairs: set[str] | None, run_id: str | None) -> None:
    try:
        summary = run_pipeline(settings, source, into_candles, finite_pairs, run_id)
    except services.ServiceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    table = Table(title=f"feature pipeline finished in {summary.seconds:.1f} s")
    table.add_column("feature view")
    table.add_column("rows written (offline)", justify="right")
    for view, count in sorted(summary.rows_written.items()):
        table.add_row(view, str(count))
    console.print(table)
    console.print(summary.rejects.summary())


def _check_file(path: Path) -> Path:
    if not path.is_file():
        console.print(f"[red]No such file: {path}[/red]")
        raise typer.Exit(2)
    return path


@app.command("feature-repo")
def feature_repo_command() -> None:
    """Register the Feast repository (`feast apply` with the project's settings)."""
    settings = _settings()
    apply_feature_repo(settings)
    console.print(f"Applied {settings.feature_repo_path} as project '{settings.feast_project}' (registry {settings.registry_path}).")


@app.command("replay-trades")
def replay_trades(
    file: Annotated[Path, typer.Argument(help="Trades CSV with columns time_ms,timestamp,price,qty,side.")],
    pair: Annotated[str, typer.Option(help="The pair these trades belong to, e.g. BTC/USD.")],
    speed: Annotated[float, typer.Option(help="Replay at real time x SPEED; 0 replays as fast as possible.")] = 0.0,
    exchange: Annotated[str, typer.Option(help="Exchange name stamped on the trades.")] = "kraken",
) -> None:
    """Replay a trades file through the whole pipeline and exit once every candle and indicator is stored."""
    settings = _settings()
    run_id = uuid.uuid4().hex
    close_after = settings.candle_seconds * 1000 + settings.window_grace_ms
    source = TradesFileSource(_check_file(file), pair, run_id, settings.dead_letter_topic, close_after, speed, exchange)
    _run(settings, source, into_candles=False, finite_pairs={pair}, run_id=run_id)


@app.command("backfill-ohlcv")
def backfill_ohlcv(
    file: Annotated[Path, typer.Argument(help="Kraken OHLCVT CSV (no header: unix,open,high,low,close,volume,trades).")],
    pair: Annotated[str, typer.Option(help="The pair of the file, e.g. BTC/USD.")],
    interval: Annotated[str, typer.Option(help=f"Candle interval of the file: one of {', '.join(INTERVALS_SECONDS)}.")] = "1m",
) -> None:
    """Backfill candles straight into the candles topic: indicators and feature store as for live candles."""
    if interval not in INTERVALS_SECONDS:
        console.print(f"[red]--interval must be one of {', '.join(INTERVALS_SECONDS)}, not {interval!r}[/red]")
        raise typer.Exit(2)
    settings = _settings()
    run_id = uuid.uuid4().hex
    source = CandlesFileSource(_check_file(file), pair, run_id, settings.dead_letter_topic, interval, INTERVALS_SECONDS[interval])
    _run(settings, source, into_candles=True, finite_pairs={pair}, run_id=run_id)


if __name__ == "__main__":
    app()
