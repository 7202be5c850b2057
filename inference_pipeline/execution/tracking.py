"""Every trading session is an MLflow run: what traded (strategy, model version, venue, settings) and how it did
(the strategy's and the benchmarks' numbers, the equity curve as a CSV artifact)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

import mlflow
import pandas as pd

from coinflow.schemas import pair_slug
from inference_pipeline.execution.backtest import BacktestResult


def experiment_name(book: str) -> str:
    """``trading-COINBASEBTCUSD`` for the book coinbase:BTC-USD."""
    return f"trading-{pair_slug(book)}"


def equity_frame(result: BacktestResult) -> pd.DataFrame:
    """The equity curve: at each decision, the mid, the account's equity and position."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime([p.at_ms for p in result.log.equity], unit="ms", utc=True),
            "mid": [float(p.mid) for p in result.log.equity],
            "equity": [float(p.equity) for p in result.log.equity],
            "position": [float(p.position) for p in result.log.equity],
        }
    )


def flat_metrics(result: BacktestResult) -> dict[str, float]:
    """The strategy's metrics as they are, each benchmark's prefixed (``buy_and_hold_pnl``); NaNs left out."""
    metrics = dict(result.metrics)
    for name, values in result.benchmarks.items():
        prefix = name.replace(" ", "_").replace("-", "")
        metrics.update({f"{prefix}_{k}": v for k, v in values.items()})
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def log_session(
    tracking_uri: str, book: str, params: Mapping[str, object], tags: Mapping[str, str], result: BacktestResult
) -> str:
    """Log one session as a run of the book's trading experiment; returns its run id."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_name(book))
    with mlflow.start_run(run_name=f"{tags.get('session', 'session')} {params.get('strategy', '')}") as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params(dict(params))
        mlflow.log_metrics(flat_metrics(result))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "equity.csv"
            equity_frame(result).to_csv(path, index=False)
            mlflow.log_artifact(str(path))
    return run.info.run_id
