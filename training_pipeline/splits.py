"""Time-ordered splits: train / validation / test and expanding-window walk-forward folds.

Rows are ordered by time and never shuffled. A training row is labelled with
a price from ``horizon`` later, so rows whose label is not yet known when
the next period starts are purged from the earlier period: otherwise the
model would be fitted on prices from the period it is judged on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import TimeSeriesSplit


@dataclass(frozen=True)
class Split:
    """Row positions of the three periods, each in time order."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def _require_ordered(times: pd.Series) -> None:
    if not times.is_monotonic_increasing or times.duplicated().any():
        raise ValueError("rows must be strictly ordered by event time before splitting")


def purge(train: np.ndarray, label_times: pd.Series, next_start: pd.Timestamp) -> np.ndarray:
    """The training rows whose label is known by the time the next period starts."""
    known = (label_times.iloc[train] <= next_start).to_numpy()
    return train[known]


def time_split(times: pd.Series, label_times: pd.Series, validation_fraction: float, test_fraction: float) -> Split:
    """The last ``test_fraction`` of the rows for test, the ``validation_fraction`` before it for validation, the rest for training."""
    _require_ordered(times)
    n = len(times)
    n_test = math.ceil(n * test_fraction)
    n_validation = math.ceil(n * validation_fraction)
    if n - n_test - n_validation < 1:
        raise ValueError(f"{n} rows are too few for validation {validation_fraction} and test {test_fraction}")
    test = np.arange(n - n_test, n)
    validation = np.arange(n - n_test - n_validation, n - n_test)
    train = np.arange(0, validation[0])
    validation = purge(validation, label_times, times.iloc[test[0]])
    train = purge(train, label_times, times.iloc[validation[0]])
    return Split(train=train, validation=validation, test=test)


def walk_forward(times: pd.Series, label_times: pd.Series, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds over the rows: each trains on everything before its block and validates on the block."""
    _require_ordered(times)
    splits = []
    for train, validation in TimeSeriesSplit(n_splits=folds).split(np.arange(len(times))):
        train = purge(train, label_times, times.iloc[validation[0]])
        splits.append((train, validation))
    return splits
