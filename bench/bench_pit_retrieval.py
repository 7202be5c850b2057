"""Benchmark of point-in-time retrieval: Feast's DuckDB offline store against coinflow's ASOF store.

    .venv/bin/python -m bench.bench_pit_retrieval [--quick]

Both run the same call, ``FeatureStore.get_historical_features(entity_df,
features=<FeatureService price_regression_1m>).to_df()``, on the same registry
and Parquet files; only the RepoConfig's offline store differs (``duckdb``,
Feast's built-in, and ``coinflow.asof_offline_store.AsofDuckDBOfflineStore``).

Data, shaped like the project's: a temporary copy of feature_repo/, and in it
the two views of price_regression_1m (ohlcv_1m, indicators_1m, the real
feature names) for 4 pairs x 50,000 one-minute rows each, written with the
project's idempotent Parquet writer (one file per pair and day), plus late
corrections of 1 % of the rows (same event timestamp, newer ``created``) in
extra files, so ties must be broken by ``created``. The entity frame holds
1,000,000 rows (--quick: 100,000): random pairs (1 % of a pair without data)
at random microsecond times from 30 minutes before the data to 8 hours after
it (past the 6-hour TTL), 5 % of them exactly on a feature row's timestamp.

Each store runs in its own fresh process (so its peak RSS is its own) and
writes its result; the bench checks that the two results are identical.
The ASOF store gets the whole entity frame in one call. Feast's store gets it
in calls of 100,000 rows (--feast-call-rows), their times summed: its join
keeps every feature row inside the TTL of every entity row (about 360 per
row and view here) until it ranks them, about 7 GiB at 100,000 rows, so one
call of 1,000,000 rows would need some 70 GiB. Slicing does not slow Feast's
store (its work grows with the rows), so the speed-up shown is a lower bound.
Nothing outside a temporary directory is touched (no Redis, no broker: the
online store is a SQLite file there).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from bench.bench_feature_pipeline import machine_info, results_table
from coinflow import parquet_writer
from coinflow.schemas import pair_slug
from feature_pipeline.sinks.feast_sink import arrow_schema
from feature_repo.names import (
    CREATED_TIMESTAMP,
    ENTITY,
    EVENT_TIMESTAMP,
    INDICATOR_FEATURES,
    OHLCV_FEATURES,
    indicators_view,
    ohlcv_view,
    regression_service,
)

ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = ROOT / "feature_repo"
PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"]
UNKNOWN_PAIR = "DOGE/USD"
START = pd.Timestamp("2024-01-01", tz="UTC")
STORES = {
    "feast": "duckdb",
    "asof": "coinflow.asof_offline_store.AsofDuckDBOfflineStore",
}
TARGET_SPEEDUP = 20.0

console = Console()
if not console.is_terminal:
    console = Console(width=150)


# --------------------------------------------------------------------------- data


def feature_rows(features: tuple[str, ...], pairs: list[str], minutes: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per pair and minute, stamped at the minute's end, known 0.2-3 s later."""
    ends = START + pd.to_timedelta(np.arange(1, minutes + 1), unit="min")
    frames = []
    for pair in pairs:
        frame = pd.DataFrame({ENTITY: pair, EVENT_TIMESTAMP: ends})
        frame[CREATED_TIMESTAMP] = ends + pd.to_timedelta(rng.integers(200_000, 3_000_000, minutes), unit="us")
        for name in features:
            if name == "trade_count":
                frame[name] = rng.integers(0, 500, minutes).astype("int64")
            else:
                frame[name] = 100 + np.cumsum(rng.normal(0, 1, minutes))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def corrections(rows: pd.DataFrame, fraction: float, rng: np.random.Generator) -> pd.DataFrame:
    """Late rewrites of some rows: same pair and event timestamp, newer created, other values."""
    picked = rows.sample(frac=fraction, random_state=int(rng.integers(1 << 31))).copy()
    picked[CREATED_TIMESTAMP] += pd.Timedelta(minutes=5)
    for name in picked.columns.difference([ENTITY, EVENT_TIMESTAMP, CREATED_TIMESTAMP]):
        picked[name] = picked[name] + 1
    return picked


def entity_rows(n: int, minutes: int, rng: np.random.Generator) -> pd.DataFrame:
    """Label times: random pairs and microsecond times around the data, some exactly on feature timestamps."""
    pairs = np.array(PAIRS + [UNKNOWN_PAIR])
    weights = np.array([0.99 / len(PAIRS)] * len(PAIRS) + [0.01])
    span_us = (minutes * 60 + 8 * 3600 + 30 * 60) * 1_000_000
    offsets = rng.integers(0, span_us, n) - 30 * 60 * 1_000_000
    exact = rng.random(n) < 0.05
    offsets[exact] = rng.integers(1, minutes + 1, exact.sum()) * 60_000_000
    return pd.DataFrame(
        {
            "row": np.arange(n, dtype="int64"),
            ENTITY: rng.choice(pairs, n, p=weights),
            EVENT_TIMESTAMP: START + pd.to_timedelta(offsets, unit="us"),
            "label": rng.normal(0, 1, n),
        }
    )


def copy_feature_repo(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("definitions.py", "names.py", "feature_store.yaml", ".feastignore"):
        shutil.copy2(FEATURE_REPO / name, dst / name)
    return dst


def load_definitions(repo: Path):
    """The repository's Feast objects, imported from the copy so that their FileSources point into it."""
    spec = importlib.util.spec_from_file_location("bench_pit_definitions", repo / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def repo_config(repo: Path, offline_type: str):
    from feast import RepoConfig

    return RepoConfig(
        project="bench_pit",
        registry=str(repo / "data" / "registry.db"),
        provider="local",
        online_store={"type": "sqlite", "path": str(repo / "data" / "online.db")},
        offline_store={"type": offline_type},
        entity_key_serialization_version=3,
        repo_path=repo,
    )


def prepare(repo: Path, minutes: int, entities: int, seed: int) -> dict:
    """Write the feature rows and the entity frame; register the definitions."""
    from feast import FeatureStore

    rng = np.random.default_rng(seed)
    definitions = load_definitions(repo)
    store = FeatureStore(repo_path=str(repo), config=repo_config(repo, STORES["feast"]))
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        store.apply(
            [definitions.pair, definitions.ohlcv_1m, definitions.indicators_1m, definitions.price_regression_1m]
        )
    counts = {}
    for name, features in ((ohlcv_view("1m"), OHLCV_FEATURES), (indicators_view("1m"), INDICATOR_FEATURES)):
        view = store.get_feature_view(name)  # as registered: its entity columns are known
        root = parquet_writer.dataset_root(view.batch_source.path)
        schema = arrow_schema(view)
        rows = feature_rows(features, PAIRS, minutes, rng)
        parquet_writer.write_rows(root, rows, schema)
        late = corrections(rows, 0.01, rng)
        for pair, group in late.groupby(ENTITY):
            pq.write_table(
                pa.Table.from_pandas(group, schema=schema, preserve_index=False),
                root / pair_slug(pair) / "corrections.parquet",
            )
        counts[name] = {"rows": len(rows), "corrections": len(late)}
    entity_rows(entities, minutes, rng).to_parquet(repo / "entities.parquet")
    return counts


# --------------------------------------------------------------------------- measurement


def retrieve(repo: str, offline_type: str, out: str, repeat: int, call_rows: int) -> dict:
    """Run in a fresh process: the retrieval `repeat` times, its result written to `out`.

    The entity frame goes to `get_historical_features` in slices of `call_rows`
    rows, one call each, their times summed.
    """
    warnings.simplefilter("ignore")
    from feast import FeatureStore

    store = FeatureStore(repo_path=repo, config=repo_config(Path(repo), offline_type))
    service = store.get_feature_service(regression_service("1m"))
    entities = pd.read_parquet(Path(repo) / "entities.parquet")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        frames = [
            store.get_historical_features(entities.iloc[i : i + call_rows], features=service).to_df()
            for i in range(0, len(entities), call_rows)
        ]
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frame = pd.concat(frames, ignore_index=True)
    frame.to_parquet(out)
    return {
        "seconds": statistics.median(seconds),
        "runs": seconds,
        "rows": len(frame),
        "calls": len(frames),
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak,
    }


def in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(retrieve, *args).result()


def compare(repo: Path, entities: int) -> dict:
    """Whether both results are the same frame (rows matched by the entity frame's row id)."""
    feast = pd.read_parquet(repo / "result_feast.parquet")
    asof = pd.read_parquet(repo / "result_asof.parquet")
    in_order = {
        name: bool((frame["row"].to_numpy() == np.arange(entities)).all())
        for name, frame in (("feast", feast), ("asof", asof))
    }
    feast = feast.sort_values("row", kind="stable").reset_index(drop=True)
    asof = asof.sort_values("row", kind="stable").reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(feast, asof, check_exact=True)
        identical, detail = True, ""
    except AssertionError as error:
        identical, detail = False, str(error)[:500]
    features = [c for c in asof.columns if c not in ("row", ENTITY, EVENT_TIMESTAMP, "label")]
    return {
        "identical": identical,
        "detail": detail,
        "in_entity_order": in_order,
        "columns": list(asof.columns),
        "feature_columns": len(features),
        "rows_with_features": int(asof[features].notna().any(axis=1).sum()),
    }


# --------------------------------------------------------------------------- report


def report(results: dict) -> Table:
    m = results["machine"]
    table = results_table(
        f"coinflow point-in-time retrieval benchmark ({'quick' if results['quick'] else 'full'})",
        m,
        results["load_end"],
        f"Python {m['python']}, feast {m['feast']}, duckdb {results['duckdb']}",
    )
    data = results["data"]
    table.add_row(
        "feature rows",
        ", ".join(f"{v}: {c['rows']:,} + {c['corrections']:,} late corrections" for v, c in data["views"].items()),
    )
    table.add_row("entity rows", f"{data['entities']:,} ({len(PAIRS)} pairs + 1 without data)")
    table.add_section()
    feast, asof = results["feast"], results["asof"]
    for label, r in (("Feast DuckDB offline store (reference)", feast), ("coinflow ASOF offline store", asof)):
        calls = f", {r['calls']} calls of {r['rows'] // r['calls']:,} rows" if r["calls"] > 1 else ", one call"
        runs = f", median of {len(r['runs'])} runs" if len(r["runs"]) > 1 else ""
        table.add_row(label, f"{r['seconds']:.2f} s{calls}{runs}")
        table.add_row(
            "  rows/s, peak RSS (before the first call)",
            f"{r['rows'] / r['seconds']:,.0f} rows/s, {r['peak_rss_mib']:,.0f} MiB ({r['rss_before_mib']:,.0f} MiB)",
        )
    speedup = feast["seconds"] / asof["seconds"]
    table.add_row("speed-up", f"{speedup:.1f}x", f">= {TARGET_SPEEDUP:g}x", _ok(speedup >= TARGET_SPEEDUP))
    c = results["comparison"]
    table.add_row(
        "outputs identical (assert_frame_equal, rows matched by id)",
        "yes" if c["identical"] else f"NO: {c['detail']}",
        "yes",
        _ok(c["identical"]),
    )
    table.add_row("  rows with features / feature columns", f"{c['rows_with_features']:,} / {c['feature_columns']}")
    table.add_row(
        "  rows in entity order", f"Feast {c['in_entity_order']['feast']}, ASOF {c['in_entity_order']['asof']}"
    )
    return table


def _ok(good: bool) -> str:
    return "[green]ok[/green]" if good else "[red]MISS[/red]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 entity rows instead of 1,000,000")
    parser.add_argument("--entities", type=int, help="entity rows (overrides --quick)")
    parser.add_argument("--minutes", type=int, default=50_000, help="one-minute feature rows per pair and view")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the ASOF store (median reported); Feast runs once"
    )
    parser.add_argument(
        "--feast-call-rows",
        type=int,
        default=100_000,
        help="entity rows per call of Feast's store (its join holds every feature row within the TTL "
        "of each entity row: about 7 GiB per 100,000 rows here)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    args = parser.parse_args(argv)
    entities = args.entities or (100_000 if args.quick else 1_000_000)

    import duckdb

    results: dict = {"quick": args.quick, "machine": machine_info(), "duckdb": duckdb.__version__}
    tmp = Path(tempfile.mkdtemp(prefix="coinflow-bench-pit-"))
    try:
        repo = copy_feature_repo(tmp / "feature_repo")
        console.print(
            f"Writing {len(PAIRS)} pairs x {args.minutes:,} minutes x 2 views and {entities:,} entity rows ..."
        )
        results["data"] = {"views": prepare(repo, args.minutes, entities, args.seed), "entities": entities}
        console.print("ASOF store ...")
        results["asof"] = in_fresh_process(
            str(repo), STORES["asof"], str(repo / "result_asof.parquet"), args.repeat, entities
        )
        console.print(f"  {results['asof']['seconds']:.2f} s")
        feast_rows = min(args.feast_call_rows, entities)
        console.print(f"Feast's DuckDB store, {-(-entities // feast_rows)} call(s) of {feast_rows:,} rows ...")
        results["feast"] = in_fresh_process(
            str(repo), STORES["feast"], str(repo / "result_feast.parquet"), 1, feast_rows
        )
        console.print(f"  {results['feast']['seconds']:.2f} s")
        results["comparison"] = compare(repo, entities)
    finally:
        if args.keep:
            console.print(f"Kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["load_end"] = os.getloadavg()[0]
    results["speedup"] = results["feast"]["seconds"] / results["asof"]["seconds"]
    console.print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if results["comparison"]["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
