"""`python -m feature_pipeline`: run the streaming feature pipeline live, over files, or as a backfill.

Every command starts the local services it needs when none are configured,
registers the feature repository if it is not yet, and can be run again:
the same input leaves the same rows in the feature store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import redis
import typer
from prometheus_client import start_http_server
from quixstreams.sources import Source
from rich.console import Console
from rich.table import Table

from coinflow import services
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.logs import configure_logging
from coinflow.quality import configure_dead_letters
from coinflow.redact import redact
from coinflow.schemas import INTERVALS_SECONDS
from coinflow.settings import Settings
from feature_pipeline.book_runner import run_book_pipeline
from feature_pipeline.runner import run_pipeline
from feature_pipeline.sources.book_source import BookSource
from feature_pipeline.sources.coinbase_replay_server import CoinbaseReplayServer, read_session
from feature_pipeline.sources.coinbase_ws import CoinbaseSource
from feature_pipeline.sources.csv_readers import FileFormatError, check_ohlcvt_csv, check_trades_csv
from feature_pipeline.sources.file_sources import CandlesFileSource, TradesFileSource
from feature_pipeline.sources.kraken_replay_server import serve, server_thread
from feature_pipeline.sources.kraken_rest import KrakenRestSource
from feature_pipeline.sources.kraken_ws import KrakenBookSource, KrakenTradeSource
from feature_repo.names import ENTITY, INDICATOR_FEATURES, OHLCV_FEATURES, indicators_view, ohlcv_view

console = Console()
app = typer.Typer(
    help="The streaming feature pipeline: trades -> Kafka -> candles + indicators -> Feast (Redis online, Parquet offline).",
    no_args_is_help=True,
)

PairsOption = Annotated[
    str | None,
    typer.Option(
        "--pairs", help="Comma-separated pairs in BASE/QUOTE form, e.g. BTC/USD,ETH/USD (default: COINFLOW_PAIRS)."
    ),
]


def _split(pairs: str | None) -> list[str] | None:
    return [p.strip() for p in pairs.split(",") if p.strip()] if pairs else None


def _settings(**overrides) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level)
    configure_dead_letters(settings.dead_letter_max_bytes)
    return settings


def _rows_table(title: str, rows_written: dict[str, int]) -> Table:
    """The rows a finished run wrote, per feature view."""
    table = Table(title=title)
    table.add_column("feature view")
    table.add_column("rows written (offline)", justify="right")
    for view, count in sorted(rows_written.items()):
        table.add_row(view, str(count))
    return table


def _run(
    settings: Settings, source: Source, into_candles: bool, finite_pairs: set[str] | None, run_id: str | None
) -> None:
    try:
        summary = run_pipeline(settings, source, into_candles, finite_pairs, run_id)
    except services.ServiceError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)  # one line, however long
        raise typer.Exit(1) from exc
    console.print(_rows_table(f"feature pipeline finished in {summary.seconds:.1f} s", summary.rows_written))
    for rejects in summary.stages:
        console.print(rejects.summary())


def _check_file(path: Path, check: Callable[[Path], None] | None = None) -> Path:
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


@app.command("feature-repo")
def feature_repo_command() -> None:
    """Register the Feast repository (`feast apply` with the project's settings)."""
    settings = _settings()
    apply_feature_repo(settings)
    console.print(
        f"Applied {settings.feature_repo_path} as project '{settings.feast_project}' (registry {settings.registry_path})."
    )


@app.command("replay-trades")
def replay_trades(
    file: Annotated[Path, typer.Argument(help="Trades CSV with columns time_ms,timestamp,price,qty,side[,trade_id].")],
    pair: Annotated[str, typer.Option(help="The pair these trades belong to, e.g. BTC/USD.")],
    speed: Annotated[float, typer.Option(help="Replay at real time x SPEED; 0 replays as fast as possible.")] = 0.0,
    exchange: Annotated[str, typer.Option(help="Exchange name stamped on the trades.")] = "kraken",
) -> None:
    """Replay a trades file through the whole pipeline and exit once every candle and indicator is stored."""
    settings = _settings()
    run_id = uuid.uuid4().hex
    close_after = settings.candle_seconds * 1000 + settings.window_grace_ms
    source = TradesFileSource(
        _check_file(file, check_trades_csv),
        pair,
        run_id,
        settings.dead_letter_topic,
        close_after,
        speed,
        exchange,
        max_future_ms=settings.max_future_ms,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )
    _run(settings, source, into_candles=False, finite_pairs={pair}, run_id=run_id)


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
    if interval not in INTERVALS_SECONDS:
        console.print(f"[red]--interval must be one of {', '.join(INTERVALS_SECONDS)}, not {interval!r}[/red]")
        raise typer.Exit(2)
    settings = _settings()
    run_id = uuid.uuid4().hex
    source = CandlesFileSource(
        _check_file(file, check_ohlcvt_csv),
        pair,
        run_id,
        settings.dead_letter_topic,
        interval,
        INTERVALS_SECONDS[interval],
        max_future_ms=settings.max_future_ms,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )
    _run(settings, source, into_candles=True, finite_pairs={pair}, run_id=run_id)


@app.command()
def live(pairs: PairsOption = None) -> None:
    """Stream Kraken WebSocket v2 trades of the pairs (one connection) until Ctrl-C, which flushes what is in flight."""
    settings = _settings(pairs=_split(pairs))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
        console.print(f"Prometheus metrics on http://127.0.0.1:{settings.metrics_port}/metrics")
    source = KrakenTradeSource(
        settings.kraken_ws_url,
        settings.pairs,
        settings.dead_letter_topic,
        tick_interval_s=settings.tick_interval_s,
        reconnect_initial_s=settings.reconnect_initial_s,
        reconnect_max_s=settings.reconnect_max_s,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )
    _run(settings, source, into_candles=False, finite_pairs=None, run_id=None)


@app.command("backfill-rest")
def backfill_rest(
    pairs: PairsOption = None,
    days: Annotated[float, typer.Option(help="How many days back from now to fetch.", min=0.001)] = 1.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per pair.")] = True,
) -> None:
    """Backfill Kraken REST trades of the last N days; resumes where an interrupted run stopped."""
    settings = _settings(pairs=_split(pairs))
    run_id = uuid.uuid4().hex
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    source = KrakenRestSource(
        settings.pairs,
        days,
        settings.run_dir / "rest_backfill_checkpoint.json",
        settings.dead_letter_topic,
        close_after_ms=settings.candle_seconds * 1000 + settings.window_grace_ms,
        run_id=run_id,
        base_url=settings.kraken_rest_url,
        min_interval_s=settings.rest_min_interval_s,
        progress=progress,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )
    _run(settings, source, into_candles=False, finite_pairs=set(settings.pairs), run_id=run_id)


@app.command("replay-server")
def replay_server(
    file: Annotated[Path, typer.Argument(help="Trades CSV with columns time_ms,timestamp,price,qty,side.")],
    pair: Annotated[str, typer.Option(help="The symbol the server publishes these trades under, e.g. BTC/USD.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port, logged at start).")] = 8765,
    speed: Annotated[float, typer.Option(help="Publish at real time x SPEED; 0 publishes as fast as possible.")] = 1.0,
) -> None:
    """Serve a trades file over a local WebSocket speaking the Kraken v2 protocol (for `live` without internet)."""
    _settings()
    console.print(f"Serving {file} as {pair} on ws://{host}:{port}/v2 (Ctrl-C stops)")
    serve(_check_file(file, check_trades_csv), pair, host=host, port=port, speed=speed)


def _run_books(settings: Settings, source: BookSource, candles: bool, book_out: Path | None) -> None:
    try:
        summary = run_book_pipeline(settings, source, candles=candles, book_out=book_out)
    except services.ServiceError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)  # one line, however long
        raise typer.Exit(1) from exc
    console.print(_rows_table(f"order-book pipeline finished in {summary.seconds:.1f} s", summary.rows_written))
    if book_out is not None:
        console.print(f"{summary.book_records_out} book-state records written to {book_out}")
    for rejects in summary.stages:
        console.print(rejects.summary())


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


@app.command("replay-session")
def replay_session(
    file: Annotated[Path, typer.Argument(help="A recorded Coinbase Advanced Trade session (.jsonl or .jsonl.gz).")],
    book_out: Annotated[
        Path | None, typer.Option("--book-out", help="Also write every book-state record to this Parquet file.")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Replay at the recorded pace x SPEED; 0 replays as fast as possible.")
    ] = 0.0,
    candles: Annotated[bool, typer.Option(help="Also build candles and indicators from the session's trades.")] = True,
) -> None:
    """Replay a recorded session through a local Coinbase server, the real Coinbase source and the book and
    feature dataflow; exits once every book-state record and feature row is stored."""
    settings = _settings()
    try:
        frames = read_session(_check_file(file))
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
            settings.dead_letter_topic,
            settings.trades_topic,
            run_id=uuid.uuid4().hex,
            trade_close_after_ms=settings.candle_seconds * 1000 + settings.window_grace_ms,
            dead_letter_max_bytes=settings.dead_letter_max_bytes,
        )
        _run_books(settings, source, candles, book_out)


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
    settings = _settings()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
        console.print(f"Prometheus metrics on http://127.0.0.1:{settings.metrics_port}/metrics")
    if exchange == "coinbase":
        try:
            source: BookSource = CoinbaseSource(
                settings.coinbase_ws_url,
                _split(products) or settings.coinbase_products,
                settings.dead_letter_topic,
                settings.trades_topic,
                api_key=_secret(settings.coinbase_api_key),
                api_secret=_secret(settings.coinbase_api_secret),
                reconnect_initial_s=settings.reconnect_initial_s,
                reconnect_max_s=settings.reconnect_max_s,
                dead_letter_max_bytes=settings.dead_letter_max_bytes,
            )
        except ValueError as exc:
            console.print(f"[red]COINFLOW_COINBASE_API_SECRET: {exc}[/red]")
            raise typer.Exit(2) from exc
    elif exchange == "kraken":
        source = KrakenBookSource(
            settings.kraken_ws_url,
            _split(products) or settings.pairs,
            settings.kraken_book_depth,
            settings.dead_letter_topic,
            reconnect_initial_s=settings.reconnect_initial_s,
            reconnect_max_s=settings.reconnect_max_s,
            dead_letter_max_bytes=settings.dead_letter_max_bytes,
        )
    else:
        console.print(f"[red]--exchange must be coinbase or kraken, not {exchange!r}[/red]")
        raise typer.Exit(2)
    _run_books(settings, source, candles=exchange == "coinbase", book_out=None)


@app.command("online-features")
def online_features(
    pairs: PairsOption = None,
    interval: Annotated[str, typer.Option(help="Candle interval of the feature views to read.")] = "1m",
) -> None:
    """Print the freshest features of each pair from the online store (Redis)."""
    settings = _settings(pairs=_split(pairs))
    if interval not in INTERVALS_SECONDS:
        console.print(f"[red]--interval must be one of {', '.join(INTERVALS_SECONDS)}, not {interval!r}[/red]")
        raise typer.Exit(2)
    if not settings.registry_path.exists():
        console.print(f"[red]No Feast registry at {settings.registry_path}: run `make feature-repo` first.[/red]")
        raise typer.Exit(1)
    store = feature_store(settings)
    refs = [f"{ohlcv_view(interval)}:{name}" for name in OHLCV_FEATURES]
    refs += [f"{indicators_view(interval)}:{name}" for name in INDICATOR_FEATURES]
    try:
        rows = store.get_online_features(features=refs, entity_rows=[{ENTITY: p} for p in settings.pairs]).to_dict()
    except (redis.RedisError, OSError) as exc:
        console.print(
            f"The online store {redact(settings.redis_url)} could not be read ({type(exc).__name__}: "
            f"{redact(exc)}); start it (`make up`) or set REDIS_URL.",
            style="red",
            markup=False,
        )
        raise typer.Exit(1) from exc
    table = Table(title=f"online features ({interval}) from {redact(settings.redis_url)}")
    table.add_column("feature")
    for pair in settings.pairs:
        table.add_column(pair, justify="right")
    for name in OHLCV_FEATURES + INDICATOR_FEATURES:
        table.add_row(name, *("-" if v is None else f"{v:.6g}" for v in rows[name]))
    console.print(table)


if __name__ == "__main__":
    app()
