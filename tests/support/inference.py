"""Helpers of the inference tests: real candles as feature rows, online rows written by the project's sink,
and models registered in a real MLflow server through the training pipeline's pyfunc (as `train` does).
"""

from __future__ import annotations

import time

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from coinflow.contracts import registered_model_name
from coinflow.exchange_files import iter_ohlcvt_csv
from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from feature_pipeline.candles.sink import CandleFeastSink
from feature_pipeline.transforms.indicators import new_indicator_state, update_indicators
from feature_repo.names import INDICATOR_FEATURES, OHLCV_FEATURES, regression_service
from tests.support.paths import KRAKEN_CANDLES_CSV
from training_pipeline.labels import TARGET_LOG_RETURN
from training_pipeline.model_base import PriceModel
from training_pipeline.price.models import XGBoostModel
from training_pipeline.price.serving import log_pyfunc

FEATURES = (*OHLCV_FEATURES, *INDICATOR_FEATURES)
MINUTE_MS = 60_000


def feature_rows(pair: str, count: int, last_end_ms: int | None = None) -> list[dict]:
    """The last `count` real one-minute candles with their indicators (as the feature pipeline computes them),
    moved in time so that the last one closes at `last_end_ms` (default: the last whole minute)."""
    candles = list(iter_ohlcvt_csv(KRAKEN_CANDLES_CSV, pair, "1m", 60, Rejects("test")))[-count:]
    last_end_ms = last_end_ms if last_end_ms is not None else int(time.time()) // 60 * MINUTE_MS
    shift = last_end_ms - candles[-1]["window_end_ms"]
    state, rows = new_indicator_state(), []
    for candle in candles:
        candle = {
            **candle,
            "window_start_ms": candle["window_start_ms"] + shift,
            "window_end_ms": candle["window_end_ms"] + shift,
        }
        rows.append({**candle, **update_indicators(state, candle)})
    return rows


def write_features(settings: Settings, rows: list[dict]) -> None:
    """Write feature rows to the online and offline stores with the feature pipeline's sink (with the windows)."""
    sink = CandleFeastSink(lambda: feature_store(settings), settings.stream.online_window_length)
    sink.setup()
    sink.write_rows(rows)


def training_frame(rows: list[dict]) -> pd.DataFrame:
    """Complete rows labelled with the next candle's log return."""
    frame = pd.DataFrame(rows)
    frame[TARGET_LOG_RETURN] = np.log(frame["close"].shift(-1) / frame["close"])
    return frame.dropna(subset=[*FEATURES, TARGET_LOG_RETURN]).reset_index(drop=True)


def fit_xgboost(rows: list[dict], trees: int = 50) -> XGBoostModel:
    return XGBoostModel(FEATURES, {"n_estimators": trees}).fit(training_frame(rows))


def register(
    tracking_uri: str, pair: str, horizon: int, model: PriceModel, rows: list[dict], alias: str | None = "champion"
) -> str:
    """Log `model` as the training pipeline does (tags, pyfunc, registered name) and point `alias` at it."""
    name = registered_model_name(pair, horizon)
    example = training_frame(rows)[list(FEATURES)].head(5)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name=model.model_type):
        mlflow.set_tags(
            {
                "pair": pair,
                "horizon_minutes": str(horizon),
                "model_type": model.model_type,
                "feature_service": regression_service("1m"),
            }
        )
        mlflow.log_params({"interval": "1m", **{f"model_{k}": v for k, v in model.params().items()}})
        info = log_pyfunc(model, example, name)
    version = str(mlflow.register_model(info.model_uri, name).version)
    if alias:
        MlflowClient(tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(name, alias, version)
    return version
