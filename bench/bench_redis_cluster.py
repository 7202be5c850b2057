"""Benchmark of the online store on one Redis against a three-node Redis Cluster, in the same run.

    .venv/bin/python -m bench.bench_redis_cluster [--pairs 20] [--candles 50] [--rounds 10] [--reads 200]

Both backends get the same work through the project's own code: a temporary
copy of feature_repo/ (Feast project "bench_cluster") configured by Settings,
one with ``REDIS_URL=redis://127.0.0.1:<port>/0``, the other with
``COINFLOW_REDIS_TYPE=redis_cluster`` and the three nodes' URL.

- write: the feature pipeline's sink (`CandleFeastSink.write_rows`, no window
  rows) of --pairs x --candles real one-minute candles with their indicators,
  --rounds times, each round ten minutes later than the last (so no row is an
  older one the store skips); and the online part alone
  (`write_to_online_store` of the newest row per pair, both views).
- read: `get_online_features` of the price_regression_1m service for 10 pairs,
  and the prediction API's read of the same (`OnlineFeatures.read`, Feast's
  async provider read), --reads times each after one warm-up call.

The single Redis is started with the project's `ensure_redis` and the cluster
as the cluster tests start it (tests/support/redis_cluster.py): redis-servers in
cluster mode, ``redis-cli --cluster create``, no replicas; all on free local
ports, stopped at the end. Nothing outside a temporary directory is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.bench_feature_pipeline import machine_info
from coinflow import services
from coinflow.exchange_files import iter_ohlcvt_csv
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from feature_pipeline.candles.sink import CandleFeastSink
from feature_pipeline.sinks.feast_sink import feature_frame, latest_per_entity
from feature_pipeline.transforms.indicators import new_indicator_state, update_indicators
from feature_repo.names import ENTITY, indicators_view, ohlcv_view, regression_service
from inference_pipeline.features import OnlineFeatures, serving_store
from tests.support.paths import KRAKEN_CANDLES_CSV, copy_feature_repo
from tests.support.ports import free_port
from tests.support.redis_cluster import local_cluster

console = Console()
MINUTE_MS = 60_000
READ_PAIRS = 10


def candle_rows(count: int) -> list[dict]:
    """The first `count` real one-minute candles of the bundled file with their indicators."""
    rows, state = [], new_indicator_state()
    for candle in iter_ohlcvt_csv(KRAKEN_CANDLES_CSV, "BTC/USD", "1m", 60, Rejects("bench")):
        rows.append({**candle, **update_indicators(state, candle)})
        if len(rows) == count:
            break
    return rows


def round_rows(base: list[dict], pairs: list[str], shift_ms: int) -> list[dict]:
    """The candles of `base` for every pair, moved `shift_ms` later."""
    return [
        {
            **row,
            ENTITY: pair,
            "window_start_ms": row["window_start_ms"] + shift_ms,
            "window_end_ms": row["window_end_ms"] + shift_ms,
        }
        for pair in pairs
        for row in base
    ]


def timed(call: Callable[[], object], times: int) -> list[float]:
    """Milliseconds of each of `times` calls."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        seconds.append((time.perf_counter() - started) * 1000)
    return seconds


def summary(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {"p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def measure(settings: Settings, args: argparse.Namespace, base: list[dict]) -> dict:
    """Write and read latencies on the Redis of `settings`."""
    apply_feature_repo(settings)
    pairs = [f"B{i:03d}/USD" for i in range(args.pairs)]
    span_ms = (args.candles + 10) * MINUTE_MS
    sink = CandleFeastSink(lambda: feature_store(settings))
    sink.setup()
    rounds = iter(range(1, 10_000))
    sink.write_rows(round_rows(base, pairs, 0))  # warm-up: registry, clients, Parquet files
    writes = timed(lambda: sink.write_rows(round_rows(base, pairs, next(rounds) * span_ms)), args.rounds)

    store = feature_store(settings)

    def online_write() -> None:
        frame = feature_frame(round_rows(base, pairs, next(rounds) * span_ms))
        latest = latest_per_entity(frame, ENTITY)
        for view in (ohlcv_view("1m"), indicators_view("1m")):
            store.write_to_online_store(view, latest)

    online_write()
    online_writes = timed(online_write, args.rounds)

    service = store.get_feature_service(regression_service("1m"))
    entity_rows = [{ENTITY: p} for p in pairs[:READ_PAIRS]]

    def read() -> None:
        got = store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
        assert all(v is not None for v in got["close"]), "a pair without features"

    read()
    reads = timed(read, args.reads)

    reader = OnlineFeatures(serving_store(settings))
    loop = asyncio.new_event_loop()
    try:

        def api_read() -> None:
            rows = loop.run_until_complete(reader.read(regression_service("1m"), pairs[:READ_PAIRS]))
            assert all(not r.missing for r in rows), "a pair without features"

        api_read()
        api_reads = timed(api_read, args.reads)
    finally:
        loop.close()
    return {
        "sink_write": summary(writes),
        "online_write": summary(online_writes),
        "read": summary(reads),
        "api_read": summary(api_reads),
    }


def bench_settings(root: Path, redis_url: str, redis_type: str) -> Settings:
    root.mkdir(parents=True)
    return Settings(
        _env_file=None,
        run_dir=root / "run",
        redis_url=redis_url,
        redis_type=redis_type,
        feature_repo_path=copy_feature_repo(root),
        feast_project="bench_cluster",
        metrics_port=0,
    )


def report(results: dict, args: argparse.Namespace) -> Table:
    m = results["machine"]
    table = Table(
        title="coinflow online store benchmark: one Redis vs a 3-node Redis Cluster",
        caption=f"sink write_rows: {args.pairs} pairs x {args.candles} candles (online + Parquet); online write: "
        "write_to_online_store of the newest rows; reads: the price_regression_1m service, get_online_features "
        "and the API's OnlineFeatures.read; latencies in ms",
    )
    table.add_column("measure")
    table.add_column("one Redis", justify="right")
    table.add_column("cluster (3 masters)", justify="right")
    table.add_column("cluster / one", justify="right")
    table.add_row("machine", f"{m['cores']} cores ({m['cores_usable']} usable), {m['ram_gib']} GiB RAM")
    table.add_row("CPU", m["cpu_model"])
    table.add_row("load average (1 min) at start / end", f"{m['load_start']:.2f} / {results['load_end']:.2f}")
    table.add_row("software", f"Python {m['python']}, feast {m['feast']}, redis-py {results['redis_py']}")
    table.add_row("redis-server", results["redis_server"])
    table.add_section()
    n = args.pairs * args.candles
    labels = {
        "sink_write": f"sink write_rows, {n:,} rows",
        "online_write": f"online write, {args.pairs} pairs x 2 views",
        "read": f"get_online_features, {READ_PAIRS} pairs",
        "api_read": f"API read, {READ_PAIRS} pairs",
    }
    single, cluster = results["redis"], results["redis_cluster"]
    for key, label in labels.items():
        runs = args.rounds if "write" in key else args.reads
        for stat in ("p50", "p99"):
            a, b = single[key][stat], cluster[key][stat]
            table.add_row(f"{label}, {stat} of {runs}", f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}x")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=20, help="pairs per write (at least 10)")
    parser.add_argument("--candles", type=int, default=50, help="candles per pair and write")
    parser.add_argument("--rounds", type=int, default=10, help="timed writes per backend")
    parser.add_argument("--reads", type=int, default=200, help="timed reads per backend and reader")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    args = parser.parse_args(argv)
    if args.pairs < READ_PAIRS:
        parser.error(f"--pairs must be at least {READ_PAIRS}")
    from importlib.metadata import version

    results: dict = {"machine": machine_info(), "redis_py": version("redis")}
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    results["redis_server"] = server.split(" sha=")[0].strip()
    base = candle_rows(args.candles + 40)[-args.candles :]  # indicators warmed up
    tmp = Path(tempfile.mkdtemp(prefix="coinflow-bench-cluster-"))
    single = bench_settings(tmp / "redis", f"redis://127.0.0.1:{free_port()}/0", "redis")
    try:
        with local_cluster(tmp / "cluster") as cluster:
            services.ensure_redis(single)
            console.print(f"One Redis ({single.services.redis_url}) ...")
            results["redis"] = measure(single, args, base)
            clustered = bench_settings(tmp / "redis_cluster", cluster.url, "redis_cluster")
            console.print(f"Redis Cluster ({cluster.url}) ...")
            results["redis_cluster"] = measure(clustered, args, base)
            results["keys_per_node"] = cluster.keys_per_node()
    finally:
        services.stop_services(single, ("redis",))
        if args.keep:
            console.print(f"Kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["load_end"] = os.getloadavg()[0]
    console.print(report(results, args))
    console.print(f"keys per cluster node: {results['keys_per_node']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
