"""Benchmark of point-in-time retrieval on Feast's Spark offline store (local mode) against coinflow's ASOF store.

    .venv/bin/python -m bench.bench_spark_offline [--entities N] [--minutes M]   (needs the spark extra)

Both run ``FeatureStore.get_historical_features(entity_df, features=<FeatureService
price_regression_1m>).to_df()`` in this one process, on the same registry and
Parquet files, written as bench/bench_pit_retrieval.py writes them (4 pairs,
one file per pair and day, 1 % late corrections that ``created`` must break,
entity rows at random microsecond times around the data, 1 % of a pair without
data); only the offline store differs: ``coinflow.asof_offline_store.AsofDuckDBOfflineStore``
and ``coinflow.spark_offline_store.ParquetSparkOfflineStore`` with the project's
local Spark session (coinflow.feature_store.spark_conf). Spark's first call
starts the JVM and compiles its code, so it is timed apart from the next one.
Feast's Spark join keeps every feature row inside the 6-hour TTL of every
entity row (about 360 per row and view) before it ranks them, so its work
grows with the entity rows: the defaults (10,000 entity rows, one day of
minutes) take some 3 minutes here; 100,000 entity rows took 15 minutes for the
first call on 2 busy cores. The bench checks that both results are equal
(rows matched by id).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
from rich.console import Console

from bench.bench_feature_pipeline import machine_info, results_table
from bench.bench_pit_retrieval import PAIRS, copy_feature_repo, prepare
from coinflow.feature_store import SPARK_OFFLINE_STORE, spark_conf
from feature_repo.names import regression_service

ASOF_STORE = "coinflow.asof_offline_store.AsofDuckDBOfflineStore"

console = Console()
if not console.is_terminal:
    console = Console(width=150)


def store_for(repo: Path, offline_store: dict):
    from feast import FeatureStore, RepoConfig

    config = RepoConfig(
        project="bench_pit",
        registry=str(repo / "data" / "registry.db"),
        provider="local",
        online_store={"type": "sqlite", "path": str(repo / "data" / "online.db")},
        offline_store=offline_store,
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    return FeatureStore(repo_path=str(repo), config=config)


def timed_retrieval(store, entities: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    service = store.get_feature_service(regression_service("1m"))
    started = time.perf_counter()
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        frame = store.get_historical_features(entities.copy(), features=service).to_df()
    return time.perf_counter() - started, frame.sort_values("row", kind="stable").reset_index(drop=True)


def equal(asof: pd.DataFrame, spark: pd.DataFrame) -> tuple[bool, str]:
    try:
        pd.testing.assert_frame_equal(spark[asof.columns], asof, check_dtype=False, rtol=1e-12)
    except (AssertionError, KeyError) as error:
        return False, str(error)[:500]
    return True, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=10_000, help="entity rows")
    parser.add_argument("--minutes", type=int, default=24 * 60, help="one-minute feature rows per pair and view")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="coinflow-bench-spark-"))
    try:
        repo = copy_feature_repo(tmp / "feature_repo")
        console.print(f"Writing {len(PAIRS)} pairs x {args.minutes:,} minutes x 2 views, {args.entities:,} entities")
        views = prepare(repo, args.minutes, args.entities, args.seed)
        entities = pd.read_parquet(repo / "entities.parquet")
        asof_s, asof = timed_retrieval(store_for(repo, {"type": ASOF_STORE}), entities)
        console.print(f"ASOF store: {asof_s:.2f} s")
        spark_store = store_for(repo, {"type": SPARK_OFFLINE_STORE, "spark_conf": spark_conf(args.spark_master)})
        cold_s, _ = timed_retrieval(spark_store, entities)
        console.print(f"Spark, first call: {cold_s:.2f} s")
        warm_s, spark = timed_retrieval(spark_store, entities)
        console.print(f"Spark, second call: {warm_s:.2f} s")
        identical, detail = equal(asof, spark)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from importlib.metadata import version

    table = results_table(
        "coinflow point-in-time retrieval: Feast's Spark offline store vs the ASOF store",
        machine,
        os.getloadavg()[0],
        f"Python {machine['python']}, feast {machine['feast']}, pyspark {version('pyspark')}, Spark {args.spark_master}",
    )
    table.add_row(
        "feature rows",
        ", ".join(f"{v}: {c['rows']:,} + {c['corrections']:,} late corrections" for v, c in views.items()),
    )
    table.add_row("entity rows", f"{args.entities:,} ({len(PAIRS)} pairs + 1 without data)")
    table.add_section()
    table.add_row("coinflow ASOF offline store", f"{asof_s:.2f} s ({args.entities / asof_s:,.0f} rows/s)")
    table.add_row("Feast Spark offline store, first call (JVM start)", f"{cold_s:.2f} s")
    table.add_row("Feast Spark offline store, second call", f"{warm_s:.2f} s ({args.entities / warm_s:,.0f} rows/s)")
    table.add_row("Spark / ASOF (second call)", f"{warm_s / asof_s:.1f}x")
    table.add_row("outputs equal (rows matched by id)", "yes" if identical else f"NO: {detail}")
    console.print(table)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
