"""Point-in-time retrieval of the ASOF offline store: constructed cases, and equality with Feast's DuckDB store.

Unit tests, though they run real Feast and DuckDB: everything lives in local
files (Parquet, a file registry, a SQLite online store that is never read), so
no service is needed. Each case runs the same `get_historical_features` call on
two FeatureStores that differ only in their offline store.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

from coinflow.asof_offline_store import AsofDuckDBOfflineStoreConfig, AsofRetrievalJob
from coinflow.feature_store import repo_config as coinflow_repo_config
from coinflow.settings import Settings
from feature_repo.names import INDICATOR_FEATURES, OHLCV_FEATURES, regression_service
from tests.support.paths import FEATURE_REPO

ASOF = "coinflow.asof_offline_store.AsofDuckDBOfflineStore"
FEAST = "duckdb"
T0 = pd.Timestamp("2024-01-01", tz="UTC")
US = pd.Timedelta(microseconds=1)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def config(repo: Path, offline_type: str, **offline_options) -> RepoConfig:
    return RepoConfig(
        project="pit",
        registry=str(repo / "registry.db"),
        provider="local",
        online_store={"type": "sqlite", "path": str(repo / "online.db")},
        offline_store={"type": offline_type, **offline_options},
        entity_key_serialization_version=3,
        repo_path=repo,
    )


def stores(repo: Path, objects: list, **asof_options) -> tuple[FeatureStore, FeatureStore]:
    """Feast's DuckDB store and the ASOF store over one registry holding `objects`."""
    feast = FeatureStore(repo_path=str(repo), config=config(repo, FEAST))
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        feast.apply(objects)
    return feast, FeatureStore(repo_path=str(repo), config=config(repo, ASOF, **asof_options))


def write(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def retrieve(store: FeatureStore, entities: pd.DataFrame, features, **kwargs) -> pd.DataFrame:
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        return store.get_historical_features(entities, features=features, **kwargs).to_df()


def by_row(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("row", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- a small repository of our own

pair = Entity(name="pair", join_keys=["pair"], value_type=ValueType.STRING)


def candle_view(repo: Path, ttl: timedelta) -> FeatureView:
    source = FileSource(
        name="candles_parquet",
        path=str(repo / "data" / "candles" / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    return FeatureView(
        name="candles",
        entities=[pair],
        ttl=ttl,
        schema=[Field(name="close", dtype=Float64), Field(name="trades", dtype=Int64)],
        source=source,
    )


def candles(rows: list[tuple[str, pd.Timestamp, pd.Timestamp | None, float]]) -> pd.DataFrame:
    """Feature rows from (pair, event time, created, close); trades is close as an integer."""
    frame = pd.DataFrame(rows, columns=["pair", "event_timestamp", "created", "close"])
    frame["created"] = pd.to_datetime(frame["created"], utc=True)
    frame["trades"] = frame["close"].astype("int64")
    return frame


@pytest.fixture
def small(tmp_path):
    """(feast store, asof store) over one view with a 1-hour TTL and the rows a test writes first."""

    def build(rows: pd.DataFrame | list[pd.DataFrame], ttl: timedelta = timedelta(hours=1), **asof_options):
        for i, frame in enumerate(rows if isinstance(rows, list) else [rows]):
            write(tmp_path / "data" / "candles" / f"part{i}.parquet", frame)
        return stores(tmp_path, [pair, candle_view(tmp_path, ttl)], **asof_options)

    return build


def entities(rows: list[tuple[str | None, pd.Timestamp]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["pair", "event_timestamp"])
    frame.insert(0, "row", np.arange(len(frame)))
    return frame


def both(feast: FeatureStore, asof: FeatureStore, ents: pd.DataFrame, features, **kwargs) -> pd.DataFrame:
    """The ASOF store's answer, after checking it is Feast's answer row for row."""
    ours = retrieve(asof, ents, features, **kwargs)
    theirs = retrieve(feast, ents, features, **kwargs)
    pd.testing.assert_frame_equal(by_row(ours), by_row(theirs), check_exact=True)
    return ours


FEATURES = ["candles:close", "candles:trades"]


def test_a_row_known_one_microsecond_after_the_label_time_is_not_used(small):
    label_time = T0 + pd.Timedelta(minutes=10)
    feast, asof = small(
        candles(
            [
                ("BTC/USD", label_time - pd.Timedelta(minutes=1), label_time - pd.Timedelta(minutes=1), 1.0),
                ("BTC/USD", label_time + US, label_time + US, 2.0),
            ]
        )
    )
    ents = entities([("BTC/USD", label_time), ("BTC/USD", label_time + US)])
    frame = both(feast, asof, ents, FEATURES)
    assert frame["close"].tolist() == [1.0, 2.0]


def test_ttl_bounds_are_inclusive_and_ttl_zero_means_none(small):
    feast, asof = small(candles([("BTC/USD", T0, T0, 1.0)]))
    ents = entities(
        [
            ("BTC/USD", T0 - US),
            ("BTC/USD", T0),
            ("BTC/USD", T0 + pd.Timedelta(hours=1)),
            ("BTC/USD", T0 + pd.Timedelta(hours=1) + US),
        ]
    )
    assert both(feast, asof, ents, FEATURES)["close"].tolist() == pytest.approx([np.nan, 1.0, 1.0, np.nan], nan_ok=True)


def test_without_ttl_any_older_row_is_used(tmp_path):
    write(tmp_path / "data" / "candles" / "part0.parquet", candles([("BTC/USD", T0, T0, 1.0)]))
    feast, asof = stores(tmp_path, [pair, candle_view(tmp_path, timedelta(0))])
    frame = both(feast, asof, entities([("BTC/USD", T0 + pd.Timedelta(days=400))]), FEATURES)
    assert frame["close"].tolist() == [1.0]


def test_ties_on_event_time_go_to_the_newest_created(small):
    t = T0 + pd.Timedelta(minutes=1)
    newest_first = candles([("BTC/USD", t, t + pd.Timedelta(seconds=9), 3.0), ("ETH/USD", t, None, 7.0)])
    older = candles(
        [
            ("BTC/USD", t, t + pd.Timedelta(seconds=1), 1.0),
            ("BTC/USD", t, t + pd.Timedelta(seconds=5), 2.0),
            ("ETH/USD", t, t, 6.0),
        ]
    )
    feast, asof = small([newest_first, older])
    frame = both(feast, asof, entities([("BTC/USD", t), ("ETH/USD", t + US)]), FEATURES)
    # A missing created time loses to any known one (nulls sort last), as in Feast.
    assert frame["close"].tolist() == [3.0, 6.0]


def test_a_pair_without_rows_gets_nulls_and_keeps_its_row(small):
    feast, asof = small(candles([("BTC/USD", T0, T0, 1.0)]))
    ents = entities([("BTC/USD", T0), ("DOGE/USD", T0), (None, T0)])
    frame = both(feast, asof, ents, FEATURES)
    assert frame["pair"].tolist() == ["BTC/USD", "DOGE/USD", None]
    assert frame["close"].isna().tolist() == [False, True, True]
    assert frame["trades"].isna().tolist() == [False, True, True]


def test_full_feature_names_and_service_projections(tmp_path):
    write(tmp_path / "data" / "candles" / "part0.parquet", candles([("BTC/USD", T0, T0, 1.0)]))
    view = candle_view(tmp_path, timedelta(hours=1))
    service = FeatureService(name="svc", features=[view[["trades"]].with_name("late")])
    feast, asof = stores(tmp_path, [pair, view, service])
    ents = entities([("BTC/USD", T0 + US)])
    full = both(feast, asof, ents, FEATURES, full_feature_names=True)
    assert list(full.columns) == ["row", "pair", "event_timestamp", "candles__close", "candles__trades"]
    aliased = both(feast, asof, ents, asof.get_feature_service("svc"), full_feature_names=True)
    assert list(aliased.columns) == ["row", "pair", "event_timestamp", "late__trades"]
    short = both(feast, asof, ents, asof.get_feature_service("svc"))
    assert list(short.columns) == ["row", "pair", "event_timestamp", "trades"]
    assert short["trades"].tolist() == [1]


def test_field_mapping_and_join_key_mapping(tmp_path):
    rows = candles([("BTC/USD", T0, T0, 1.0), ("ETH/USD", T0, T0, 2.0)]).rename(columns={"close": "px"})
    write(tmp_path / "data" / "candles" / "part0.parquet", rows)
    view = candle_view(tmp_path, timedelta(hours=1))
    view.batch_source.field_mapping = {"px": "close", "absent_column": "trades_unused"}
    feast, asof = stores(tmp_path, [pair, view])
    mapped = view.with_join_key_map({"pair": "quote_pair"})
    ents = entities([("BTC/USD", T0), ("ETH/USD", T0)]).assign(quote_pair=["ETH/USD", "BTC/USD"])
    assert both(feast, asof, ents, ["candles:close"])["close"].tolist() == [1.0, 2.0]
    service = FeatureService(name="by_quote", features=[mapped[["close"]]])
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        feast.apply([service])
    assert both(feast, asof, ents, asof.get_feature_service("by_quote"))["close"].tolist() == [2.0, 1.0]


def test_entity_rows_keep_their_order_columns_and_types(small):
    feast, asof = small(candles([("BTC/USD", T0 + pd.Timedelta(minutes=m), T0, float(m)) for m in range(30)]))
    rng = np.random.default_rng(1)
    times = T0 + pd.to_timedelta(rng.integers(0, 40 * 60_000_000, 50), unit="us")
    ents = pd.DataFrame(
        {
            "pair": "BTC/USD",
            "event_timestamp": times.tz_localize(None),  # tz-naive: read as UTC
            "label": rng.normal(size=50),
            "horizon": np.arange(50, dtype="int32"),
            "note": [f"n{i}" for i in range(50)],
            "flag": rng.random(50) < 0.5,
            "row": np.arange(50),
        }
    )
    ours = retrieve(asof, ents, FEATURES)
    theirs = retrieve(feast, ents, FEATURES)
    assert ours["row"].tolist() == list(range(50))
    assert ours.dtypes.to_dict() == theirs.dtypes.to_dict()
    pd.testing.assert_frame_equal(ours, by_row(theirs), check_exact=True)
    minutes = (pd.Series(times) - T0) // pd.Timedelta(minutes=1)
    assert ours["close"].tolist() == pytest.approx(minutes.where(minutes < 30, 29).astype(float).tolist())


def test_chunks_give_the_same_answer_as_one_query(small):
    rows = candles([(p, T0 + pd.Timedelta(minutes=m), T0, float(m)) for p in ("A/USD", "B/USD") for m in range(60)])
    feast, asof = small(rows, chunk_rows=7)
    rng = np.random.default_rng(2)
    ents = entities(
        [
            (p, T0 + pd.Timedelta(microseconds=int(u)))
            for p, u in zip(rng.choice(["A/USD", "B/USD"], 100), rng.integers(0, 70 * 60_000_000, 100), strict=False)
        ]
    )
    assert both(feast, asof, ents, FEATURES)["row"].tolist() == list(range(100))


def test_filter_by_created_timestamp_excludes_rows_written_after_the_label_time(small):
    feast, asof = small(candles([("BTC/USD", T0, T0, 1.0), ("BTC/USD", T0 + US, T0 + pd.Timedelta(minutes=5), 2.0)]))
    ents = entities([("BTC/USD", T0 + pd.Timedelta(minutes=1))])
    assert both(feast, asof, ents, FEATURES, filter_by_created_timestamp=True)["close"].tolist() == [1.0]
    assert both(feast, asof, ents, FEATURES)["close"].tolist() == [2.0]


def test_inputs_it_cannot_join_are_refused_clearly(small):
    feast, asof = small(candles([("BTC/USD", T0, T0, 1.0)]))
    with pytest.raises(NotImplementedError, match="pandas DataFrame"):
        asof.get_historical_features("SELECT * FROM labels", features=FEATURES)
    with pytest.raises(ValueError, match="finer than a microsecond"):
        asof.get_historical_features(entities([("BTC/USD", T0 + pd.Timedelta(nanoseconds=1))]), features=FEATURES)


@pytest.mark.filterwarnings("ignore:Saving dataset is an experimental feature")
def test_a_retrieval_can_be_saved_as_a_feast_dataset(small, tmp_path):
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    feast, asof = small(candles([("BTC/USD", T0 + pd.Timedelta(minutes=m), T0, float(m)) for m in range(5)]))
    ents = entities([("BTC/USD", T0 + pd.Timedelta(minutes=m, seconds=30)) for m in range(5)])
    job = asof.get_historical_features(ents, features=FEATURES)
    assert job.metadata.min_event_timestamp == T0 + pd.Timedelta(seconds=30)
    path = tmp_path / "training.parquet"
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        asof.create_saved_dataset(from_=job, name="training", storage=SavedDatasetFileStorage(path=str(path)))
    pd.testing.assert_frame_equal(pd.read_parquet(path), job.to_df())
    assert pd.read_parquet(path)["close"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


# --------------------------------------------------------------------------- the project's own repository


def repo_definitions(tmp_path: Path):
    """The project's Feast objects, imported from a copy so that their Parquet sources are in tmp_path."""
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    for name in ("definitions.py", "names.py"):
        shutil.copy(FEATURE_REPO / name, repo / name)
    spec = importlib.util.spec_from_file_location("pit_test_definitions", repo / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return repo, module


def random_rows(features: tuple[str, ...], rng: np.random.Generator) -> pd.DataFrame:
    """Irregular feature rows: several pairs, gaps longer than the TTL, rewrites with other created times."""
    frames = []
    for pair_name in ("BTC/USD", "ETH/USD", "SOL/USD"):
        gaps = rng.choice([60, 61, 300, 7 * 3600], size=400, p=[0.6, 0.2, 0.15, 0.05])
        times = T0 + pd.to_timedelta(np.cumsum(gaps) * 1_000_000 + rng.integers(0, 1000, 400), unit="us")
        frame = pd.DataFrame({"pair": pair_name, "event_timestamp": times})
        frame["created"] = times + pd.to_timedelta(rng.integers(0, 5_000_000, 400), unit="us")
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    rewrites = rows.sample(frac=0.1, random_state=int(rng.integers(1 << 31)))
    shifts = rng.choice([-3, -2, -1, 1, 2, 3], len(rewrites))  # never 0: a full tie has no defined winner
    rewrites = rewrites.assign(created=rewrites["created"] + pd.to_timedelta(shifts, unit="s"))
    rows = pd.concat([rows, rewrites], ignore_index=True)
    for name in features:
        rows[name] = rng.integers(0, 1000, len(rows)) if name == "trade_count" else rng.normal(size=len(rows))
    return rows


def random_entities(rows: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Label times between and on feature rows, for known and unknown pairs, some repeated."""
    start, end = rows["event_timestamp"].min(), rows["event_timestamp"].max()
    span_us = int((end - start) / US) + 8 * 3600 * 1_000_000
    times = start - pd.Timedelta(minutes=30) + pd.to_timedelta(rng.integers(0, span_us, n), unit="us")
    pairs = rng.choice(["BTC/USD", "ETH/USD", "SOL/USD", "ADA/USD"], n, p=[0.3, 0.3, 0.3, 0.1])
    exact = rows.sample(n // 10, random_state=int(rng.integers(1 << 31)))
    frame = pd.DataFrame(
        {
            "pair": np.concatenate([pairs, exact["pair"]]),
            "event_timestamp": np.concatenate([times.to_numpy(), exact["event_timestamp"].to_numpy()]),
        }
    )
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["label"] = rng.normal(size=len(frame))
    frame = pd.concat([frame, frame.sample(n // 20, random_state=int(rng.integers(1 << 31)))], ignore_index=True)
    frame.insert(0, "row", np.arange(len(frame)))
    return frame


@pytest.mark.parametrize("seed", [11, 12])
def test_equals_feasts_duckdb_store_on_a_random_sample_of_the_regression_service(tmp_path, seed):
    repo, defs = repo_definitions(tmp_path)
    rng = np.random.default_rng(seed)
    data = {}
    for view, features in ((defs.ohlcv_1m, OHLCV_FEATURES), (defs.indicators_1m, INDICATOR_FEATURES)):
        rows = random_rows(features, rng)
        root = Path(view.batch_source.path).parent.parent
        half = len(rows) // 2
        write(root / "A" / "first.parquet", rows.iloc[:half])
        write(root / "B" / "second.parquet", rows.iloc[half:])
        data[view.name] = rows
    feast, asof = stores(repo, [defs.pair, defs.ohlcv_1m, defs.indicators_1m, defs.price_regression_1m])
    service = asof.get_feature_service(regression_service("1m"))
    ents = random_entities(data["ohlcv_1m"], 2000, rng)

    job = asof.get_historical_features(ents, features=service)
    assert isinstance(job, AsofRetrievalJob)
    frame = both(feast, asof, ents, service)
    assert list(frame.columns) == list(ents.columns) + list(OHLCV_FEATURES) + list(INDICATOR_FEATURES)
    assert frame["row"].tolist() == ents["row"].tolist()
    # The sample exercises every branch: joined rows, rows past the TTL or unknown, and repeated rows.
    assert 0.5 * len(frame) < frame["close"].notna().sum() < len(frame)
    assert frame.drop(columns="row").duplicated().sum() >= 2000 // 20
    both(feast, asof, ents, service, full_feature_names=True)


def test_the_repository_config_selects_the_asof_store(tmp_path):
    settings = Settings(_env_file=None, feast_registry_path=tmp_path / "registry.db")
    assert isinstance(coinflow_repo_config(settings).offline_store, AsofDuckDBOfflineStoreConfig)
