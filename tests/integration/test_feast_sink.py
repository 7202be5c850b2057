"""The feature store sink against the real Redis and Feast: a row it can never write is rejected, not retried; any
feature view is written with the types Feast declares."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
from feast.data_format import ParquetFormat
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType
from quixstreams.sinks import SinkBackpressureError, SinkBatch

from coinflow import parquet_writer
from coinflow.exchange_files import iter_ohlcvt_csv
from coinflow.feature_store import feast_redis_connection, feature_store
from coinflow.quality import Rejects
from feature_pipeline.candles.sink import CandleFeastSink
from feature_pipeline.sinks.feast_sink import FeastSink, check_timestamp_columns, single_view
from feature_pipeline.transforms.indicators import new_indicator_state, update_indicators
from feature_repo.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP

pytestmark = pytest.mark.integration

PAIR = "BTC/USD"


def feature_rows(data_dir, count: int) -> list[dict]:
    """Real one-minute candles with their indicators, as the dataflow hands them to the sink."""
    candles = list(
        iter_ohlcvt_csv(data_dir / "kraken" / "ohlcvt_XBTUSDC_1m_2023Q1.csv", PAIR, "1m", 60, Rejects("test"))
    )[:count]
    state = new_indicator_state()
    return [{**candle, **update_indicators(state, candle)} for candle in candles]


def batch_of(values: list[dict]) -> SinkBatch:
    batch = SinkBatch("candles", 0)
    for offset, value in enumerate(values):
        batch.append(value=value, key=PAIR, timestamp=0, headers=[], offset=offset)
    return batch


def written(settings, view: str) -> list[int]:
    root = parquet_writer.dataset_root(feature_store(settings).get_feature_view(view).batch_source.path)
    rows = parquet_writer.read_rows(root)
    return sorted(int(ts.timestamp() * 1000) for ts in rows["event_timestamp"])


def test_rows_that_cannot_be_converted_are_dead_lettered_and_the_rest_written(settings, data_dir):
    rows = feature_rows(data_dir, 30)
    year_5138 = {**rows[10], "window_end_ms": 99_999_999_999_000}  # beyond what pandas' timestamps hold
    not_a_number = {**rows[20], "rsi_14": "abc"}
    end = {"control": "end", "pair": PAIR, "timestamp_ms": rows[-1]["window_end_ms"], "run_id": "r"}
    dead, ends = [], []
    sink = CandleFeastSink(lambda: feature_store(settings), retries=2, on_end=ends.append, dead_letter=dead.append)
    sink.setup()

    sink.write(batch_of([*rows[:10], year_5138, *rows[10:20], not_a_number, *rows[20:], end]))

    assert dict(sink.rejects.counts) == {"unwritable_row": 2}
    assert [json.loads(d["raw"]) for d in dead] == [year_5138, not_a_number]
    assert {d["stage"] for d in dead} == {"feast_sink"}
    expected = [row["window_end_ms"] for row in rows]
    assert written(settings, "ohlcv_1m") == written(settings, "indicators_1m") == expected
    assert sink.rows_written["ohlcv_1m"] == 30
    assert ends == [end]


def test_an_unreachable_store_is_retried_then_backpressure_with_nothing_rejected(settings, data_dir):
    down = settings.override(redis_url="redis://127.0.0.1:19459/0")  # nothing listens there
    sink = CandleFeastSink(lambda: feature_store(down), retries=2, retry_after_s=0.1)
    sink.setup()
    with pytest.raises(SinkBackpressureError):
        sink.write(batch_of(feature_rows(data_dir, 5)))
    assert not sink.rejects.counts


def generic_store(root: Path, redis_url: str) -> FeatureStore:
    """A repository of its own: one view with a string, an integer, a float and a list feature, keyed by a string
    entity, its event time in a column of the view's source (Redis online: the tests' own)."""
    config = RepoConfig(
        project=f"sink_{uuid.uuid4().hex[:8]}",
        registry=str(root / "registry.db"),
        provider="local",
        online_store={"type": "redis", "connection_string": feast_redis_connection(redis_url)},
        offline_store={"type": "coinflow.asof_offline_store.AsofDuckDBOfflineStore"},
        entity_key_serialization_version=3,
        repo_path=root,
    )
    account = Entity(name="account", join_keys=["account"], value_type=ValueType.STRING)
    source = FileSource(
        name="accounts",
        path=str(root / "offline" / "accounts"),
        file_format=ParquetFormat(),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
    )
    view = FeatureView(
        name="accounts",
        entities=[account],
        ttl=timedelta(days=1),
        schema=[
            Field(name="tier", dtype=String),
            Field(name="orders", dtype=Int64),
            Field(name="score", dtype=Float64),
            Field(name="recent", dtype=Array(Float64)),
        ],
        source=source,
        online=True,
    )
    store = FeatureStore(repo_path=str(root), config=config)
    with contextlib.redirect_stdout(io.StringIO()):
        store.apply([account, view])
    return store


def test_any_view_is_written_with_the_types_feast_declares(tmp_path, redis_url):
    store = generic_store(tmp_path, redis_url)
    rows = [
        {"account": "a", "at_ms": 1_700_000_000_000, "tier": "gold", "orders": 2**40, "score": 0.5, "recent": [1.0]},
        {"account": "a", "at_ms": 1_700_000_060_000, "tier": "silver", "orders": 3, "score": 1.5, "recent": [1.0, 2.0]},
        {"account": "b", "at_ms": 1_700_000_000_000, "tier": "bronze", "orders": 0, "score": -1.0, "recent": []},
    ]
    sink = FeastSink(lambda: store, single_view("accounts"), time_field="at_ms")
    sink.setup()

    sink.write_rows(rows)

    online = store.get_online_features(
        features=["accounts:tier", "accounts:orders", "accounts:score", "accounts:recent"],
        entity_rows=[{"account": "a"}, {"account": "b"}],
    ).to_dict()
    assert online["tier"] == ["silver", "bronze"]  # the newest row of each entity
    assert online["orders"] == [3, 0]
    assert online["recent"] == [[1.0, 2.0], []]
    root = parquet_writer.dataset_root(str(tmp_path / "offline" / "accounts"))
    schema = pq.read_schema(sorted(root.glob("*/*.parquet"))[0])
    assert schema.field("tier").type == pa.string()
    assert schema.field("orders").type == pa.int64()
    assert schema.field("recent").type == pa.list_(pa.float64())
    offline = parquet_writer.read_rows(root)
    assert sorted(offline["orders"]) == [0, 3, 2**40]  # exact: never through a float
    assert sink.rows_written["accounts"] == 3


def test_a_view_with_other_timestamp_columns_is_refused_with_a_clear_error(tmp_path, redis_url):
    store = generic_store(tmp_path, redis_url)
    view = store.get_feature_view("accounts")
    view.batch_source.created_timestamp_column = "updated_at"
    with pytest.raises(
        ValueError, match=r"accounts: its source's timestamp columns are \('event_timestamp', 'updated_at'\)"
    ):
        check_timestamp_columns(view)
