"""Benchmark of the prediction API: POST /predict at 500 and 1,000 requests/s, one and two workers, beside Feast's
own feature server.

    .venv/bin/python -m bench.bench_inference [--quick] [--rates 500,1000] [--workers 1,2]

Everything runs isolated from a user's data: a temporary run directory and
copy of the feature repository, Feast project "bench_inference", Redis db 5,
the bench's own MLflow server (port 15224, temporary database), and both HTTP
servers on free ports; all stopped and removed at the end.

Set-up (the project's own code throughout):
  - real one-minute candles (data/kraken/ohlcvt_XBTUSDC_1m_2023Q1.csv) with
    their indicators computed by the feature pipeline's streaming step;
  - an XGBoost model (the training pipeline's `XGBoostModel`, default
    hyper-parameters, 300 trees) fitted on 20,000 of them, logged through the
    training pipeline's pyfunc and registered as champion of BTC/USDC;
  - the following candles written to Redis by the feature pipeline's sink,
    one per minute while the bench runs, stamped at the current minute, as a
    live pipeline would (the API refuses features older than 180 s).

Phases:
  1. In-process cost per call (CPU): Feast's async online read of the
     FeatureService for one pair; the API's read (one HMGET); the model on a
     one-row frame through the pyfunc (with MLflow's schema enforcement) and
     unwrapped; the API's one-row path (`ServedModel.predict_row`, on an
     array) with the memo off; a memo hit.
  2. Load from a second process (locust, 100 users, Poisson arrivals) at each
     of --rates requests/s for --seconds after a warm-up, against:
       - `feast serve` (defaults, access log off) answering
         POST /get-online-features for the same FeatureService and pair;
       - `feast serve --max-requests 0` (no periodic worker restarts);
       - `python -m inference_pipeline serve --workers N` for each N of
         --workers (features + model; the model's output is reused while the
         pair's row is unchanged, the default);
       - the same with COINFLOW_MEMOIZE_PREDICTIONS=false (the model runs on
         every request).
     Latencies are the client's (locust, exact, not rounded); CPU is that of
     the server process tree, the load generator and everything else.
  3. Saturation: 16 users without pauses for --saturation-seconds, per server.

Run only our API with the model on every request: --phases api-nomemo.

Targets on a 2-core machine, model on every request: p99 <= 10 ms at 500 and at
1,000 requests/s with two workers; server CPU per request at most 0.2 ms above
the in-process online read plus model; with the output reused, saturation >=
2,000 requests/s with two workers and our API no slower than Feast's server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
from rich.console import Console
from rich.table import Table

from bench.bench_feature_pipeline import machine_info, results_table
from coinflow import services
from coinflow.contracts import CHAMPION, registered_model_name
from coinflow.exchange_files import iter_ohlcvt_csv
from coinflow.feature_store import apply_feature_repo, feature_store, feature_store_yaml
from coinflow.quality import Rejects
from coinflow.settings import Settings
from feature_pipeline.candles.sink import CandleFeastSink
from feature_pipeline.transforms.indicators import new_indicator_state, update_indicators
from feature_repo.names import ENTITY, INDICATOR_FEATURES, OHLCV_FEATURES, regression_service
from inference_pipeline.features import OnlineFeatures, serving_store
from inference_pipeline.model_store import ModelStore
from training_pipeline.labels import TARGET_LOG_RETURN
from training_pipeline.price.models import XGBoostModel
from training_pipeline.price.serving import log_pyfunc
from training_pipeline.tracking import register_challenger

ROOT = Path(__file__).resolve().parent.parent
CANDLES = ROOT / "data" / "kraken" / "ohlcvt_XBTUSDC_1m_2023Q1.csv"
LOCUSTFILE = Path(__file__).with_name("locust_inference.py")
FEAST = str(Path(sys.executable).with_name("feast"))
PAIR = "BTC/USDC"
FEATURES = (*OHLCV_FEATURES, *INDICATOR_FEATURES)
TRAINING_ROWS = 20_000
MINUTE_MS = 60_000
TARGET_P99_MS = 10.0
TARGET_OVERHEAD_MS = 0.2
TARGET_SATURATION_RPS = 2_000.0
USERS = 100
SATURATION_USERS = 16
console = Console(width=160)


# --------------------------------------------------------------------------- set-up


def copy_feature_repo(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for item in (ROOT / "feature_repo").iterdir():
        if item.suffix == ".py" or item.name in ("feature_store.yaml", ".feastignore"):
            shutil.copy2(item, dst / item.name)
    return dst


def bench_settings(tmp: Path, mlflow_port: int, redis_db: int) -> Settings:
    return Settings(
        _env_file=None,
        run_dir=tmp / "run",
        redis_url=f"redis://127.0.0.1:6379/{redis_db}",
        feature_repo_path=copy_feature_repo(tmp / "feature_repo"),
        feast_project="bench_inference",
        mlflow_tracking_uri=None,
        mlflow_port=mlflow_port,
        serve_pairs=[PAIR],
        serve_horizons=[1],
        metrics_port=0,
        log_level="WARNING",
    )


def feature_rows() -> list[dict]:
    """Every real candle with its indicators, in time order (the feature pipeline's streaming step)."""
    state, rows = new_indicator_state(), []
    for candle in iter_ohlcvt_csv(CANDLES, PAIR, "1m", 60, Rejects("bench")):
        rows.append({**candle, **update_indicators(state, candle)})
    return rows


def register_champion(tracking_uri: str, rows: list[dict]) -> tuple[str, XGBoostModel]:
    """Fit XGBoost (default hyper-parameters) on labelled rows, log it as `train` does and make it champion."""
    import mlflow
    from mlflow import MlflowClient

    frame = pd.DataFrame(rows)
    frame[TARGET_LOG_RETURN] = np.log(frame["close"].shift(-1) / frame["close"])
    frame = frame.dropna(subset=[*FEATURES, TARGET_LOG_RETURN]).reset_index(drop=True)
    model = XGBoostModel(FEATURES, device="cpu").fit(frame)
    name = registered_model_name(PAIR, 1)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name="xgboost") as run:
        mlflow.set_tags(
            {
                "pair": PAIR,
                "horizon_minutes": "1",
                "model_type": model.model_type,
                "feature_service": regression_service("1m"),
            }
        )
        info = log_pyfunc(model, frame[list(FEATURES)].head(5), name)
    client = MlflowClient(tracking_uri)
    version = register_challenger(client, name, info, run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION, version)
    return version, model


class LiveCandles:
    """Writes the next real candle each minute, stamped at that minute, as the live feature pipeline would."""

    def __init__(self, settings: Settings, rows: list[dict]) -> None:
        self.rows = rows
        self.sink = CandleFeastSink(lambda: feature_store(settings))
        self.sink.setup()
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def write_next(self) -> None:
        row = self.rows[self.written % len(self.rows)]
        end_ms = int(time.time()) // 60 * MINUTE_MS
        self.sink.write_rows([{**row, "window_start_ms": end_ms - MINUTE_MS, "window_end_ms": end_ms}])
        self.written += 1

    def _run(self) -> None:
        while not self._stop.wait(60.5 - time.time() % 60):
            self.write_next()

    def start(self) -> None:
        self.write_next()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- in-process costs


def cpu_per_call(fn, n: int) -> float:
    for _ in range(min(100, n)):
        fn()
    started = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - started) / n * 1000


def in_process_costs(settings: Settings, tracking_uri: str, row: dict, n: int) -> dict:
    """CPU ms per call of the parts of a prediction, measured in this process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    features = OnlineFeatures(serving_store(settings))
    store = ModelStore.from_settings(settings, tracking_uri, features.store.get_feature_service)
    store.refresh()
    (model,) = store.models()
    frame = pd.DataFrame([{name: row[name] for name in model.features}])
    unwrapped = model.pyfunc.unwrap_python_model()
    values = tuple(row[name] for name in model.features)
    every_request = dataclasses.replace(model, memoize=False)

    service = features.store.get_feature_service(model.feature_service)

    async def per_call(read) -> float:
        for _ in range(100):
            await read()
        started = time.thread_time()
        for _ in range(n):
            await read()
        return (time.thread_time() - started) / n * 1000

    async def both_reads() -> tuple[float, float]:
        # One event loop: the online store's async client belongs to the loop that opened it.
        feast = await per_call(
            lambda: features.store.get_online_features_async(features=service, entity_rows=[{ENTITY: PAIR}])
        )
        return feast, await per_call(lambda: features.read(model.feature_service, [PAIR]))

    feast_read_ms, online_read_ms = asyncio.run(both_reads())
    return {
        "feast_read_ms": feast_read_ms,
        "online_read_ms": online_read_ms,
        "pyfunc_ms": cpu_per_call(lambda: model.pyfunc.predict(frame), max(n // 5, 50)),
        "unwrapped_ms": cpu_per_call(lambda: unwrapped.predict(None, frame), max(n // 5, 50)),
        "row_ms": cpu_per_call(lambda: every_request.predict_row(values), n),
        "memo_hit_ms": cpu_per_call(lambda: model.predict_row(values), n),
    }


# --------------------------------------------------------------------------- servers and load


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_env(settings: Settings, tracking_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINFLOW_")}
    env.update(
        {
            "COINFLOW_RUN_DIR": str(settings.services.run_dir),
            "COINFLOW_REDIS_URL": settings.services.redis_url,
            "COINFLOW_FEATURE_REPO_PATH": str(settings.feast.repo_path),
            "COINFLOW_FEAST_PROJECT": settings.feast.project,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "COINFLOW_SERVE_PAIRS": PAIR,
            "COINFLOW_SERVE_HORIZONS": "1",
            "COINFLOW_METRICS_PORT": "0",
            "COINFLOW_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], ready, log: Path, timeout_s: float = 120.0):
    """A server process (its own session) until the block ends; `ready()` says when it answers."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd[:4])} did not start; see {log}")
            time.sleep(0.2)
        yield proc
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.terminate()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def answers(url: str, body: dict | None = None) -> bool:
    try:
        if body is None:
            return httpx.get(url, timeout=2).status_code == 200
        return httpx.post(url, json=body, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree, including children that already exited (gunicorn restarts its workers)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def load(
    url: str,
    path: str,
    body: dict,
    users: int,
    user_rps: float,
    warmup_s: float,
    seconds: float,
    server_pid: int,
    out: Path,
) -> dict:
    """Run locust in its own process against `url` and summarise what it recorded after the warm-up."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{int(warmup_s + seconds)}s",
        "--host",
        url,
        "--bench-path",
        path,
        "--bench-body",
        json.dumps(body),
        "--bench-user-rps",
        str(user_rps),
        "--bench-warmup",
        str(warmup_s),
        "--bench-out",
        str(out),
        "--only-summary",
        "--loglevel",
        "ERROR",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(warmup_s)
    s0, l0, m0, t0 = tree_cpu(server_pid), tree_cpu(proc.pid), machine_busy(), time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < seconds - 1:
        time.sleep(0.5)
    s1, l1, m1, t1 = tree_cpu(server_pid), tree_cpu(proc.pid), machine_busy(), time.monotonic()
    proc.wait(timeout=120)
    recorded = json.loads(out.read_text())
    times = np.array(recorded["times_ms"])
    span = (recorded["last"] - recorded["first"]) if recorded["first"] else 0.0
    elapsed = t1 - t0
    server_cores, locust_cores = (s1 - s0) / elapsed, (l1 - l0) / elapsed
    return {
        "n": len(times),
        "failures": recorded["failures"],
        "statuses": recorded["statuses"],
        "rps": len(times) / span if span else 0.0,
        "p50": float(np.percentile(times, 50)) if len(times) else float("nan"),
        "p90": float(np.percentile(times, 90)) if len(times) else float("nan"),
        "p99": float(np.percentile(times, 99)) if len(times) else float("nan"),
        "max": float(times.max()) if len(times) else float("nan"),
        "server_cores": server_cores,
        "locust_cores": locust_cores,
        "other_cores": max((m1 - m0) / elapsed - server_cores - locust_cores, 0.0),
        "server_cpu_ms_per_request": server_cores / (len(times) / span) * 1000 if span and len(times) else 0.0,
    }


# --------------------------------------------------------------------------- report


def _ok(passed: bool) -> str:
    return "[green]PASS[/green]" if passed else "[red]FAIL[/red]"


def _latency(r: dict) -> str:
    return f"{r['p50']:.2f} / {r['p90']:.2f} / {r['p99']:.2f} / {r['max']:.1f} ms"


def _cpu(r: dict) -> str:
    return (
        f"server {r['server_cores']:.2f}, load generator {r['locust_cores']:.2f}, others {r['other_cores']:.2f} "
        f"cores; server {r['server_cpu_ms_per_request']:.2f} ms CPU/request"
    )


SERVER_LABELS = {
    "feast": "feast serve (defaults): POST /get-online-features",
    "feast-tuned": "feast serve --max-requests 0: POST /get-online-features",
    "api": "our API: POST /predict (features + model, memo on)",
    "api-nomemo": "our API, model on every request (memo off)",
}


def server_label(server: str, short: bool = False) -> str:
    """'api-nomemo-w2' -> the phase's label with its workers (short: without what it answers)."""
    phase, _, workers = server.rpartition("-w") if server.startswith("api") else (server, "", "")
    label = SERVER_LABELS[phase].split(":")[0] if short else SERVER_LABELS[phase]
    return f"{label}, {workers} worker{'s' if workers != '1' else ''}" if workers else label


def in_process_path_ms(costs: dict) -> float:
    """The in-process CPU of a prediction's parts: the API's online read plus its one-row model path."""
    return costs["online_read_ms"] + costs["row_ms"]


def report(results: dict) -> Table:
    table = results_table(
        f"coinflow prediction API benchmark ({'quick' if results['quick'] else 'full'})",
        results["machine"],
        results["load_end"],
        results["software"],
    )
    table.add_row("model", results["model"])
    c = results.get("costs")
    if c:
        table.add_section()
        table.add_row(
            "in process, CPU per call: Feast get_online_features_async (1 pair, FeatureService)",
            f"{c['feast_read_ms']:.3f} ms",
        )
        table.add_row(
            "  the API's online read (the same fields in one HMGET, Feast's Redis encoding)",
            f"{c['online_read_ms']:.3f} ms",
        )
        table.add_row(
            "  model on a 1-row frame: pyfunc (schema enforced) / unwrapped",
            f"{c['pyfunc_ms']:.3f} / {c['unwrapped_ms']:.3f} ms",
        )
        table.add_row("  the API's one-row path, memo off (model on an array)", f"{c['row_ms']:.3f} ms")
        table.add_row("  model output reused for an unchanged row (memo hit)", f"{c['memo_hit_ms'] * 1000:.1f} µs")
        table.add_row("  online read + one-row path", f"{in_process_path_ms(c):.3f} ms")
    for key, r in results["load"].items():
        server, _, rate_text = key.rpartition("@")
        rate = float(rate_text)
        table.add_section()
        table.add_row(
            f"{server_label(server)} at {rate:g} req/s",
            f"{r['rps']:,.0f} req/s achieved, {r['n']:,} requests, {r['failures']} failed",
        )
        if not server.startswith("api"):
            table.add_row("  p50 / p90 / p99 / max", _latency(r))
            table.add_row("  CPU", _cpu(r))
            continue
        kept_up = r["rps"] >= 0.95 * rate and not r["failures"]
        table.add_row(
            "  p50 / p90 / p99 / max",
            _latency(r),
            f"p99 <= {TARGET_P99_MS:g} ms",
            _ok(r["p99"] <= TARGET_P99_MS and kept_up),
        )
        reference = results["load"].get(f"feast-tuned@{rate:g}") or results["load"].get(f"feast@{rate:g}")
        if reference:
            table.add_row(
                "  p99 / Feast server's p99",
                f"{r['p99'] / reference['p99']:.3f}",
                "<= 1",
                _ok(r["p99"] <= reference["p99"]),
            )
        table.add_row("  CPU", _cpu(r))
        if c and server.startswith("api-nomemo"):
            over = r["server_cpu_ms_per_request"] - in_process_path_ms(c)
            table.add_row(
                "  server CPU per request above the in-process read + model",
                f"{over:.3f} ms",
                f"<= {TARGET_OVERHEAD_MS:g} ms",
                _ok(over <= TARGET_OVERHEAD_MS),
            )
    sat = results.get("saturation", {})
    if sat:
        table.add_section()
        for server, r in sat.items():
            target, passed = "", ""
            if server.startswith("api-w") and server != "api-w1":
                target, passed = f">= {TARGET_SATURATION_RPS:,.0f} req/s", _ok(r["rps"] >= TARGET_SATURATION_RPS)
            table.add_row(
                f"saturation, {SATURATION_USERS} users without pause: {server_label(server, short=True)}",
                f"{r['rps']:,.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, {r['failures']} failed",
                target,
                passed,
            )
        feast = sat.get("feast-tuned") or sat.get("feast")
        best = max((r["rps"] for k, r in sat.items() if k.startswith("api-w")), default=None)
        if feast and best is not None:
            table.add_row(
                "  throughput ratio our API (best) / Feast server",
                f"{best / feast['rps']:.2f}",
                ">= 1",
                _ok(best >= feast["rps"]),
            )
    return table


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter phases: 20 s each after a 5 s warm-up")
    parser.add_argument(
        "--rates", default="500,1000", help="comma-separated requests per second of the fixed-rate phases"
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts of our API's phases")
    parser.add_argument("--seconds", type=float, help="measured seconds per fixed-rate phase (default 60; quick 20)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default 10; quick 5)")
    parser.add_argument(
        "--saturation-seconds", type=float, help="seconds per saturation phase (default 20; quick 10; 0: skip)"
    )
    parser.add_argument(
        "--phases",
        default="feast,feast-tuned,api,api-nomemo",
        help="comma-separated subset of feast,feast-tuned,api,api-nomemo",
    )
    parser.add_argument("--mlflow-port", type=int, default=15224)
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(SERVER_LABELS)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
        worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError as exc:
        parser.error(f"--rates and --workers take comma-separated numbers: {exc}")
    if not rates or min(rates) <= 0 or not worker_counts or min(worker_counts) < 1:
        parser.error("--rates must be positive and --workers at least 1")
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 10.0)
    saturation_s = args.saturation_seconds if args.saturation_seconds is not None else (10.0 if args.quick else 20.0)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from importlib.metadata import version

    results: dict = {"quick": args.quick, "machine": machine_info(), "rates": rates, "load": {}, "saturation": {}}
    results["software"] = ", ".join(
        f"{p} {version(p)}" for p in ("fastapi", "uvicorn", "feast", "mlflow", "xgboost", "redis", "locust")
    )
    tmp = Path(tempfile.mkdtemp(prefix="coinflow-bench-inference-"))
    settings = bench_settings(tmp, args.mlflow_port, args.redis_db)
    live: LiveCandles | None = None
    try:
        console.print(f"Set-up in {tmp}: MLflow on port {args.mlflow_port}, Redis db {args.redis_db} ...")
        services.ensure_redis(settings)
        apply_feature_repo(settings)
        tracking_uri = services.ensure_mlflow(settings)
        rows = feature_rows()
        complete = [r for r in rows if all(r[name] is not None for name in FEATURES)]
        version_, _ = register_champion(tracking_uri, complete[-TRAINING_ROWS - 2000 : -2000])
        results["model"] = (
            f"{registered_model_name(PAIR, 1)} v{version_}: XGBoost, 300 trees of depth 4, fitted on "
            f"{TRAINING_ROWS:,} real 1-minute candles, {len(FEATURES)} FeatureService columns"
        )
        live = LiveCandles(settings, complete[-2000:])
        live.start()
        console.print("Measuring in-process costs ...")
        results["costs"] = in_process_costs(settings, tracking_uri, complete[-2000], 300 if args.quick else 2000)

        log = tmp / "servers.log"
        (settings.feast.repo_path / "feature_store.yaml").write_text(feature_store_yaml(settings))
        feast_env = dict(os.environ)
        feast_body = {"feature_service": regression_service("1m"), "entities": {ENTITY: [PAIR]}}
        predict_body = {"pair": PAIR}
        feast_repo = str(settings.feast.repo_path)
        servers: dict[str, tuple[list[str], dict[str, str], str, dict]] = {
            "feast": (
                [FEAST, "-c", feast_repo, "serve", "-p", "{port}", "--no-access-log"],
                feast_env,
                "/get-online-features",
                feast_body,
            ),
            "feast-tuned": (
                [FEAST, "-c", feast_repo, "serve", "-p", "{port}", "--no-access-log", "--max-requests", "0"],
                feast_env,
                "/get-online-features",
                feast_body,
            ),
        }
        for workers in worker_counts:
            serve = [sys.executable, "-m", "inference_pipeline", "serve", "--port", "{port}", "--workers", str(workers)]
            servers[f"api-w{workers}"] = (serve, settings_env(settings, tracking_uri), "/predict", predict_body)
            servers[f"api-nomemo-w{workers}"] = (
                serve,
                settings_env(settings, tracking_uri, COINFLOW_MEMOIZE_PREDICTIONS="false"),
                "/predict",
                predict_body,
            )
        chosen = [name for name in servers if (name.rpartition("-w")[0] if name.startswith("api") else name) in phases]
        for name in chosen:
            cmd, env, path, body = servers[name]
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cmd = [part.replace("{port}", str(port)) for part in cmd]
            ready = (
                (lambda u=url: answers(f"{u}/ready"))
                if name.startswith("api")
                else (lambda u=url, p=path, b=body: answers(f"{u}{p}", b))
            )
            with server(cmd, env, ready, log) as proc:
                answers(f"{url}{path}", body)
                for rate in rates:
                    console.print(f"Load on {name} ({rate:g} req/s for {seconds:g} s) ...")
                    results["load"][f"{name}@{rate:g}"] = load(
                        url, path, body, USERS, rate / USERS, warmup, seconds, proc.pid, tmp / f"{name}-{rate:g}.json"
                    )
                if saturation_s > 0:
                    console.print(f"Saturation of {name} ({saturation_s:g} s) ...")
                    results["saturation"][name] = load(
                        url,
                        path,
                        body,
                        SATURATION_USERS,
                        0.0,
                        min(warmup, 3.0),
                        saturation_s,
                        proc.pid,
                        tmp / f"{name}-sat.json",
                    )
        results["load_end"] = os.getloadavg()[0]
    finally:
        if live is not None:
            live.stop()
        services.stop_services(settings)
        with contextlib.suppress(Exception):
            store = feature_store(settings)
            store._get_provider().teardown_infra(
                settings.feast.project, store.list_feature_views(), store.list_entities()
            )
        if args.keep:
            console.print(f"Kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    console.print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
