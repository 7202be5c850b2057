"""Forecast metrics of dataset rows and against the baseline (the metrics themselves: `coinflow.forecast_metrics`,
shared with the live evaluation of the inference pipeline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error

from coinflow.forecast_metrics import price_metrics
from training_pipeline.labels import TARGET_CLOSE

METRICS = ("mae", "rmse", "mape", "directional_accuracy")


def frame_metrics(rows: pd.DataFrame, predicted: np.ndarray) -> dict[str, float]:
    """`price_metrics` for labelled dataset rows (current close, target close)."""
    return price_metrics(rows["close"].to_numpy(dtype=float), rows[TARGET_CLOSE].to_numpy(dtype=float), predicted)


def price_mae(rows: pd.DataFrame, predicted: np.ndarray) -> float:
    return float(mean_absolute_error(rows[TARGET_CLOSE].to_numpy(dtype=float), predicted))


def ratios(metrics: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Each metric divided by the baseline's (``<name>_ratio``); below 1 is better for errors, above 1 for accuracy."""
    return {f"{name}_ratio": metrics[name] / baseline[name] if baseline[name] else float("nan") for name in METRICS}
