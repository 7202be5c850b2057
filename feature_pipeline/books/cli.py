"""The order-book pipeline's commands: L2 books (live, a recorded session replayed, or a file of snapshots) -> book
states and 4 s features -> Feast, with candles from the same session's trades where there are any."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer

from coinflow import services
from coinflow.exchange_files import check_snapshot_csv
from coinflow.settings import Settings, comma_items
from feature_pipeline.books.runner import run_book_pipeline
from feature_pipeline.cli import (
    check_file,
    console,
    fail_on_service_error,
    pipeline_settings,
    print_stages,
    rows_table,
    serve_metrics,
)
from feature_pipeline.sources.book_source import BookSource
from feature_pipeline.sources.coinbase_replay_server import CoinbaseReplayServer, read_session
from feature_pipeline.sources.coinbase_ws import CoinbaseSource
from feature_pipeline.sources.file_sources import SnapshotsFileSource
from feature_pipeline.sources.kraken_replay_server import server_thread
from feature_pipeline.sources.kraken_ws import KrakenBookSource

app = typer.Typer()


def _run_books(settings: Settings, source: BookSource, candles: bool, book_out: Path | None) -> None:
    try:
        summary = run_book_pipeline(settings, source, candles=candles, book_out=book_out)
    except services.ServiceError as exc:
        raise fail_on_service_error(exc) from exc
    console.print(rows_table(f"order-book pipeline finished in {summary.seconds:.1f} s", summary.rows_written))
    if book_out is not None:
        console.print(f"{summary.book_records_out} book-state records written to {book_out}")
    print_stages(summary.stages)


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


BookOutOption = Annotated[
    Path | None, typer.Option("--book-out", help="Also write every book-state record to this Parquet file.")
]


@app.command("replay-session")
def replay_session(
    file: Annotated[Path, typer.Argument(help="A recorded Coinbase Advanced Trade session (.jsonl or .jsonl.gz).")],
    book_out: BookOutOption = None,
    speed: Annotated[
        float, typer.Option(help="Replay at the recorded pace x SPEED; 0 replays as fast as possible.")
    ] = 0.0,
    candles: Annotated[bool, typer.Option(help="Also build candles and indicators from the session's trades.")] = True,
) -> None:
    """Replay a recorded session through a local Coinbase server, the real Coinbase source and the book and
    feature dataflow; exits once every book-state record and feature row is stored."""
    settings = pipeline_settings()
    try:
        frames = read_session(check_file(file))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    server = CoinbaseReplayServer(frames, speed=speed)
    if not server.products:
        console.print(f"[red]{file} holds no product's frames[/red]")
        raise typer.Exit(2)
    with server_thread(server) as url:
        source = CoinbaseSource(
            url,
            sorted(server.products),
            settings.topics.dead_letters,
            settings.topics.trades,
            run_id=uuid.uuid4().hex,
            trade_close_after_ms=settings.stream.candle_close_after_ms,
            dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
        )
        _run_books(settings, source, candles, book_out)


@app.command("replay-snapshots")
def replay_snapshots(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (or .csv.gz) of full L2 snapshots, one a row: Timestamp (ISO with its UTC offset), Sequence, "
            "then Bid_i_Price,Bid_i_Size[,Bid_i_Trades] and Ask_i_* for each level i."
        ),
    ],
    product: Annotated[str, typer.Option(help="The book of the file as <exchange>:<product>, e.g. coinbase:BTC-USD.")],
    book_out: BookOutOption = None,
    speed: Annotated[
        float, typer.Option(help="Replay at the recorded pace x SPEED; 0 replays as fast as possible.")
    ] = 0.0,
) -> None:
    """Replay a file of full L2 snapshots, each row a snapshot of the book, through the book and feature dataflow;
    exits once every book-state record and feature row is stored."""
    settings = pipeline_settings()
    exchange, _, name = product.partition(":")
    if not exchange or not name:
        console.print(f"[red]--product must be <exchange>:<product>, e.g. coinbase:BTC-USD, not {product!r}[/red]")
        raise typer.Exit(2)
    source = SnapshotsFileSource(
        check_file(file, check_snapshot_csv),
        exchange,
        name,
        uuid.uuid4().hex,
        settings.topics.dead_letters,
        speed,
        max_future_ms=settings.stream.max_future_ms,
        dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
    )
    _run_books(settings, source, candles=False, book_out=book_out)


@app.command("live-books")
def live_books(
    exchange: Annotated[
        str,
        typer.Option(
            help="coinbase (books and trades of COINFLOW_COINBASE_PRODUCTS) or kraken (books of COINFLOW_PAIRS)."
        ),
    ] = "coinbase",
    products: Annotated[
        str | None, typer.Option(help="Comma-separated products/symbols instead of the configured ones.")
    ] = None,
) -> None:
    """Stream live L2 books (and Coinbase trades) into the book and feature dataflow until Ctrl-C."""
    settings = pipeline_settings()
    serve_metrics(settings)
    if exchange == "coinbase":
        try:
            source: BookSource = CoinbaseSource(
                settings.exchanges.coinbase_ws_url,
                comma_items(products) or settings.exchanges.coinbase_products,
                settings.topics.dead_letters,
                settings.topics.trades,
                api_key=_secret(settings.exchanges.coinbase_api_key),
                api_secret=_secret(settings.exchanges.coinbase_api_secret),
                reconnect_initial_s=settings.exchanges.reconnect_initial_s,
                reconnect_max_s=settings.exchanges.reconnect_max_s,
                dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
            )
        except ValueError as exc:
            console.print(f"[red]COINFLOW_COINBASE_API_SECRET: {exc}[/red]")
            raise typer.Exit(2) from exc
    elif exchange == "kraken":
        source = KrakenBookSource(
            settings.exchanges.kraken_ws_url,
            comma_items(products) or settings.exchanges.pairs,
            settings.exchanges.kraken_book_depth,
            settings.topics.dead_letters,
            reconnect_initial_s=settings.exchanges.reconnect_initial_s,
            reconnect_max_s=settings.exchanges.reconnect_max_s,
            dead_letter_max_bytes=settings.stream.dead_letter_max_bytes,
        )
    else:
        console.print(f"[red]--exchange must be coinbase or kraken, not {exchange!r}[/red]")
        raise typer.Exit(2)
    _run_books(settings, source, candles=exchange == "coinbase", book_out=None)
