"""Online features for serving: one online-store read per feature view of a FeatureService, for a batch of pairs.

On Redis (one server or a cluster) a read is one round trip: one HMGET per
pair of every field of the FeatureService's views, which Feast keeps in one
hash per entity, through the Redis online store's own key and field encoding
and value decoding. Any other Feast online store (after a change of
feature_store.yaml) is read through the provider's `online_read_async`, one
read per view. Either way the views and features of the FeatureService are
resolved once per service. Feast's `get_online_features_async` reads the
same fields but then builds a generic response (entity de-duplication,
statuses, protobuf-to-dict conversion) that costs about as much CPU as the
read itself; a served row needs only the values and their event times. The
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
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type

from coinflow.feature_store import repo_config
from coinflow.redis_store import REDIS_ERRORS
from coinflow.settings import Settings
from feature_repo.names import ENTITY, window_feature

ViewRows = list[tuple[datetime | None, dict[str, Value] | None]]
# Redis keys kept per pair (a client may ask for any text as a pair; only the served ones are asked for twice).
MAX_CACHED_KEYS = 10_000


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


# Value kinds whose Python value is the field itself; the others (lists, timestamps, ...) go through Feast.
_SCALAR_KINDS = frozenset({"double_val", "float_val", "int64_val", "int32_val", "bool_val", "string_val"})


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def python_value(value: Value) -> Any:
    """`feast_value_type_to_python_type`'s answer, read directly for scalar kinds (ten times cheaper)."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALAR_KINDS:
        return getattr(value, kind)
    return feast_value_type_to_python_type(value)


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
                value = python_value(found[feature]) if found and feature in found else None
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


@dataclass(frozen=True)
class RedisFields:
    """The hash fields of a layout's views in one HMGET: per view, its stored name, the features it returns (its
    timestamp field last) and where its fields end in the reply."""

    fields: tuple[bytes | str, ...]
    views: tuple[tuple[str, list[str], int], ...]

    @classmethod
    def of(cls, store: RedisOnlineStore, config: Any, layout: Sequence[ViewRead]) -> RedisFields:
        fields: list[bytes | str] = []
        views = []
        for read in layout:
            name = _versioned_fv_name(read.view, config)
            requested, hset_keys = store._generate_hset_keys_for_features(read.view, list(read.features), name)
            fields += hset_keys
            views.append((name, requested, len(fields)))
        return cls(tuple(fields), tuple(views))

    def split(self, store: RedisOnlineStore, replies: Sequence[Sequence[bytes | None]]) -> list[ViewRows]:
        """Each view's rows (one per pair, in order) from one HMGET reply per pair, decoded by the store."""
        out, start = [], 0
        for name, requested, end in self.views:
            out.append(store._convert_redis_values_to_protobuf([r[start:end] for r in replies], name, list(requested)))
            start = end
        return out


class OnlineFeatures:
    """Reads FeatureService rows for pairs from the online store (asynchronously): one round trip on Redis, one
    read per view through Feast's provider on any other online store."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._layouts: dict[str, tuple[ViewRead, ...]] = {}
        self._windows: dict[tuple[str, tuple[str, ...]], tuple[ViewRead, ...]] = {}
        online = store._get_provider().online_store
        self._redis = online if isinstance(online, RedisOnlineStore) else None
        self._fields: dict[int, RedisFields] = {}
        self._redis_keys: dict[str, bytes] = {}

    def layout(self, service_name: str) -> tuple[ViewRead, ...]:
        """The views and features of a FeatureService, from the registry once."""
        if service_name not in self._layouts:
            service = self.store.get_feature_service(service_name)
            self._layouts[service_name] = tuple(
                ViewRead(self.store.get_feature_view(p.name), tuple(f.name for f in p.features))
                for p in service.feature_view_projections
            )
        return self._layouts[service_name]

    async def _read_views(self, layout: tuple[ViewRead, ...], pairs: Sequence[str]) -> list[ViewRows]:
        config = self.store.config
        if self._redis is None:
            keys = entity_keys(pairs)
            provider = self.store.provider
            return await asyncio.gather(
                *(provider.online_read_async(config, read.view, keys, list(read.features)) for read in layout)
            )
        redis_store = self._redis
        # Layouts are made once and kept (`layout`, `window_layout`), so their identity names them.
        fields = self._fields.get(id(layout))
        if fields is None:
            fields = self._fields[id(layout)] = RedisFields.of(redis_store, config, layout)
        client = await redis_store._get_client_async(config.online_store)
        if len(pairs) == 1:
            replies = [await client.hmget(self._redis_key(pairs[0]), fields.fields)]
        else:
            async with client.pipeline(transaction=False) as pipe:
                for pair in pairs:
                    pipe.hmget(self._redis_key(pair), fields.fields)
                replies = await pipe.execute()
        return fields.split(redis_store, replies)

    def _redis_key(self, pair: str) -> bytes:
        """The Redis key of a pair's hash (Feast's encoding of its entity key and the project), made once."""
        key = self._redis_keys.get(pair)
        if key is None:
            assert self._redis is not None
            (key,) = self._redis._generate_redis_keys_for_entities(self.store.config, entity_keys([pair]))
            if len(self._redis_keys) < MAX_CACHED_KEYS:
                self._redis_keys[pair] = key
        return key

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

    async def _read(self, layout: tuple[ViewRead, ...], pairs: Sequence[str]) -> list[FeatureRow]:
        for attempt in (1, 2):
            try:
                results = await self._read_views(layout, pairs)
                break
            except redis.exceptions.ConnectionError as exc:
                # A pooled connection that a restarted Redis dropped fails once; the retry opens a new one.
                if attempt == 2:
                    raise OnlineStoreUnavailable(f"online store unreachable: {exc}") from exc
            except REDIS_ERRORS as exc:
                raise OnlineStoreUnavailable(f"online store error: {type(exc).__name__}: {exc}") from exc
        return rows_from_reads(list(zip(layout, results, strict=True)), pairs)
