"""The feature store takes its project, registry and Redis from Settings; the window rows of the online store."""

import math
from pathlib import Path

import pandas as pd
from feast.repo_config import load_repo_config

from coinflow import parquet_writer
from coinflow.feature_store import feast_redis_connection, feature_store_yaml, repo_config
from coinflow.settings import Settings
from coinflow.windows import window_row
from feature_repo.names import CANDLE_FEATURES, window_feature
from tests.support.paths import ROOT


def test_feast_connection_strings():
    assert feast_redis_connection("redis://127.0.0.1:6379/0") == "127.0.0.1:6379,db=0"
    assert feast_redis_connection("rediss://:secret@cache:6380/3") == "cache:6380,db=3,password=secret,ssl=true"


def test_repo_config_takes_project_registry_and_redis_from_settings(tmp_path):
    settings = Settings(
        _env_file=None,
        feast_project="proj_x",
        redis_url="redis://10.0.0.5:6390/4",
        feast_registry_path=tmp_path / "r.db",
    )
    config = repo_config(settings)
    assert config.project == "proj_x"
    assert config.online_store.connection_string == "10.0.0.5:6390,db=4"
    assert Path(config.registry.path) == (tmp_path / "r.db").resolve()
    assert config.offline_store.type == "coinflow.asof_offline_store.AsofDuckDBOfflineStore"


def _default_settings(monkeypatch) -> Settings:
    for name in ("REDIS_URL", "FEAST_PROJECT", "FEAST_REGISTRY_PATH", "FEATURE_REPO_PATH"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"COINFLOW_{name}", raising=False)
    return Settings(_env_file=None)


def _feast_view(config) -> tuple:
    """What a configuration decides: the project, the registry file, Redis and the offline store."""
    registry = Path(config.registry.path)
    if not registry.is_absolute():
        registry = Path(config.repo_path) / registry
    return (
        config.project,
        registry.resolve(),
        config.online_store.connection_string,
        config.offline_store.type,
    )


def test_the_yaml_plain_feast_reads_holds_the_settings_defaults(monkeypatch):
    settings = _default_settings(monkeypatch)
    repo = settings.feast.repo_path.resolve()
    plain = load_repo_config(repo, repo / "feature_store.yaml")
    assert _feast_view(plain) == _feast_view(repo_config(settings))
    assert _feast_view(plain)[:3] == ("coinflow", repo / "data" / "registry.db", "127.0.0.1:6379,db=0")


def test_the_rendered_yaml_gives_plain_feast_the_settings_values(tmp_path):
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text((ROOT / "feature_repo" / "feature_store.yaml").read_text())
    settings = Settings(_env_file=None, feature_repo_path=repo, feast_project="proj_y", redis_url="redis://h:1/5")
    (repo / "feature_store.yaml").write_text(feature_store_yaml(settings))
    assert _feast_view(load_repo_config(repo, repo / "feature_store.yaml")) == _feast_view(repo_config(settings))
    assert repo_config(settings).online_store.connection_string == "h:1,db=5"


def _rows(closes, created):
    return pd.DataFrame(
        {
            "pair": ["BTC/USD"] * len(closes),
            "event_timestamp": pd.to_datetime([60_000 * (i + 1) for i in range(len(closes))], unit="ms", utc=True),
            "created": pd.Timestamp(created, tz="UTC"),
            "close": closes,
        }
    )


def test_offline_writes_are_idempotent_and_newest_created_wins(tmp_path):
    import pyarrow as pa

    schema = pa.schema(
        [
            ("pair", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created", pa.timestamp("us", tz="UTC")),
            ("close", pa.float64()),
        ]
    )
    parquet_writer.write_rows(tmp_path, _rows([1.0, 2.0, 3.0], "2024-01-01"), schema)
    parquet_writer.write_rows(tmp_path, _rows([1.0, 2.0, 3.0], "2024-01-01"), schema)
    assert len(parquet_writer.read_rows(tmp_path)) == 3
    parquet_writer.write_rows(tmp_path, _rows([1.0, 20.0], "2024-01-02"), schema)
    rows = parquet_writer.read_rows(tmp_path).sort_values("event_timestamp")
    assert rows["close"].tolist() == [1.0, 20.0, 3.0]
    assert [p.name for p in tmp_path.glob("*/*.parquet")] == ["1970-01-01.parquet"]
    assert parquet_writer.dataset_root(str(tmp_path / "*" / "*.parquet")) == tmp_path


def test_an_offline_write_merges_into_a_file_from_pandas_with_its_columns_in_another_order_and_one_missing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("pair", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created", pa.timestamp("us", tz="UTC")),
            ("close", pa.float64()),
            ("volume", pa.float64()),
        ]
    )
    older = _rows([1.0, 2.0], "2024-01-01")[["close", "created", "event_timestamp", "pair"]]  # no volume
    path = parquet_writer.partition_path(tmp_path, "BTC/USD", "1970-01-01")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(older), path)  # pandas metadata, an index column
    newer = _rows([1.0, 20.0, 30.0], "2024-01-01").assign(volume=[5.0, 6.0, 7.0])  # created at the same time
    parquet_writer.write_rows(tmp_path, newer[schema.names], schema)
    rows = parquet_writer.read_rows(tmp_path)
    assert list(rows.columns) == schema.names
    assert rows["close"].tolist() == [1.0, 20.0, 30.0]  # a tie on created: the row written last wins
    assert rows["volume"].tolist() == [5.0, 6.0, 7.0]
    assert rows["event_timestamp"].is_monotonic_increasing


def test_the_tail_of_an_entity_spans_days_and_the_window_row_lists_it_oldest_first(tmp_path):
    import pyarrow as pa

    schema = pa.schema(
        [
            ("pair", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created", pa.timestamp("us", tz="UTC")),
            ("close", pa.float64()),
        ]
    )
    day = 86_400_000
    rows = pd.DataFrame(
        {
            "pair": "BTC/USD",
            "event_timestamp": pd.to_datetime([day - 120_000, day - 60_000, day, day + 60_000], unit="ms", utc=True),
            "created": pd.Timestamp("2024-01-01", tz="UTC"),
            "close": [1.0, 2.0, 3.0, 4.0],
        }
    )
    parquet_writer.write_rows(tmp_path, rows, schema)
    assert len(list(tmp_path.glob("*/*.parquet"))) == 2
    assert parquet_writer.tail_rows(tmp_path, "BTC/USD", 3)["close"].tolist() == [2.0, 3.0, 4.0]
    assert parquet_writer.tail_rows(tmp_path, "BTC/USD", 10)["close"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert parquet_writer.tail_rows(tmp_path, "ETH/USD", 3).empty

    history = pd.DataFrame(
        {"event_timestamp": rows["event_timestamp"], **{name: [1.0, 2.0, None, 4.0] for name in CANDLE_FEATURES}}
    )
    window = window_row(history, "BTC/USD")
    assert window["pair"] == "BTC/USD" and window["event_timestamp"] == rows["event_timestamp"].iloc[-1]
    assert window["close_window"][:2] == [1.0, 2.0] and math.isnan(window["close_window"][2])
    assert set(window) >= {window_feature(name) for name in CANDLE_FEATURES}
