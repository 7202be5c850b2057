"""The training dataset of one pair: features read point in time through Feast, labels from the candles.

The entity spine is the pair's candle close times, read from the offline
store of its OHLCV view. Features come from `get_historical_features` with
the model's FeatureService, so training reads exactly the feature list that
serving reads online. Labels and the moving-average baseline input are built
from the same candles (`labels`). The checks in `checks` run on the way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
from feast import FeatureStore

from coinflow.feature_store import feature_store, read_entity_rows, service_rows
from coinflow.schemas import INTERVALS_SECONDS
from coinflow.settings import Settings
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, ohlcv_view, regression_service
from training_pipeline import checks
from training_pipeline.labels import (
    BASELINE_WINDOW,
    LABEL_TIMESTAMP,
    TARGET_CLOSE,
    make_labels,
    recent_mean_close,
    recent_mean_column,
)

logger = logging.getLogger(__name__)


class TimeOrderedRows:
    """Rows of a dataclass's ``frame``, ordered by event time: their first and last time, and a fingerprint."""

    frame: pd.DataFrame

    @property
    def start(self) -> pd.Timestamp:
        return self.frame[EVENT_TIMESTAMP].iloc[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.frame[EVENT_TIMESTAMP].iloc[-1]

    def _fingerprint(self, columns: Sequence[str]) -> str:
        hashed = pd.util.hash_pandas_object(self.frame[list(columns)], index=False).to_numpy()
        return hashlib.sha256(hashed.tobytes()).hexdigest()


@dataclass(frozen=True)
class Dataset(TimeOrderedRows):
    """Labelled rows of one pair, ordered by time, and what they were built from."""

    pair: str
    interval: str
    horizon_minutes: int
    feature_service: str
    features: tuple[str, ...]
    frame: pd.DataFrame
    warmup_rows: int

    def fingerprint(self) -> str:
        """SHA-256 of the rows (times, features, targets): equal hashes mean equal training data."""
        return self._fingerprint([ENTITY, EVENT_TIMESTAMP, *self.features, LABEL_TIMESTAMP, TARGET_CLOSE])


def horizon_delta(horizon_minutes: int, interval: str) -> timedelta:
    """The horizon as a duration; it must be a whole number of candles."""
    if (horizon_minutes * 60) % INTERVALS_SECONDS[interval]:
        raise ValueError(f"the horizon ({horizon_minutes} min) must be a multiple of the candle interval ({interval})")
    return timedelta(minutes=horizon_minutes)


def read_candles(store: FeatureStore, pair: str, interval: str) -> pd.DataFrame:
    """The pair's candles (pair, event_timestamp, close) from the offline Parquet of its OHLCV view."""
    return read_entity_rows(store, ohlcv_view(interval), ENTITY, pair, ["close"])


def assemble(features: pd.DataFrame, candles: pd.DataFrame, horizon: timedelta) -> pd.DataFrame:
    """Features at each spine time joined with the labels and the baseline input; unlabelled rows dropped, time-ordered.

    Pure: the unit tests build `features` without Feast.
    """
    labelled = features.merge(
        make_labels(candles, horizon), on=[ENTITY, EVENT_TIMESTAMP], how="inner", validate="one_to_one"
    )
    labelled = labelled.merge(
        recent_mean_close(candles), on=[ENTITY, EVENT_TIMESTAMP], how="left", validate="one_to_one"
    )
    return labelled.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)


def build_dataset(
    settings: Settings, pair: str, interval: str, horizon_minutes: int, store: FeatureStore | None = None
) -> Dataset:
    """Read, check and label the history of one pair; raises `checks.DataCheckError` naming what is wrong."""
    horizon = horizon_delta(horizon_minutes, interval)
    store = store or feature_store(settings)
    candles = read_candles(store, pair, interval)
    checks.check_candles(
        candles, pair, timedelta(seconds=INTERVALS_SECONDS[interval]), settings.training.max_missing_fraction
    )
    service = regression_service(interval)
    retrieved, features = service_rows(store, candles[[ENTITY, EVENT_TIMESTAMP]], service)
    frame = assemble(retrieved, candles, horizon)
    inputs = (*features, recent_mean_column(BASELINE_WINDOW))
    frame, warmup = checks.drop_warmup(frame, inputs)
    if warmup:
        logger.info("%s: dropped %d leading rows whose indicators are still warming up", pair, warmup)
    checks.check_features(frame, pair, inputs)
    checks.check_history(frame, pair, settings.training.min_training_rows)
    return Dataset(pair, interval, horizon_minutes, service, features, frame, warmup)
