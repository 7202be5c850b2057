"""Online features for serving: one Feast read per FeatureService for a batch of pairs, with when each row became known.

Each feature view row carries its event timestamp (the candle's window end),
so a served row says how old it is. The API's FeatureStore reads Redis with a
short socket timeout and without redis-py's retries with backoff, so an
unreachable Redis answers within the timeout (503) instead of after seconds
of retries; a connection dropped by a restarted Redis is retried once at once.

Sequence models (the LSTM/GRU of the training pipeline) need the last N
candles of a pair, not one row; `OnlineFeatures.read` is where such a read
would go (for example a view keyed by pair holding the window as list
features, written by the feature pipeline), and `ModelStore` refuses them
until it exists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.exceptions
from feast import FeatureService, FeatureStore
from feast.online_response import TIMESTAMP_POSTFIX

from coinflow.settings import Settings
from coinflow.store import repo_config
from feature_repo.names import ENTITY


class OnlineStoreUnavailable(RuntimeError):
    """The online store did not answer (down, restarting or too slow)."""


@dataclass(frozen=True)
class FeatureRow:
    """The online features of one pair: values by name, the oldest event time among them, and what is missing."""

    pair: str
    values: dict[str, Any]
    feature_time: datetime | None
    missing: tuple[str, ...]


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rows_from_response(response: Mapping[str, list], pairs: Sequence[str], features: Sequence[str]) -> list[FeatureRow]:
    """FeatureRows from `OnlineResponse.to_dict(include_event_timestamps=True)` for `pairs` in request order.

    A feature without a value (never written, expired past the view's TTL or
    still warming up) is missing; the row's time is the oldest event time of
    the values it has (views are written together, so they normally agree).
    """
    rows = []
    for i, pair in enumerate(pairs):
        values, missing, seconds = {}, [], []
        for name in features:
            value = response[name][i]
            values[name] = value
            if _absent(value):
                missing.append(name)
            else:
                seconds.append(response[name + TIMESTAMP_POSTFIX][i])
        feature_time = datetime.fromtimestamp(min(seconds), UTC) if seconds else None
        rows.append(FeatureRow(pair, values, feature_time, tuple(missing)))
    return rows


def serving_store(settings: Settings) -> FeatureStore:
    """The project's FeatureStore with the API's Redis client options (timeouts, no retries with backoff)."""
    config = repo_config(settings)
    timeout = settings.online_store_timeout_s
    config.online_store.connection_string += f",socket_timeout={timeout},socket_connect_timeout={timeout},retry=null"
    return FeatureStore(repo_path=str(settings.feature_repo_path.resolve()), config=config)


class OnlineFeatures:
    """Reads FeatureService rows for pairs from the online store (asynchronously, Feast's Redis client)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._services: dict[str, FeatureService] = {}

    def service(self, name: str) -> FeatureService:
        if name not in self._services:
            self._services[name] = self.store.get_feature_service(name)
        return self._services[name]

    async def read(self, service_name: str, features: Sequence[str], pairs: Sequence[str]) -> list[FeatureRow]:
        """One online read of `service_name` for all `pairs`; raises OnlineStoreUnavailable when Redis fails."""
        service = self.service(service_name)
        entity_rows = [{ENTITY: pair} for pair in pairs]
        for attempt in (1, 2):
            try:
                response = await self.store.get_online_features_async(features=service, entity_rows=entity_rows)
                break
            except redis.exceptions.ConnectionError as exc:
                # A pooled connection that a restarted Redis dropped fails once; the retry opens a new one.
                if attempt == 2:
                    raise OnlineStoreUnavailable(f"online store unreachable: {exc}") from exc
            except (redis.exceptions.RedisError, OSError) as exc:
                raise OnlineStoreUnavailable(f"online store error: {type(exc).__name__}: {exc}") from exc
        return rows_from_response(response.to_dict(include_event_timestamps=True), pairs, features)
