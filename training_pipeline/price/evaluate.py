"""Scoring models on a period, and walk-forward (expanding-window) evaluation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from feature_repo.names import EVENT_TIMESTAMP
from training_pipeline.labels import LABEL_TIMESTAMP
from training_pipeline.metrics import frame_metrics, price_mae
from training_pipeline.model_base import PriceModel
from training_pipeline.splits import walk_forward


def evaluate(model: PriceModel, rows: pd.DataFrame) -> tuple[dict[str, float], np.ndarray]:
    """The price metrics of a fitted model on labelled rows, and its predicted prices."""
    predicted = model.predict_price(rows)
    return frame_metrics(rows, predicted), predicted


def walk_forward_mae_ratios(make_model: Callable[[], PriceModel], rows: pd.DataFrame, folds: int) -> list[float]:
    """Per expanding-window fold: a fresh model fitted on all rows before the block, its price MAE on the block
    relative to the last-price baseline's (below 1 beats the baseline)."""
    ratios = []
    for train, block in walk_forward(rows[EVENT_TIMESTAMP], rows[LABEL_TIMESTAMP], folds):
        fold_train, fold_block = rows.iloc[train], rows.iloc[block]
        model = make_model().fit(fold_train)
        ratios.append(
            price_mae(fold_block, model.predict_price(fold_block))
            / price_mae(fold_block, fold_block["close"].to_numpy())
        )
    return ratios
