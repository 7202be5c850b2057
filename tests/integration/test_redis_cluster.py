"""The online store on a real Redis Cluster (three local masters, COINFLOW_REDIS_TYPE=redis_cluster): the feature
pipeline's sink writes into it, Feast and the prediction API's reader read it back, and a killed node makes writes
fail loudly until it is back."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator

import pytest
from quixstreams.sinks import SinkBackpressureError, SinkBatch

from coinflow import services
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.settings import Settings
from feature_pipeline.candles.sink import CandleFeastSink
from feature_repo.names import ENTITY, regression_service, window_view
from inference_pipeline.app import Runtime
from inference_pipeline.features import OnlineFeatures, OnlineStoreUnavailable, serving_store
from inference_pipeline.metrics import ApiMetrics
from tests.support.inference import FEATURES, MINUTE_MS, feature_rows
from tests.support.paths import copy_feature_repo
from tests.support.redis_cluster import LocalCluster, local_cluster

pytestmark = pytest.mark.integration

PAIRS = [f"C{i}/USD" for i in range(10)]
CANDLES = 80  # enough for every indicator to be defined at the last candle


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(scope="module")
def cluster_settings(cluster: LocalCluster, tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("cluster-repo")
    settings = Settings(
        _env_file=None,
        run_dir=root / "run",
        redis_url=cluster.url,
        redis_type="redis_cluster",
        feature_repo_path=copy_feature_repo(root),
        feast_project="coinflow_cluster_it",
        metrics_port=0,
        serve_pairs=PAIRS,
    )
    apply_feature_repo(settings)
    return settings


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the test's async reads, as the API has one for its life (its clients are bound to it)."""
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture
def settings(cluster: LocalCluster, cluster_settings: Settings) -> Settings:
    cluster.flush()
    return cluster_settings


def rows_of(pairs: list[str], last_end_ms: int | None = None) -> dict[str, list[dict]]:
    """Real candles with their indicators for each pair, each pair's closes moved by its index (so that a pair read
    under another's key shows)."""
    base = feature_rows(pairs[0], CANDLES, last_end_ms)
    return {pair: [{**row, ENTITY: pair, "close": row["close"] + i} for row in base] for i, pair in enumerate(pairs)}


def batch_of(rows: list[dict]) -> SinkBatch:
    batch = SinkBatch("candles", 0)
    for offset, value in enumerate(rows):
        batch.append(value=value, key=value[ENTITY], timestamp=0, headers=[], offset=offset)
    return batch


def sink_of(settings: Settings, **options) -> CandleFeastSink:
    sink = CandleFeastSink(lambda: feature_store(settings), settings.stream.online_window_length, **options)
    sink.setup()
    return sink


def online(settings: Settings, pairs: list[str]) -> dict[str, list]:
    store = feature_store(settings)
    service = store.get_feature_service(regression_service("1m"))
    return store.get_online_features(features=service, entity_rows=[{ENTITY: p} for p in pairs]).to_dict()


def assert_online_is_last_rows(settings: Settings, written: dict[str, list[dict]]) -> None:
    got = online(settings, list(written))
    for i, (pair, rows) in enumerate(written.items()):
        assert got[ENTITY][i] == pair
        last = rows[-1]
        assert {name: got[name][i] for name in FEATURES} == {name: last[name] for name in FEATURES}, pair


def test_the_sinks_rows_are_spread_over_the_nodes_and_read_back_equal(settings, cluster):
    written = rows_of(PAIRS)

    sink_of(settings).write_rows([row for rows in written.values() for row in rows])

    assert_online_is_last_rows(settings, written)
    holding = [port for port, keys in cluster.keys_per_node().items() if keys]
    assert len(holding) > 1, cluster.keys_per_node()
    assert services.redis_healthy(settings.services.redis_url, redis_type="redis_cluster")
    assert services.ensure_redis(settings) == settings.services.redis_url


def test_the_apis_online_reads_and_readiness_work_on_the_cluster(settings, loop):
    written = rows_of(PAIRS)
    sink_of(settings).write_rows([row for rows in written.values() for row in rows])
    store = serving_store(settings)
    features = OnlineFeatures(store)
    pairs = [*PAIRS, "NEVER/WRITTEN"]

    rows = loop.run_until_complete(features.read(regression_service("1m"), pairs))
    windows = loop.run_until_complete(features.read_windows(window_view("1m"), ("close",), PAIRS))

    expected = store.get_online_features(
        features=store.get_feature_service(regression_service("1m")), entity_rows=[{ENTITY: p} for p in pairs]
    ).to_dict()
    for i, row in enumerate(rows):
        assert row.pair == pairs[i]
        assert row.values == {name: expected[name][i] for name in FEATURES}
    assert rows[0].missing == () and rows[-1].feature_time is None
    for pair, window in zip(PAIRS, windows, strict=True):
        closes = [row["close"] for row in written[pair]][-settings.stream.online_window_length :]
        assert window.values["close"] == closes
    runtime = Runtime(settings, "http://127.0.0.1:1", ApiMetrics())  # MLflow is not reached before start()
    assert loop.run_until_complete(runtime.online_store_up())
    loop.run_until_complete(runtime.redis.aclose())


def test_a_killed_node_fails_writes_loudly_and_its_restart_heals(settings, cluster, caplog, loop):
    first = rows_of(PAIRS)
    sink = sink_of(settings, retries=2, retry_after_s=0.1)
    sink.write(batch_of([row for rows in first.values() for row in rows]))
    victim = next(port for port, keys in cluster.keys_per_node().items() if keys)
    reader = OnlineFeatures(serving_store(settings))

    cluster.kill_node(victim)
    later = rows_of(PAIRS, last_end_ms=first[PAIRS[0]][-1]["window_end_ms"] + 10 * MINUTE_MS)
    with caplog.at_level(logging.WARNING), pytest.raises(SinkBackpressureError):
        sink.write(batch_of([row for rows in later.values() for row in rows]))

    assert "Feature store write failed 2 times" in caplog.text
    assert not sink.rejects.counts  # the store's failure, not the rows': nothing dead-lettered
    with pytest.raises(OnlineStoreUnavailable):
        loop.run_until_complete(reader.read(regression_service("1m"), PAIRS))
    assert not services.redis_healthy(settings.services.redis_url, redis_type="redis_cluster")
    with pytest.raises(services.ServiceError, match="not started here"):
        services.ensure_redis(settings)
    assert not (settings.services.run_dir / "redis.json").exists()

    cluster.start_node(victim)
    cluster.wait_ok()
    sink.write(batch_of([row for rows in later.values() for row in rows]))

    assert_online_is_last_rows(settings, later)
    rows = loop.run_until_complete(reader.read(regression_service("1m"), PAIRS))
    assert all(not row.missing for row in rows)
    assert [row.values["close"] for row in rows] == [later[p][-1]["close"] for p in PAIRS]
    assert not any(math.isnan(v) for row in rows for v in row.values.values() if isinstance(v, float))
