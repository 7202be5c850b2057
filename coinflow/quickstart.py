"""The quickstart: all three pipelines on the bundled real data, one command (`make quickstart`).

Every stage is the command a user would type (run as a child process, so its
own progress bars and errors show), which keeps this file pure wiring. It is
safe to run again: the feature store merges idempotently, training adds
versions and promotes only a better model, and a running API is reused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from coinflow import services
from coinflow.redact import redact
from coinflow.settings import Settings

console = Console()


@dataclass
class Stage:
    name: str
    args: list[str]


def stages(settings: Settings, data_dir: Path, quick: bool) -> list[Stage]:
    """The quickstart's commands, in order; `quick` trims training for CI."""
    kraken, coinbase = data_dir / "kraken", data_dir / "coinbase"
    trials = "5" if quick else str(settings.training.optuna_trials)
    epochs = "1" if quick else "3"
    return [
        Stage("services: broker, Redis, MLflow", ["coinflow", "up"]),
        Stage("feature repo (feast apply)", ["feature_pipeline", "feature-repo"]),
        Stage(
            "backfill 1m candles BTC/USDC (2023 Q1)",
            [
                "feature_pipeline",
                "backfill-ohlcv",
                str(kraken / "ohlcvt_XBTUSDC_1m_2023Q1.csv"),
                "--pair",
                "BTC/USDC",
                "--interval",
                "1m",
            ],
        ),
        Stage(
            "backfill 5m candles BTC/USD (2023 Q1)",
            [
                "feature_pipeline",
                "backfill-ohlcv",
                str(kraken / "ohlcvt_XBTUSD_5m_2023Q1.csv"),
                "--pair",
                "BTC/USD",
                "--interval",
                "5m",
            ],
        ),
        Stage(
            "replay trades BTC/USD (streaming candles + indicators)",
            ["feature_pipeline", "replay-trades", str(kraken / "btcusd_trades_2019-07-01T00.csv"), "--pair", "BTC/USD"],
        ),
        Stage(
            "replay a Coinbase session (order books)",
            [
                "feature_pipeline",
                "replay-session",
                str(coinbase / "advanced_trade_ETH-USD_2026-08-09.jsonl.gz"),
                "--book-out",
                str(settings.services.run_dir / "books.parquet"),
            ],
        ),
        Stage(
            "train baselines, Lasso, XGBoost",
            ["training_pipeline", "train", "--models", "baseline,lasso,xgboost", "--trials", trials],
        ),
        Stage(
            f"train a sequence model (LSTM, {epochs} epoch{'s' if epochs != '1' else ''})",
            ["training_pipeline", "train", "--models", "lstm", "--epochs", epochs],
        ),
    ]


def run_stage(stage: Stage) -> float:
    """Run one stage's command with this interpreter; returns its seconds (raises on failure)."""
    console.rule(f"[bold]{stage.name}")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", *stage.args], check=True)
    return time.monotonic() - started


def serve_command(settings: Settings, alias: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "inference_pipeline",
        "serve",
        "--host",
        settings.serve.host,
        "--port",
        str(settings.serve.port),
        "--model-alias",
        alias,
        "--max-feature-age",
        "0",
    ]


def api_url(settings: Settings) -> str:
    return f"http://{settings.serve.host}:{settings.serve.port}"


def has_alias(settings: Settings, pair: str, alias: str) -> bool:
    """Whether the pair's registered model has `alias` (the champion may not qualify)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from coinflow.contracts import registered_model_name

    tracking_uri = services.ensure_mlflow(settings)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_model_version_by_alias(registered_model_name(pair, settings.training.horizon_minutes), alias)
    except MlflowException:
        return False
    return True


def sample_prediction(settings: Settings, pair: str) -> dict:
    response = httpx.post(
        f"{api_url(settings)}/predict", json={"pair": pair}, headers=services.api_headers(settings), timeout=30
    )
    response.raise_for_status()
    return response.json()


def run(settings: Settings, data_dir: Path, quick: bool) -> int:
    """Run every stage, start the API, print a prediction and where to look next; returns an exit code."""
    timings: list[tuple[str, float]] = []
    for stage in stages(settings, data_dir, quick):
        try:
            timings.append((stage.name, run_stage(stage)))
        except subprocess.CalledProcessError as exc:
            console.print(f"[red]Stage '{stage.name}' failed (exit {exc.returncode}); see its output above.[/red]")
            return 1

    pair = settings.training.pairs[0]
    console.rule("[bold]prediction API")
    started = time.monotonic()
    alias = "champion" if has_alias(settings, pair, "champion") else "challenger"
    if alias != "champion":
        console.print(f"No model beat the last-price baseline for {pair}: serving the newest (challenger) instead.")
    try:
        services.ensure_api(settings, serve_command(settings, alias), api_url(settings))
        prediction = sample_prediction(settings, pair)
    except (services.ServiceError, httpx.HTTPError) as exc:
        console.print(f"[red]The prediction API did not answer: {redact(exc)}[/red]")
        return 1
    timings.append((f"prediction API ({alias}) + one prediction", time.monotonic() - started))
    console.print_json(data=prediction)

    table = Table(title="coinflow quickstart")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, seconds in timings:
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("[bold]total", f"[bold]{sum(s for _, s in timings):.1f}")
    console.print(table)
    mlflow_uri = services.ensure_mlflow(settings)
    console.print(
        "Where to look next:\n"
        f"  MLflow UI (runs, registered models, aliases): {redact(mlflow_uri)}\n"
        f"  prediction API docs: {api_url(settings)}/docs   metrics: {api_url(settings)}/metrics\n"
        f"  curl -s -X POST {api_url(settings)}/predict -H 'content-type: application/json' "
        f'-d \'{{"pair": "{pair}"}}\'\n'
        "  make help (every target), make status, make down (stops what the project started)"
    )
    return 0
