"""Forecast metrics on the price, the same for every model and period.

Directional accuracy asks whether the forecast got the sign of the move from
the current close right. Rows where the price did not move have no direction
and are left out; a forecast of no move (the last-price baseline) is a guess
without information and scores one half, so the baseline's directional
accuracy is 0.5 and its ratios are all 1.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, root_mean_squared_error


def directional_accuracy(current: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> float:
    """Share of moves whose sign the forecast got right (a forecast of no move counts one half); NaN without moves."""
    moved = actual != current
    if not moved.any():
        return float("nan")
    truth = np.sign(actual[moved] - current[moved])
    guess = np.sign(predicted[moved] - current[moved])
    score = np.where(guess == 0, 0.5, (guess == truth).astype(float))
    return float(score.mean())


def price_metrics(current: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, MAPE and directional accuracy of predicted prices against actual ones."""
    return {
        "mae": float(mean_absolute_error(actual, predicted)),
        "rmse": float(root_mean_squared_error(actual, predicted)),
        "mape": float(mean_absolute_percentage_error(actual, predicted)),
        "directional_accuracy": directional_accuracy(current, actual, predicted),
    }
