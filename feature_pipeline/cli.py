"""What the feature pipelines' commands share: settings, logging, option types, file checks and result tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import start_http_server
from rich.console import Console
from rich.table import Table

from coinflow import services
from coinflow.exchange_files import FileFormatError
from coinflow.logs import configure_logging
from coinflow.quality import Rejects, configure_dead_letters
from coinflow.schemas import INTERVALS_SECONDS
from coinflow.settings import Settings

console = Console()

PairsOption = Annotated[
    str | None,
    typer.Option(
        "--pairs", help="Comma-separated pairs in BASE/QUOTE form, e.g. BTC/USD,ETH/USD (default: COINFLOW_PAIRS)."
    ),
]


def pipeline_settings(**overrides) -> Settings:
    """The settings of a command (options given override them), with logging and dead letters configured."""
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.services.log_level)
    configure_dead_letters(settings.stream.dead_letter_max_bytes)
    return settings


def rows_table(title: str, rows_written: dict[str, int]) -> Table:
    """The rows a finished run wrote, per feature view."""
    table = Table(title=title)
    table.add_column("feature view")
    table.add_column("rows written (offline)", justify="right")
    for view, count in sorted(rows_written.items()):
        table.add_row(view, str(count))
    return table


def fail_on_service_error(exc: services.ServiceError) -> typer.Exit:
    """Print a service problem in one line, however long, and give the exit (code 1) to raise."""
    console.print(str(exc), style="red", markup=False, soft_wrap=True)
    return typer.Exit(1)


def print_stages(stages: Iterable[Rejects]) -> None:
    """Every stage's reject summary, in the order data meets them."""
    for rejects in stages:
        console.print(rejects.summary())


def check_file(path: Path, check: Callable[[Path], None] | None = None) -> Path:
    """`path`, if it is a file (and passes `check`, which raises FileFormatError); else one line and exit code 2.

    Checked here, in the main process, because the file sources read in a subprocess of their own."""
    try:
        if not path.is_file():
            raise FileFormatError(f"No such file: {path}")
        if check is not None:
            check(path)
    except FileFormatError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    return path


def check_interval(interval: str) -> str:
    """`interval`, if the pipelines know it; else one line and exit code 2."""
    if interval not in INTERVALS_SECONDS:
        console.print(f"[red]--interval must be one of {', '.join(INTERVALS_SECONDS)}, not {interval!r}[/red]")
        raise typer.Exit(2)
    return interval


def serve_metrics(settings: Settings, offset: int = 0) -> None:
    """Expose the Prometheus metrics of a long-running command, when a port is configured (that port plus
    `offset`: one per worker on a machine)."""
    if settings.services.metrics_port:
        port = settings.services.metrics_port + offset
        start_http_server(port, addr="127.0.0.1")
        console.print(f"Prometheus metrics on http://127.0.0.1:{port}/metrics")
