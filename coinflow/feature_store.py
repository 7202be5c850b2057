"""The Feast feature store, configured from Settings, for all three pipelines.

feature_store.yaml holds working local defaults, so that plain Feast (the ``feast``
CLI, ``FeatureStore("feature_repo")``) works on the repository as it is. Here the
values Settings owns (the project, the registry file and Redis: one server or a
cluster) replace those defaults, so the one Settings object decides them for the
project's own commands.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import yaml
from feast import FeatureStore, FileSource
from feast.repo_config import RepoConfig

from coinflow.parquet_writer import dataset_root
from coinflow.redis_store import RedisType, feast_connection_string, feast_redis_type, parse_redis_url
from coinflow.schemas import pair_slug
from coinflow.settings import Settings
from feature_repo.names import EVENT_TIMESTAMP


def feast_redis_connection(redis_url: str, redis_type: RedisType = "redis") -> str:
    """Feast's Redis connection string (``host:port,db=N[,password=...]``; a cluster's nodes comma-separated) for a
    redis:// URL (`coinflow.redis_store`)."""
    return feast_connection_string(parse_redis_url(redis_url, redis_type))


def online_store_settings(settings: Settings) -> dict[str, Any]:
    """What Settings own of the Redis online store: its connection string and Feast's ``redis_type``."""
    address = parse_redis_url(settings.services.redis_url, settings.services.redis_type)
    return {"connection_string": feast_connection_string(address), "redis_type": feast_redis_type(address)}


SPARK_OFFLINE_STORE = "coinflow.spark_offline_store.ParquetSparkOfflineStore"


def spark_conf(master: str) -> dict[str, str]:
    """A Spark session for point-in-time joins: no UI, loopback only, UTC, small shuffles, Arrow to and from pandas."""
    return {
        "spark.master": master,
        "spark.driver.memory": "1g",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def spark_offline_store(settings: Settings) -> dict[str, Any]:
    """The offline_store section selecting Feast's Spark store over the repository's Parquet files."""
    return {"type": SPARK_OFFLINE_STORE, "spark_conf": spark_conf(settings.feast.spark_master)}


def with_settings(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A feature_store.yaml's configuration with the values Settings owns put in place of its defaults (and its
    offline store replaced by Spark's with COINFLOW_FEAST_OFFLINE_STORE=spark)."""
    config = {
        **raw,
        "project": settings.feast.project,
        "registry": str(settings.feast.registry_path.resolve()),
        "online_store": {
            **raw["online_store"],
            **online_store_settings(settings),
        },
    }
    if settings.feast.offline_store == "spark":
        config["offline_store"] = spark_offline_store(settings)
    return config


def settings_config(settings: Settings) -> dict[str, Any]:
    """The configured repository's feature_store.yaml, as Settings configure it."""
    raw = yaml.safe_load((settings.feast.repo_path / "feature_store.yaml").read_text())
    return with_settings(raw, settings)


def feature_store_yaml(settings: Settings) -> str:
    """feature_store.yaml as Settings configure it: for a copy of the repository read by plain Feast."""
    return yaml.safe_dump(settings_config(settings), sort_keys=False)


def repo_config(settings: Settings) -> RepoConfig:
    config = RepoConfig(**settings_config(settings))
    config.repo_path = settings.feast.repo_path.resolve()
    return config


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore for the configured repository (the registry must exist: run the feature-repo step)."""
    settings.feast.registry_path.parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.feast.repo_path.resolve()), config=repo_config(settings))


def is_registered(settings: Settings) -> bool:
    """Whether the registry holds the project's feature views: plain ``feast`` run before the project's own apply
    leaves an empty registry file, which is not registered."""
    if not settings.feast.registry_path.exists():
        return False
    return bool(feature_store(settings).list_feature_views())


@contextlib.contextmanager
def _importable_from(path: Path):
    """Feast imports the repository's modules by bare name from its working directory."""
    before = Path.cwd()
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        os.chdir(before)


def apply_feature_repo(settings: Settings) -> FeatureStore:
    """Register the repository's definitions, as `feast apply` does, and return the store."""
    from feast.repo_operations import apply_total

    repo = settings.feast.repo_path.resolve()
    settings.feast.registry_path.parent.mkdir(parents=True, exist_ok=True)
    # Feast imports the repository's modules by bare name; drop ones cached from another copy.
    for name in [
        m for m, mod in sys.modules.items() if (file := getattr(mod, "__file__", None)) and Path(file).parent == repo
    ]:
        del sys.modules[name]
    sys.modules.pop("definitions", None)
    with _importable_from(repo):
        apply_total(repo_config(settings), repo, skip_source_validation=True)
    return feature_store(settings)


TIMESTAMP_DTYPE = "datetime64[ns, UTC]"


def times_ms(times: pd.Series) -> pd.Series:
    """Event timestamps (any resolution, UTC) as integer Unix milliseconds."""
    return pd.to_datetime(times, utc=True).dt.as_unit("ms").astype("int64")


def read_entity_rows(store: FeatureStore, view: str, entity: str, key: str, columns: Sequence[str]) -> pd.DataFrame:
    """One entity's rows (entity, event_timestamp and `columns`) of a view's offline Parquet, in time order.

    The spine of a dataset: the times at which the entity has rows; features
    are then read through Feast at those times.
    """
    source = store.get_feature_view(view).batch_source
    if not isinstance(source, FileSource):
        raise ValueError(f"the offline rows of {view} are not in Parquet files (its batch source is {source!r})")
    files = sorted((dataset_root(source.path) / pair_slug(key)).glob("*.parquet"))
    wanted = [entity, EVENT_TIMESTAMP, *columns]
    if not files:
        return pd.DataFrame(
            {
                entity: pd.Series(dtype=str),
                EVENT_TIMESTAMP: pd.Series(dtype=TIMESTAMP_DTYPE),
                **{c: pd.Series(dtype=float) for c in columns},
            }
        )
    rows = pq.ParquetDataset(files).read(columns=wanted).to_pandas()
    rows[EVENT_TIMESTAMP] = rows[EVENT_TIMESTAMP].astype(TIMESTAMP_DTYPE)
    return rows[rows[entity] == key].sort_values(EVENT_TIMESTAMP).reset_index(drop=True)


def read_view_rows(store: FeatureStore, view: str, entity: str, columns: Sequence[str]) -> pd.DataFrame:
    """Every entity's rows (entity, event_timestamp and `columns`) of a view's offline Parquet, in time order."""
    source = store.get_feature_view(view).batch_source
    if not isinstance(source, FileSource):
        raise ValueError(f"the offline rows of {view} are not in Parquet files (its batch source is {source!r})")
    files = sorted(dataset_root(source.path).glob("*/*.parquet"))
    wanted = [entity, EVENT_TIMESTAMP, *columns]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=TIMESTAMP_DTYPE if c == EVENT_TIMESTAMP else float) for c in wanted})
    rows = pq.ParquetDataset(files).read(columns=wanted).to_pandas()
    rows[EVENT_TIMESTAMP] = rows[EVENT_TIMESTAMP].astype(TIMESTAMP_DTYPE)
    return rows.sort_values([EVENT_TIMESTAMP, entity], kind="stable").reset_index(drop=True)


def service_rows(store: FeatureStore, spine: pd.DataFrame, service_name: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """A FeatureService's features at each spine row (its entity column, then event_timestamp), point in time and
    in time order, and the features' names."""
    service = store.get_feature_service(service_name)
    retrieved = store.get_historical_features(entity_df=spine, features=service).to_df()
    features = tuple(f.name for projection in service.feature_view_projections for f in projection.features)
    retrieved[EVENT_TIMESTAMP] = retrieved[EVENT_TIMESTAMP].astype(TIMESTAMP_DTYPE)
    columns = [spine.columns[0], EVENT_TIMESTAMP, *features]
    return retrieved[columns].sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True), features
