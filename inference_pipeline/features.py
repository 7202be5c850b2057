"""Online features for serving: one online-store read per feature view of a FeatureService, for a batch of pairs.

Reads go through the Feast provider's `online_read_async` (the online store's
own read, Redis here, any Feast online store after a change of
feature_store.yaml) with the views and features of the FeatureService,
resolved once per service. Feast's `get_online_features_async` does the same
reads but then builds a generic response (entity de-duplication, statuses,
protobuf-to-dict conversion) that costs about as much CPU as the read
itself; a served row needs only the values and their event times. The
results are tested equal to `get_online_features`.

Each feature view row carries its event timestamp (the candle's window end),
so a served row says how old it is. The API's FeatureStore reads Redis (one
server or a cluster) with a short socket timeout and without redis-py's retries
with backoff, so an unreachable Redis answers within the timeout (503) instead
of after seconds of retries; a connection dropped by a restarted Redis is
retried once at once.

Sequence models (the LSTM/GRU of the training pipeline) need the last N
candles of a pair: `read_windows` reads them from the window view of their
interval, one row per pair holding one list per feature (oldest first), as
the feature pipeline writes it. The lists come back under the features' own
names.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.exceptions
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type

from coinflow.feature_store import repo_config
from coinflow.redis_store import REDIS_ERRORS
from coinflow.settings import Settings
from feature_repo.names import ENTITY, window_feature

ViewRows = list[tuple[datetime | None, dict[str, Value] | None]]


class OnlineStoreUnavailable(RuntimeError):
    """The online store did not answer (down, restarting or too slow)."""


@dataclass(frozen=True)
class FeatureRow:
    """The online features of one pair: values by name, the oldest event time among them, and what is missing."""

    pair: str
    values: dict[str, Any]
    feature_time: datetime | None
    missing: tuple[str, ...]


@dataclass(frozen=True)
class ViewRead:
    """The features read from one feature view, and the names they are served under (default: their own)."""

    view: FeatureView
    features: tuple[str, ...]
    names: tuple[str, ...] = ()

    @property
    def served_names(self) -> tuple[str, ...]:
        return self.names or self.features


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def entity_keys(pairs: Sequence[str]) -> list[EntityKey]:
    """The online store's keys of `pairs` (the string join key of the `pair` entity)."""
    return [EntityKey(join_keys=[ENTITY], entity_values=[Value(string_val=pair)]) for pair in pairs]


def rows_from_reads(reads: Sequence[tuple[ViewRead, ViewRows]], pairs: Sequence[str]) -> list[FeatureRow]:
    """FeatureRows of `pairs` (in request order) from each view's (read, online rows in `pairs` order), values under
    the read's served names.

    A feature without a value (never written, or still warming up: NaN) is
    missing; the row's time is the oldest event time of the views that gave it
    a value (views are written together, so they normally agree).
    """
    rows = []
    for i, pair in enumerate(pairs):
        values: dict[str, Any] = {}
        missing, times = [], []
        for read, view_rows in reads:
            event_time, found = view_rows[i]
            present = False
            for feature, name in zip(read.features, read.served_names, strict=True):
                value = feast_value_type_to_python_type(found[feature]) if found and feature in found else None
                values[name] = value
                if _absent(value):
                    missing.append(name)
                else:
                    present = True
            if present and event_time is not None:
                times.append(event_time)
        rows.append(FeatureRow(pair, values, min(times) if times else None, tuple(missing)))
    return rows


def serving_store(settings: Settings) -> FeatureStore:
    """The project's FeatureStore with the API's Redis client options (timeouts, no retries with backoff)."""
    config = repo_config(settings)
    timeout = settings.serve.online_store_timeout_s
    config.online_store.connection_string += f",socket_timeout={timeout},socket_connect_timeout={timeout}"
    # A cluster client takes its retries as its own option, not its connections' `retry`.
    cluster = settings.services.redis_type == "redis_cluster"
    config.online_store.connection_string += ",cluster_error_retry_attempts=0" if cluster else ",retry=null"
    return FeatureStore(repo_path=str(settings.feast.repo_path.resolve()), config=config)


class OnlineFeatures:
    """Reads FeatureService rows for pairs from the online store (asynchronously, through Feast's provider)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._layouts: dict[str, tuple[ViewRead, ...]] = {}
        self._windows: dict[tuple[str, tuple[str, ...]], tuple[ViewRead, ...]] = {}

    def layout(self, service_name: str) -> tuple[ViewRead, ...]:
        """The views and features of a FeatureService, from the registry once."""
        if service_name not in self._layouts:
            service = self.store.get_feature_service(service_name)
            self._layouts[service_name] = tuple(
                ViewRead(self.store.get_feature_view(p.name), tuple(f.name for f in p.features))
                for p in service.feature_view_projections
            )
        return self._layouts[service_name]

    async def _read_views(self, layout: Sequence[ViewRead], keys: list[EntityKey]) -> list[ViewRows]:
        provider, config = self.store.provider, self.store.config
        return await asyncio.gather(
            *(provider.online_read_async(config, read.view, keys, list(read.features)) for read in layout)
        )

    async def read(self, service_name: str, pairs: Sequence[str]) -> list[FeatureRow]:
        """One online read of `service_name` for all `pairs`; raises OnlineStoreUnavailable when Redis fails."""
        return await self._read(self.layout(service_name), pairs)

    def window_layout(self, view_name: str, features: tuple[str, ...]) -> tuple[ViewRead, ...]:
        """The window view's lists of `features`, served under the features' own names; from the registry once."""
        key = (view_name, features)
        if key not in self._windows:
            view = self.store.get_feature_view(view_name)
            self._windows[key] = (ViewRead(view, tuple(window_feature(name) for name in features), features),)
        return self._windows[key]

    async def read_windows(self, view_name: str, features: tuple[str, ...], pairs: Sequence[str]) -> list[FeatureRow]:
        """The windows of `features` (a list of the last candles' values each, oldest first) of `pairs`."""
        return await self._read(self.window_layout(view_name, features), pairs)

    async def _read(self, layout: Sequence[ViewRead], pairs: Sequence[str]) -> list[FeatureRow]:
        keys = entity_keys(pairs)
        for attempt in (1, 2):
            try:
                results = await self._read_views(layout, keys)
                break
            except redis.exceptions.ConnectionError as exc:
                # A pooled connection that a restarted Redis dropped fails once; the retry opens a new one.
                if attempt == 2:
                    raise OnlineStoreUnavailable(f"online store unreachable: {exc}") from exc
            except REDIS_ERRORS as exc:
                raise OnlineStoreUnavailable(f"online store error: {type(exc).__name__}: {exc}") from exc
        return rows_from_reads(list(zip(layout, results, strict=True)), pairs)
