"""Feast's Spark offline store over the project's Parquet FileSources (needs the ``spark`` extra).

Feast's SparkOfflineStore accepts only SparkSources, while the feature
repository's views read FileSources (the pipeline's Parquet sink and
training's candle spine read those files directly). This store is Feast's
Spark store with each Parquet FileSource handed to it as the SparkSource of
the same path, format and columns, so the same definitions and registry serve
both the DuckDB ASOF store and Spark; the point-in-time join is Feast's Spark
SQL. Select it with COINFLOW_FEAST_OFFLINE_STORE=spark (coinflow/feature_store.py
writes the offline_store section), or in feature_store.yaml with
``type: coinflow.spark_offline_store.ParquetSparkOfflineStore`` and a ``spark_conf``.

Spark hands timestamps to pandas without their zone, in the session's zone;
the session's zone is UTC here (coinflow.feature_store.spark_conf) and results come back
tz-aware UTC, as from the DuckDB stores. Only ``get_historical_features``
translates sources: the project neither materializes nor writes offline
through Feast (its sink writes the Parquet files), and Feast's Spark
implementations of those assert SparkSources.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import pandas as pd
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    SparkRetrievalJob,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from pydantic import StrictStr


class ParquetSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    """Feast's Spark offline store settings, under this store's type."""

    type: StrictStr = "coinflow.spark_offline_store.ParquetSparkOfflineStore"


def as_spark_source(source: DataSource | None) -> DataSource | None:
    """The SparkSource reading a Parquet FileSource's path with its columns; any other source as it is."""
    if type(source) is not FileSource or not isinstance(source.file_format, ParquetFormat):
        return source
    return SparkSource(
        name=source.name,
        path=source.path,
        file_format="parquet",
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=dict(source.field_mapping),
        date_partition_column=source.date_partition_column,
        description=source.description,
        tags=dict(source.tags),
        owner=source.owner,
    )


def with_spark_source(view: FeatureView) -> FeatureView:
    """A copy of the view (projection kept) whose batch source Spark can read."""
    spark_view = copy.copy(view)
    spark_view.batch_source = as_spark_source(view.batch_source)
    return spark_view


def utc_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with Spark's zone-less timestamps (UTC wall times: the session's zone is UTC) as UTC microseconds,
    Spark's precision, typed as Feast's DuckDB stores type them."""
    naive = [c for c in frame.columns if pd.api.types.is_datetime64_dtype(frame[c]) and frame[c].dt.tz is None]
    utc = {c: frame[c].dt.tz_localize("UTC").astype("datetime64[us, UTC]") for c in naive}
    return frame.assign(**utc) if utc else frame


class UtcSparkRetrievalJob(SparkRetrievalJob):
    """Feast's Spark retrieval job whose pandas frame has tz-aware UTC timestamps."""

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return utc_timestamps(super()._to_df_internal(timeout=timeout))


def utc_job(job: SparkRetrievalJob) -> UtcSparkRetrievalJob:
    return UtcSparkRetrievalJob(
        spark_session=job.spark_session,
        query=job.query,
        full_feature_names=job.full_feature_names,
        config=job._config,
        on_demand_feature_views=job.on_demand_feature_views,
        metadata=job.metadata,
    )


class ParquetSparkOfflineStore(SparkOfflineStore):
    """Feast's SparkOfflineStore, reading Parquet FileSources as SparkSources."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: Any,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        job = SparkOfflineStore.get_historical_features(
            config,
            [with_spark_source(view) for view in feature_views],
            feature_refs,
            entity_df,
            registry,
            project,
            full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created_timestamp,
            **kwargs,
        )
        return utc_job(cast(SparkRetrievalJob, job))
