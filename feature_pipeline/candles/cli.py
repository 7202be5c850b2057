"""The candle pipeline's commands: trades (live, REST, files) and candle files -> candles and indicators -> Feast."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coinflow import services
from coinflow.exchange_files import check_ohlcvt_csv, check_trades_csv
from coinflow.feature_store import feature_store, is_registered
from coinflow.redact import redact
from coinflow.redis_store import REDIS_ERRORS
from coinflow.schemas import INTERVALS_SECONDS
from coinflow.settings import Settings, comma_items
from feature_pipeline.candles.runner import run_pipeline
from feature_pipeline.cli import (
    PairsOption,
    check_file,
    check_interval,
    console,
    fail_on_service_error,
    pipeline_settings,
    print_stages,
    rows_table,
    serve_metrics,
)
from feature_pipeline.sources.base import RecordSource
from feature_pipeline.sources.file_sources import CandlesFileSource, TradesFileSource
from feature_pipeline.sources.kraken_replay_server import serve
from feature_pipeline.sources.kraken_rest import KrakenRestSource
from feature_pipeline.sources.kraken_ws import KrakenTradeSource
from feature_repo.names import ENTITY, INDICATOR_FEATURES, OHLCV_FEATURES, indicators_view, ohlcv_view

app = typer.Typer()


IngestOnlyOption = Annotated[
    bool,
    typer.Option(
        "--ingest-only",
        help="Only write the trades to the trades topic, for a group of `worker` processes to turn into features.",
    ),
]


def _run_candles(
    settings: Settings,
    source: RecordSource | None,
    into_candles: bool,
    finite_pairs: set[str] | None,
    run_id: str | None,
    worker_id: int | None = None,
    process: bool = True,
) -> None:
    try:
        summary = run_pipeline(settings, source, into_candles, finite_pairs, run_id, worker_id, process)
    except services.ServiceError as exc:
        raise fail_on_service_error(exc) from exc
    if process:
        console.print(rows_table(f"feature pipeline finished in {summary.seconds:.1f} s", summary.rows_written))
    else:
        console.print(f"ingest finished in {summary.seconds:.1f} s")
    print_stages(summary.stages)


@app.command("replay-trades")
def replay_trades(
    file: Annotated[Path, typer.Argument(help="Trades CSV with columns time_ms,timestamp,price,qty,side[,trade_id].")],
    pair: Annotated[str, typer.Option(help="The pair these trades belong to, e.g. BTC/USD.")],
    speed: Annotated[float, typer.Option(help="Replay at real time x SPEED; 0 replays as fast as possible.")] = 0.0,
    exchange: Annotated[str, typer.Option(help="Exchange name stamped on the trades.")] = "kraken",
    ingest_only: IngestOnlyOption = False,
) -> None:
    """Replay a trades file through the whole pipeline and exit once every candle and indicator is stored
    (with --ingest-only: once every trade is in the trades topic)."""
    settings = pipeline_settings()
    run_id = uuid.uuid4().hex
    close_after = settings.stream.candle_close_after_ms
    source = TradesFileSource(
        check_file(file, check_trades_csv),
        pair,
        run_id,
        settings.topics.dead_letters,
        close_after,
        speed,
        exchange,
        max_future_ms=settings.stream.max_future_ms,
        dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
    )
    _run_candles(settings, source, False, {pair}, run_id, process=not ingest_only)


@app.command("backfill-ohlcv")
def backfill_ohlcv(
    file: Annotated[
        Path, typer.Argument(help="Kraken OHLCVT CSV (no header: unix,open,high,low,close,volume,trades).")
    ],
    pair: Annotated[str, typer.Option(help="The pair of the file, e.g. BTC/USD.")],
    interval: Annotated[
        str, typer.Option(help=f"Candle interval of the file: one of {', '.join(INTERVALS_SECONDS)}.")
    ] = "1m",
) -> None:
    """Backfill candles straight into the candles topic: indicators and feature store as for live candles."""
    check_interval(interval)
    settings = pipeline_settings()
    run_id = uuid.uuid4().hex
    source = CandlesFileSource(
        check_file(file, check_ohlcvt_csv),
        pair,
        run_id,
        settings.topics.dead_letters,
        interval,
        INTERVALS_SECONDS[interval],
        max_future_ms=settings.stream.max_future_ms,
        dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
    )
    _run_candles(settings, source, into_candles=True, finite_pairs={pair}, run_id=run_id)


@app.command()
def live(pairs: PairsOption = None, ingest_only: IngestOnlyOption = False) -> None:
    """Stream Kraken WebSocket v2 trades of the pairs (one connection) until Ctrl-C, which flushes what is in flight."""
    settings = pipeline_settings(pairs=comma_items(pairs) or None)
    serve_metrics(settings)
    source = KrakenTradeSource(
        settings.exchanges.kraken_ws_url,
        settings.exchanges.pairs,
        settings.topics.dead_letters,
        tick_interval_s=settings.stream.tick_interval_s,
        reconnect_initial_s=settings.exchanges.reconnect_initial_s,
        reconnect_max_s=settings.exchanges.reconnect_max_s,
        dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
    )
    _run_candles(settings, source, False, None, None, process=not ingest_only)


@app.command()
def worker(
    worker_id: Annotated[
        int, typer.Option("--worker-id", min=0, help="This worker's number: distinct for workers on one machine.")
    ] = 0,
) -> None:
    """Turn trades into candles, indicators and features as one of a group of workers, until Ctrl-C.

    The workers of the pipeline's consumer group (COINFLOW_CONSUMER_GROUP)
    share the partitions of the trades and candles topics
    (COINFLOW_TOPIC_PARTITIONS, set before the topics are created) and keep
    their state in changelog topics: when one stops or dies, its partitions,
    with their open candles and indicators, move to the others. Feed them with
    `live --ingest-only` or `replay-trades --ingest-only`. Its metrics are on
    COINFLOW_METRICS_PORT plus its worker id.
    """
    settings = pipeline_settings()
    serve_metrics(settings, offset=worker_id)
    _run_candles(settings, None, False, None, None, worker_id=worker_id)


@app.command("backfill-rest")
def backfill_rest(
    pairs: PairsOption = None,
    days: Annotated[float, typer.Option(help="How many days back from now to fetch.", min=0.001)] = 1.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per pair.")] = True,
) -> None:
    """Backfill Kraken REST trades of the last N days; resumes where an interrupted run stopped."""
    settings = pipeline_settings(pairs=comma_items(pairs) or None)
    run_id = uuid.uuid4().hex
    settings.services.run_dir.mkdir(parents=True, exist_ok=True)
    source = KrakenRestSource(
        settings.exchanges.pairs,
        days,
        settings.services.run_dir / "rest_backfill_checkpoint.json",
        settings.topics.dead_letters,
        close_after_ms=settings.stream.candle_close_after_ms,
        run_id=run_id,
        base_url=settings.exchanges.kraken_rest_url,
        min_interval_s=settings.exchanges.rest_min_interval_s,
        progress=progress,
        dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
    )
    _run_candles(settings, source, into_candles=False, finite_pairs=set(settings.exchanges.pairs), run_id=run_id)


@app.command("replay-server")
def replay_server(
    file: Annotated[Path, typer.Argument(help="Trades CSV with columns time_ms,timestamp,price,qty,side.")],
    pair: Annotated[str, typer.Option(help="The symbol the server publishes these trades under, e.g. BTC/USD.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port, logged at start).")] = 8765,
    speed: Annotated[float, typer.Option(help="Publish at real time x SPEED; 0 publishes as fast as possible.")] = 1.0,
) -> None:
    """Serve a trades file over a local WebSocket speaking the Kraken v2 protocol (for `live` without internet)."""
    pipeline_settings()
    console.print(f"Serving {file} as {pair} on ws://{host}:{port}/v2 (Ctrl-C stops)")
    serve(check_file(file, check_trades_csv), pair, host=host, port=port, speed=speed)


@app.command("online-features")
def online_features(
    pairs: PairsOption = None,
    interval: Annotated[str, typer.Option(help="Candle interval of the feature views to read.")] = "1m",
) -> None:
    """Print the freshest features of each pair from the online store (Redis)."""
    settings = pipeline_settings(pairs=comma_items(pairs) or None)
    check_interval(interval)
    if not is_registered(settings):
        console.print(f"[red]No feature views in {settings.feast.registry_path}: run `make feature-repo` first.[/red]")
        raise typer.Exit(1)
    store = feature_store(settings)
    refs = [f"{ohlcv_view(interval)}:{name}" for name in OHLCV_FEATURES]
    refs += [f"{indicators_view(interval)}:{name}" for name in INDICATOR_FEATURES]
    try:
        rows = store.get_online_features(
            features=refs, entity_rows=[{ENTITY: p} for p in settings.exchanges.pairs]
        ).to_dict()
    except REDIS_ERRORS as exc:
        console.print(
            f"The online store {redact(settings.services.redis_url)} could not be read ({type(exc).__name__}: "
            f"{redact(exc)}); start it (`make up`) or set REDIS_URL.",
            style="red",
            markup=False,
        )
        raise typer.Exit(1) from exc
    table = Table(title=f"online features ({interval}) from {redact(settings.services.redis_url)}")
    table.add_column("feature")
    for pair in settings.exchanges.pairs:
        table.add_column(pair, justify="right")
    for name in OHLCV_FEATURES + INDICATOR_FEATURES:
        table.add_row(name, *("-" if v is None else f"{v:.6g}" for v in rows[name]))
    console.print(table)
