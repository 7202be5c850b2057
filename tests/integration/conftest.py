"""Integration fixtures: a real embedded broker, a Redis of the session's own, real Feast repositories and MLflow.

The session starts its own redis-server on a free port (`ensure_redis`, as the
project starts one) and stops it at the end, so it never touches the machine's
Redis nor another session's; the broker port (COINFLOW_IT_BROKER_PORT) and the
MLflow ports (COINFLOW_IT_MLFLOW_PORT, COINFLOW_IT_INFERENCE_MLFLOW_PORT) can be
moved for two sessions on one machine. Feast projects and copies of the feature
repository are in temporary directories; each test gets its own topics and
consumer group and an empty Redis.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from coinflow import parquet_writer, services
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.settings import Settings
from feature_pipeline.sinks.feast_sink import arrow_schema
from feature_repo.names import CREATED_TIMESTAMP, indicators_view, ohlcv_view
from tests.support.paths import copy_feature_repo
from tests.support.ports import free_port
from tests.support.training_synthetic import (
    PREDICTABLE,
    RANDOM_WALK,
    ar1_returns,
    candles_from_returns,
    features_of,
)

BROKER_PORT = int(os.environ.get("COINFLOW_IT_BROKER_PORT", "19392"))
TRAINING_MLFLOW_PORT = int(os.environ.get("COINFLOW_IT_MLFLOW_PORT", "15123"))
INFERENCE_MLFLOW_PORT = int(os.environ.get("COINFLOW_IT_INFERENCE_MLFLOW_PORT", "15223"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """The URL of this session's own redis-server, on a port free when the session starts."""
    settings = Settings(
        run_dir=tmp_path_factory.mktemp("redis"), redis_url=f"redis://127.0.0.1:{free_port()}/0", _env_file=None
    )
    yield services.ensure_redis(settings)
    services.stop_services(settings, ("redis",))


def flush(url: str) -> None:
    """Empty the tests' Redis database, so a test or module sees only the rows it writes."""
    redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory, redis_url: str) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("coinflow")
    settings = Settings(
        run_dir=root / "run",
        embedded_broker_port=BROKER_PORT,
        redis_url=redis_url,
        feature_repo_path=copy_feature_repo(root),
        feast_project="coinflow_it",
        commit_interval_s=0.2,
        metrics_port=0,
        trading_metrics_port=0,
        _env_file=None,
    )
    services.ensure_broker(settings)
    apply_feature_repo(settings)
    yield settings
    services.stop_services(settings)


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Settings with topics, consumer group and offline data of this test only."""
    tag = uuid.uuid4().hex[:8]
    offline = base_settings.feast.repo_path / "data" / "offline"
    shutil.rmtree(offline, ignore_errors=True)
    flush(base_settings.services.redis_url)
    return base_settings.override(
        trades_topic=f"trades-{tag}",
        candles_topic=f"candles-{tag}",
        features_topic=f"features-{tag}",
        dead_letter_topic=f"dead-letters-{tag}",
        consumer_group=f"it-{tag}",
    )


@pytest.fixture(scope="module")
def tracking_uri(base_settings: Settings, tmp_path_factory) -> Iterator[str]:
    """The project's MLflow server for the inference tests, with a database of this module only."""
    settings = base_settings.override(
        run_dir=tmp_path_factory.mktemp("mlflow-run"), mlflow_port=INFERENCE_MLFLOW_PORT, mlflow_tracking_uri=None
    )
    yield services.ensure_mlflow(settings)
    services.stop_services(settings)


def write_history(settings: Settings, pair: str, phi: float, n: int, seed: int, decimals: int | None = None) -> None:
    """A synthetic AR(1) history of `pair` in the offline candle and indicator views (prices rounded to `decimals`
    if given, on a tick grid as an exchange's are)."""
    candles = candles_from_returns(ar1_returns(n, phi, seed=seed), pair=pair)
    if decimals is not None:
        prices = ["open", "high", "low", "close", "vwap"]
        candles[prices] = candles[prices].round(decimals)
    features = features_of(candles).assign(**{CREATED_TIMESTAMP: lambda f: f["event_timestamp"]})
    store = feature_store(settings)
    for name in (ohlcv_view("1m"), indicators_view("1m")):
        view = store.get_feature_view(name)
        schema = arrow_schema(view)
        parquet_writer.write_rows(parquet_writer.dataset_root(view.batch_source.path), features[schema.names], schema)


def synthetic_training_settings(root: Path, redis_url: str, **overrides: Any) -> Settings:
    """Small training settings with a feature repository under `root` holding synthetic histories (PREDICTABLE,
    RANDOM_WALK), and the project's MLflow server (not started) under root/run; `overrides` by flat names."""
    settings = Settings(
        _env_file=None,
        run_dir=root / "run",
        redis_url=redis_url,
        feature_repo_path=copy_feature_repo(root),
        feast_project="coinflow_training_it",
        mlflow_tracking_uri=None,
        optuna_trials=3,
        min_training_rows=500,
    ).override(**overrides)
    flush(redis_url)
    apply_feature_repo(settings)
    write_history(settings, PREDICTABLE, phi=0.5, n=3000, seed=0)
    # Long enough that chance alone cannot beat the promotion margin (see the unit tests).
    write_history(settings, RANDOM_WALK, phi=0.0, n=20_000, seed=1)
    return settings


@pytest.fixture(scope="module")
def training_settings(tmp_path_factory, redis_url: str) -> Iterator[Settings]:
    """A feature repository of this module with synthetic histories (PREDICTABLE, RANDOM_WALK) and the project's
    MLflow server on COINFLOW_IT_MLFLOW_PORT with a temporary SQLite database and artifact store."""
    settings = synthetic_training_settings(
        tmp_path_factory.mktemp("training"), redis_url, mlflow_port=TRAINING_MLFLOW_PORT
    )
    services.ensure_mlflow(settings)
    yield settings
    services.stop_services(settings)
    assert not services.mlflow_healthy(f"http://127.0.0.1:{TRAINING_MLFLOW_PORT}")


@pytest.fixture(scope="module")
def uri(training_settings: Settings) -> str:
    """The tracking URI of `training_settings`' MLflow server."""
    return services.ensure_mlflow(training_settings)
