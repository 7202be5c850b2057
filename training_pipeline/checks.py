"""Data checks run before training; each failure names the pair and the time range at fault.

They stop a training run early, with a message saying what to fix, rather
than let it fit a model on duplicated, incomplete or too short a history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd

from feature_repo.names import EVENT_TIMESTAMP

_EXAMPLES = 3


class DataCheckError(ValueError):
    """The training data of a pair fails a check; the message names the pair and the time range."""


def _fmt(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def span(times: pd.Series) -> str:
    """``<first> and <last>`` of a series of timestamps (after "between")."""
    return f"{_fmt(times.min())} and {_fmt(times.max())}"


def check_candles(candles: pd.DataFrame, pair: str, interval: timedelta, max_missing_fraction: float) -> None:
    """The candles of one pair: present, one per close time, and not too many intervals missing.

    Exchanges emit no candle for an interval without trades, so some missing
    candles are normal for a thin pair; more than ``max_missing_fraction`` of
    the intervals between the first and last candle is an error.
    """
    if candles.empty:
        raise DataCheckError(f"{pair}: no candles in the offline store. Backfill or stream this pair first.")
    times = candles[EVENT_TIMESTAMP]
    duplicated = times[times.duplicated(keep=False)]
    if not duplicated.empty:
        examples = ", ".join(_fmt(t) for t in duplicated.drop_duplicates().sort_values().head(_EXAMPLES))
        raise DataCheckError(
            f"{pair}: {duplicated.nunique()} candle close times occur more than once between {span(duplicated)} "
            f"(e.g. {examples}). The offline store should hold one row per (pair, event_timestamp)."
        )
    ordered = times.sort_values().reset_index(drop=True)
    slots = int((ordered.iloc[-1] - ordered.iloc[0]) / interval) + 1
    missing = 1.0 - len(ordered) / slots
    if missing > max_missing_fraction:
        gaps = ordered.diff()
        longest = gaps.nlargest(_EXAMPLES)
        worst = ", ".join(f"{_fmt(ordered[i - 1])} to {_fmt(ordered[i])}" for i in longest.index)
        raise DataCheckError(
            f"{pair}: {missing:.0%} of the {interval} candles between {span(ordered)} are missing "
            f"(allowed: {max_missing_fraction:.0%}); longest gaps: {worst}."
        )


def drop_warmup(frame: pd.DataFrame, features: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Drop the leading rows (time-ordered) where some indicator is not defined yet; returns the rest and the count.

    Indicators need a history before their first value (MACD: 33 candles);
    those rows are expected to be empty. Gaps later on are not, and are left
    for `check_features` to report.
    """
    complete = frame[list(features)].notna().all(axis=1).to_numpy()
    first = int(np.argmax(complete)) if complete.any() else len(frame)
    return frame.iloc[first:].reset_index(drop=True), first


def check_features(frame: pd.DataFrame, pair: str, features: Sequence[str], price: str = "close") -> None:
    """Every feature of every row after the warm-up is a finite number, and the `price` column is positive."""
    values = frame[list(features)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = bad.any(axis=1)
        columns = [name for name, hit in zip(features, bad.any(axis=0), strict=True) if hit]
        raise DataCheckError(
            f"{pair}: {int(rows.sum())} rows between {span(frame.loc[rows, EVENT_TIMESTAMP])} lack a value (NaN or "
            f"infinite) for {', '.join(columns)}. Rows of a feature view are missing from the offline store: "
            "re-run the backfill for this range."
        )
    nonpositive = frame[price] <= 0
    if nonpositive.any():
        raise DataCheckError(
            f"{pair}: {int(nonpositive.sum())} rows between {span(frame.loc[nonpositive, EVENT_TIMESTAMP])} "
            f"have a {price} price <= 0."
        )


def check_history(frame: pd.DataFrame, pair: str, min_rows: int) -> None:
    """Enough labelled rows to split into train, validation and test."""
    if len(frame) < min_rows:
        where = f"between {span(frame[EVENT_TIMESTAMP])}" if len(frame) else "at all"
        raise DataCheckError(
            f"{pair}: only {len(frame)} labelled rows {where}; at least {min_rows} are needed "
            "(COINFLOW_MIN_TRAINING_ROWS). Backfill a longer history."
        )
