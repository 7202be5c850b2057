"""Diagnostic plots of a model on the test period, as matplotlib Figures (no GUI, no global state).

Figures are built with the object API on the Agg canvas, so they work on a
headless machine and can be logged with `mlflow.log_figure`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ZOOM_POINTS = 300
TOP_FEATURES = 20


def _figure(width: float, height: float, rows: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(rows, 1, i + 1) for i in range(rows)]


def prediction_vs_actual(
    times: pd.Series, current: np.ndarray, actual: np.ndarray, predicted: np.ndarray, title: str
) -> Figure:
    """The last few hundred test forecasts against the actual prices, and predicted vs actual price change and price
    over the whole test period."""
    figure = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplot_mosaic([["series", "series"], ["change", "price"]])
    tail = slice(-ZOOM_POINTS, None)
    axes["series"].plot(times.iloc[tail], actual[tail], label="actual", linewidth=1)
    axes["series"].plot(times.iloc[tail], predicted[tail], label="predicted", linewidth=1, alpha=0.8)
    axes["series"].set_title(f"{title}: last {min(ZOOM_POINTS, len(actual))} test forecasts")
    axes["series"].set_ylabel("price")
    axes["series"].legend()
    for name, x, y in (("change", actual - current, predicted - current), ("price", actual, predicted)):
        axes[name].scatter(x, y, s=2, alpha=0.3)
        low, high = float(np.nanmin(x)), float(np.nanmax(x))
        axes[name].plot([low, high], [low, high], color="black", linewidth=0.8)
        axes[name].set_xlabel(f"actual {name}")
        axes[name].set_ylabel(f"predicted {name}")
        axes[name].set_title(f"predicted vs actual {name}, whole test period")
    return figure


def residuals_over_time(times: pd.Series, residuals: np.ndarray, title: str) -> Figure:
    """Actual minus predicted price over the test period."""
    figure, (axes,) = _figure(11, 4)
    axes.plot(times, residuals, linewidth=0.5)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_title(f"{title}: residuals (actual - predicted) on the test period")
    axes.set_ylabel("price")
    return figure


def feature_importance(importance: pd.Series, title: str) -> Figure:
    """The most important model inputs, as horizontal bars."""
    top = importance.sort_values(ascending=False).head(TOP_FEATURES).iloc[::-1]
    figure, (axes,) = _figure(8, max(3.0, 0.3 * len(top) + 1))
    axes.barh(top.index, top.to_numpy())
    axes.set_title(f"{title}: feature importance")
    axes.set_xlabel(importance.name or "importance")
    return figure


def confusion_matrix(matrix: np.ndarray, labels: list[str], title: str) -> Figure:
    """Counts of (optimal, predicted) classes as a heat map with the counts written in."""
    figure, (axes,) = _figure(6.5, 5.5)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted action")
    axes.set_ylabel("optimal action")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", fontsize=8)
    axes.set_title(title)
    return figure
