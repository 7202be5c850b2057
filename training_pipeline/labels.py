"""Targets and baseline inputs built from a pair's candles, with no look-ahead.

A row at candle close time ``t`` is labelled with the close of the same pair's
candle that closes at exactly ``t + horizon``: the price the model must
forecast, known only at ``t + horizon``. Exchanges omit intervals without
trades, so a row whose future candle does not exist has no label and is
dropped (never filled from a later candle, which would stretch the horizon).
The label time is kept so that splits can purge training rows whose label is
not yet known when the next period starts.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from feature_repo.names import ENTITY, EVENT_TIMESTAMP

LABEL_TIMESTAMP = "label_timestamp"
TARGET_CLOSE = "target_close"
TARGET_LOG_RETURN = "target_log_return"
BASELINE_WINDOW = 10


def recent_mean_column(n: int) -> str:
    return f"close_mean_{n}"


def make_labels(candles: pd.DataFrame, horizon: timedelta) -> pd.DataFrame:
    """Per candle (pair, event_timestamp, close): the close ``horizon`` later and its log return.

    Returns pair, event_timestamp, label_timestamp, target_close and
    target_log_return (``ln(target_close / close)``) for the rows whose future
    candle exists; the others are dropped.
    """
    now = candles[[ENTITY, EVENT_TIMESTAMP, "close"]].copy()
    now[LABEL_TIMESTAMP] = now[EVENT_TIMESTAMP] + pd.Timedelta(horizon)
    future = candles[[ENTITY, EVENT_TIMESTAMP, "close"]].rename(
        columns={EVENT_TIMESTAMP: LABEL_TIMESTAMP, "close": TARGET_CLOSE}
    )
    labelled = now.merge(future, on=[ENTITY, LABEL_TIMESTAMP], how="inner", validate="one_to_one")
    labelled[TARGET_LOG_RETURN] = np.log(labelled[TARGET_CLOSE] / labelled["close"])
    return labelled[[ENTITY, EVENT_TIMESTAMP, LABEL_TIMESTAMP, TARGET_CLOSE, TARGET_LOG_RETURN]]


def recent_mean_close(candles: pd.DataFrame, n: int = BASELINE_WINDOW) -> pd.DataFrame:
    """Per candle: the mean close of the pair's last ``n`` candles up to and including it (the moving-average baseline).

    Rows with fewer than ``n`` candles of history get NaN.
    """
    ordered = candles.sort_values([ENTITY, EVENT_TIMESTAMP])
    means = ordered.groupby(ENTITY, sort=False)["close"].transform(lambda s: s.rolling(n, min_periods=n).mean())
    return pd.DataFrame(
        {
            ENTITY: ordered[ENTITY],
            EVENT_TIMESTAMP: ordered[EVENT_TIMESTAMP],
            recent_mean_column(n): means,
        }
    ).reset_index(drop=True)
