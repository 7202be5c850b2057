"""The universe pipeline's commands: a folder of candle files (one a ticker) -> per-ticker features -> Feast."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer

from coinflow import services
from coinflow.exchange_files import FileFormatError, candle_file_pair, candle_files, check_candle_file
from coinflow.schemas import INTERVALS_SECONDS
from feature_pipeline.cli import (
    check_interval,
    console,
    fail_on_service_error,
    pipeline_settings,
    print_stages,
    rows_table,
)
from feature_pipeline.sources.file_sources import UniverseFilesSource
from feature_pipeline.universe.runner import run_universe_pipeline

app = typer.Typer()


def universe_files(folder: Path, universe: list[str]) -> list[Path]:
    """The folder's candle files of the universe (all of them when it is empty), each checked; one line and exit
    code 2 for a folder without any, a file that is no candle file, two files of one pair or a pair without one."""
    try:
        if not folder.is_dir():
            raise FileFormatError(f"No such folder: {folder}")
        paths = candle_files(folder)
        for path in paths:
            check_candle_file(path)
        by_pair: dict[str, Path] = {}
        for path in paths:
            pair = candle_file_pair(path)
            if pair in by_pair:
                raise FileFormatError(f"{folder}: two files of {pair}: {by_pair[pair].name} and {path.name}")
            by_pair[pair] = path
        missing = [pair for pair in universe if pair not in by_pair]
        if missing:
            raise FileFormatError(f"{folder}: no candle file of {', '.join(missing)} (COINFLOW_UNIVERSE)")
        chosen = [by_pair[pair] for pair in universe] if universe else list(by_pair.values())
        if not chosen:
            raise FileFormatError(f"{folder}: no candle files (*.csv, *.csv.gz)")
    except FileFormatError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    return chosen


@app.command("backfill-universe")
def backfill_universe(
    folder: Annotated[
        Path,
        typer.Argument(
            help="A folder of candle files, one a ticker, named by its symbol: Binance's layout (ETHUSDT.csv.gz: "
            "timestamp_ms,open,high,low,close,volume) or Kraken's OHLCVT export (XBTUSD_1.csv)."
        ),
    ],
    interval: Annotated[
        str, typer.Option(help=f"Candle interval of the files: one of {', '.join(INTERVALS_SECONDS)}.")
    ] = "1m",
) -> None:
    """Run the universe's candle files (those of COINFLOW_UNIVERSE, or all) through the streaming per-ticker
    features into Feast (universe_1m / universe_5m); exits once every row is in both stores."""
    check_interval(interval)
    settings = pipeline_settings()
    source = UniverseFilesSource(
        universe_files(folder, settings.universe.pairs),
        interval,
        INTERVALS_SECONDS[interval],
        uuid.uuid4().hex,
        settings.topics.dead_letters,
        max_future_ms=settings.stream.max_future_ms,
        dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
    )
    try:
        summary = run_universe_pipeline(settings, source)
    except services.ServiceError as exc:
        raise fail_on_service_error(exc) from exc
    console.print(rows_table(f"universe pipeline finished in {summary.seconds:.1f} s", summary.rows_written))
    print_stages(summary.stages)
