"""Feast's Spark offline store (local mode) against the project's DuckDB ASOF store, on the same repository.

Both read the registry and the Parquet files of one temporary copy of the
feature repository holding synthetic histories (`write_history`);
only COINFLOW_FEAST_OFFLINE_STORE differs. Training's FeatureService must
give the same rows and values either way: on training's own spine (candle
close times) and on entity rows off the candle grid, before the data, past
the views' TTL and of a pair without data, where point-in-time correctness
decides which row (or none) each gets. Skipped without the spark extra. The
histories are short: Spark's start and Feast's many-stage query cost some
15-40 s per call here whatever the size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.settings import Settings
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, regression_service
from tests.integration.conftest import write_history
from tests.support.paths import copy_feature_repo
from tests.support.training_synthetic import PREDICTABLE, RANDOM_WALK
from training_pipeline.dataset import build_dataset, read_candles

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def asof_settings(tmp_path_factory, redis_url: str) -> Settings:
    """A repository of this module with short synthetic histories (Spark's join grows with rows x rows per pair)."""
    root = tmp_path_factory.mktemp("spark")
    settings = Settings(
        _env_file=None,
        run_dir=root / "run",
        redis_url=redis_url,
        feature_repo_path=copy_feature_repo(root),
        feast_project="coinflow_spark_it",
        min_training_rows=200,
    )
    apply_feature_repo(settings)
    write_history(settings, PREDICTABLE, phi=0.5, n=1200, seed=0)
    write_history(settings, RANDOM_WALK, phi=0.0, n=1200, seed=1)
    assert settings.feast.offline_store == "yaml"
    return settings


@pytest.fixture(scope="module")
def spark_settings(asof_settings: Settings) -> Iterator[Settings]:
    """The same repository with the Spark store; its local Spark session is stopped after the module."""
    yield asof_settings.override(feast_offline_store="spark")
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def probe_entities(settings: Settings) -> pd.DataFrame:
    """Entity rows that test point in time: on and between candle closes, before the data, past the TTL, no data."""
    store = feature_store(settings)
    frames = []
    for pair in (PREDICTABLE, RANDOM_WALK):
        times = read_candles(store, pair, "1m")[EVENT_TIMESTAMP]
        picked = times.iloc[np.linspace(0, len(times) - 1, 100).astype(int)].reset_index(drop=True)
        probes = pd.concat(
            [
                picked,
                picked - pd.Timedelta(seconds=1),
                picked + pd.Timedelta(microseconds=1),
                # The TTL (6 h) is inclusive: the last row still qualifies at exactly 6 h, not a microsecond later.
                times.iloc[0] - pd.Timedelta(minutes=5) + pd.Series([pd.Timedelta(0)]),
                times.iloc[-1] + pd.Series(pd.to_timedelta(["6h", "6h 1us", "7h"])),
            ],
            ignore_index=True,
        )
        frames.append(pd.DataFrame({ENTITY: pair, EVENT_TIMESTAMP: probes}))
    frames.append(pd.DataFrame({ENTITY: "DOGE/USD", EVENT_TIMESTAMP: frames[0][EVENT_TIMESTAMP].head(3)}))
    entities = pd.concat(frames, ignore_index=True)
    return entities.assign(row=np.arange(len(entities)))


def historical(settings: Settings, entities: pd.DataFrame) -> pd.DataFrame:
    """Training's FeatureService read point in time, rows in entity order."""
    store = feature_store(settings)
    service = store.get_feature_service(regression_service("1m"))
    frame = store.get_historical_features(entity_df=entities.copy(), features=service).to_df()
    return frame.sort_values("row").reset_index(drop=True)


def test_spark_store_is_selected_by_the_setting(spark_settings: Settings):
    config = feature_store(spark_settings).config.offline_store
    assert config.type == "coinflow.spark_offline_store.ParquetSparkOfflineStore"
    assert config.spark_conf["spark.master"] == "local[2]"
    assert config.spark_conf["spark.ui.enabled"] == "false"


def test_spark_equals_asof_point_in_time(asof_settings: Settings, spark_settings: Settings):
    entities = probe_entities(asof_settings)
    asof = historical(asof_settings, entities)
    spark = historical(spark_settings, entities)
    assert len(spark) == len(asof) == len(entities)
    assert spark[EVENT_TIMESTAMP].dtype == asof[EVENT_TIMESTAMP].dtype == "datetime64[us, UTC]"
    pd.testing.assert_frame_equal(spark[asof.columns], asof, check_dtype=False, rtol=1e-12)
    features = asof.columns.difference([ENTITY, EVENT_TIMESTAMP, "row"])
    # Some rows are past the TTL, before the data or of a pair without data: all their features are null.
    assert asof[features].isna().all(axis=1).sum() >= 8
    assert asof[features].notna().all(axis=1).sum() >= 400


def test_training_dataset_is_the_same_on_spark(asof_settings: Settings, spark_settings: Settings):
    asof = build_dataset(asof_settings, PREDICTABLE, "1m", 5)
    spark = build_dataset(spark_settings, PREDICTABLE, "1m", 5)
    assert len(spark.frame) == len(asof.frame) > 1000
    pd.testing.assert_frame_equal(spark.frame, asof.frame, check_dtype=False, rtol=1e-12)
