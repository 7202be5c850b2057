"""`python -m inference_pipeline`: the prediction API, streaming predictions and their live evaluation."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn
from prometheus_client import start_http_server
from rich.console import Console

from coinflow import services
from coinflow.feature_store import is_registered
from coinflow.logs import configure_logging
from coinflow.redact import redact
from coinflow.settings import Settings, comma_items
from inference_pipeline.app import create_app
from inference_pipeline.execution.cli import register as register_trading
from inference_pipeline.runner import limit_native_threads, run_live_evaluation, run_prediction_stream

console = Console()
app = typer.Typer(
    help="The inference pipeline: registered models + online features -> predictions (REST and stream).",
    no_args_is_help=True,
)


def _settings(**overrides) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.services.log_level)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return settings


def _tracking_uri(settings: Settings) -> str:
    if not is_registered(settings):
        console.print(f"[red]No feature views in {settings.feast.registry_path}: run `make feature-repo` first.[/red]")
        raise typer.Exit(1)
    try:
        return services.ensure_mlflow(settings)
    except services.ServiceError as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc


def _metrics_server(port: int) -> None:
    if not port:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        console.print(f"[red]Metrics port {port} is taken ({exc}): pass another with --metrics-port (0: off).[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Prometheus metrics on http://127.0.0.1:{port}/metrics")


PairsOption = Annotated[
    str | None,
    typer.Option(
        "--pairs", help="Comma-separated pairs to serve (default: COINFLOW_SERVE_PAIRS, else the training pairs)."
    ),
]
HorizonsOption = Annotated[
    str | None,
    typer.Option(
        "--horizons",
        help="Comma-separated horizons in minutes (default: COINFLOW_SERVE_HORIZONS, else COINFLOW_HORIZON_MINUTES).",
    ),
]
AliasOption = Annotated[
    str | None,
    typer.Option(
        "--model-alias", help="Registry alias to serve and watch (default: COINFLOW_SERVE_MODEL_ALIAS = champion)."
    ),
]
VersionOption = Annotated[
    int | None, typer.Option("--model-version", min=1, help="Serve this registered version instead of an alias.")
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        help="Prometheus port (default: COINFLOW_METRICS_PORT; give each long-running command its own).",
    ),
]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: COINFLOW_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: COINFLOW_SERVE_PORT = 8000).")] = None,
    model_alias: AliasOption = None,
    model_version: VersionOption = None,
    max_feature_age: Annotated[
        float | None,
        typer.Option(
            "--max-feature-age",
            min=0.0,
            help="Refuse (503) features older than SECONDS; 0 turns the check off (replayed or historical data).",
        ),
    ] = None,
    pairs: PairsOption = None,
    horizons: HorizonsOption = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (the metrics count them anyway).")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Server processes, each with its own models and alias watcher (default: COINFLOW_SERVE_WORKERS, "
            "else one per core); more than one run under gunicorn.",
        ),
    ] = None,
) -> None:
    """Serve predictions over REST (OpenAPI docs at /docs) until Ctrl-C."""
    settings = _settings(
        serve_host=host,
        serve_port=port,
        serve_workers=workers,
        serve_model_alias=model_alias,
        serve_model_version=model_version,
        max_feature_age_s=max_feature_age,
        serve_pairs=comma_items(pairs) or None,
        serve_horizons=comma_items(horizons) or None,
    )
    tracking_uri = _tracking_uri(settings)
    if not services.redis_healthy(settings.services.redis_url, redis_type=settings.services.redis_type):
        console.print(
            f"[yellow]The online store {redact(settings.services.redis_url)} does not answer: predictions get 503 until it does "
            "(`make up` starts it).[/yellow]"
        )
    if not settings.serve.api_key and settings.serve.host not in services.LOCAL_HOSTS:
        console.print(
            f"[yellow]Listening on {settings.serve.host} without COINFLOW_API_KEY: whoever reaches the port "
            "can call every route.[/yellow]"
        )
    limit_native_threads()
    count = settings.serve.workers or os.cpu_count() or 1
    console.print(
        f"Serving {', '.join(settings.serve.pairs)} (horizons {settings.serve.horizons} min) on "
        f"http://{settings.serve.host}:{settings.serve.port}/docs, models from {redact(tracking_uri)}, "
        f"{count} worker{'s' if count > 1 else ''}{'; API key required' if settings.serve.api_key else ''}"
    )
    if count == 1:
        uvicorn.run(
            create_app(settings, tracking_uri),
            host=settings.serve.host,
            port=settings.serve.port,
            log_level=settings.services.log_level.lower(),
            access_log=access_log,
        )
        return
    _serve_workers(settings, tracking_uri, count, access_log)


def _serve_workers(settings: Settings, tracking_uri: str, count: int, access_log: bool) -> None:
    """`count` workers under gunicorn, sharing a folder of the run directory (wiped first) for their metrics and
    reports."""
    from inference_pipeline.workers import GunicornService, ServeDirs, gunicorn_options, use_multiprocess_metrics

    host, port = settings.serve.host, settings.serve.port
    if services._port_open("127.0.0.1" if host in ("0.0.0.0", "::") else host, port):
        console.print(f"[red]Port {port} is already in use: stop what listens there or pass --port.[/red]")
        raise typer.Exit(1)
    dirs = ServeDirs.of(settings)
    dirs.reset()
    use_multiprocess_metrics(dirs.metrics)
    service = GunicornService(
        create_app(settings, tracking_uri, dirs, count), gunicorn_options(settings, count, access_log), dirs
    )
    service.run()


@app.command("predict-stream")
def predict_stream(
    model_alias: AliasOption = None,
    model_version: VersionOption = None,
    pairs: PairsOption = None,
    horizons: HorizonsOption = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Predict every candle of the features topic with the served models -> predictions topic + offline store."""
    settings = _settings(
        serve_model_alias=model_alias,
        serve_model_version=model_version,
        serve_pairs=comma_items(pairs) or None,
        serve_horizons=comma_items(horizons) or None,
    )
    tracking_uri = _tracking_uri(settings)
    _metrics_server(settings.services.metrics_port if metrics_port is None else metrics_port)
    try:
        summary = run_prediction_stream(settings, tracking_uri)
    except services.ServiceError as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"{summary.predictions} predictions written. {summary.rejects.summary()}")


@app.command("evaluate-live")
def evaluate_live(metrics_port: MetricsPortOption = None) -> None:
    """Join streamed predictions with the realised prices: live MAE and directional accuracy per model version
    (Prometheus gauges; logged to MLflow in a `live-v<N>` run per version)."""
    settings = _settings()
    tracking_uri = _tracking_uri(settings)
    _metrics_server(settings.services.metrics_port if metrics_port is None else metrics_port)
    try:
        run_live_evaluation(settings, tracking_uri)
    except services.ServiceError as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc


register_trading(app, _settings, _tracking_uri)

if __name__ == "__main__":
    app()
