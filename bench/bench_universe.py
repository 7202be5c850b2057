"""Benchmark of the universe features: candles/s with Feast writes against a bare Quix pass-through, and the CPU
share of one core that 100 tickers at 1-minute candles take.

    .venv/bin/python -m bench.bench_universe [--quick] [--tickers 100] [--candles 600] [--broker-port 19792]

Isolated from a user's data: its own embedded broker, run directory, Redis (a free port), Feast project and copy
of the feature repository, all removed at the end. Input: the 23 real Binance 1-minute files of the shared data,
tiled into `--tickers` tickers over the minutes all files share (ticker k reads file k mod 23 with its prices times 1 + k // 23 / 100, named
``<BASE><k // 23>/USDT``), `--candles` each, merged in time order and pre-loaded into the universe candles topic
with an end marker per ticker. Phases, all through the project's code (`new_application`,
`build_universe_dataflow`, `FeastSink`, `Completion`):

1. Reference: a bare Quix pass-through of the pre-loaded topic to another topic.
2. Throughput: the universe dataflow over the same topic into Feast (online and offline), first message to the
   last end marker written.
3. Live: the pipeline running while 100 tickers' candles arrive together once per `--burst-s` (a minute of a
   live universe, sped up), after 10 s without input; the process's CPU time gives the cost of one minute's
   candles and of idling, so the share of one core at real time is (cost per minute) / 60 s + the idle share.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from bench.bench_feature_pipeline import copy_feature_repo, machine_info
from coinflow import services
from coinflow.exchange_files import candle_files, iter_candle_file
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.logs import configure_logging
from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from coinflow.streaming import json_topic, new_application, run_application, topic_config
from feature_pipeline.runtime import Completion
from feature_pipeline.sinks.feast_sink import FeastSink
from feature_pipeline.sources.file_sources import universe_candle
from feature_pipeline.universe.dataflow import build_universe_dataflow, universe_routes, universe_topics

ROOT = Path(__file__).resolve().parent.parent
BINANCE_1M = ROOT.parent / "shared" / "data" / "binance" / "1m_2021-05-15_2021-06-05"
MINUTE_MS = 60_000


def tiled_candles(tickers: int, candles: int) -> list[dict]:
    """`tickers` tickers of `candles` real 1-minute candles each (see the module's docstring), in time order."""
    files = candle_files(BINANCE_1M)
    start = max(next(iter_candle_file(path, 60, Rejects("bench")))["timestamp_ms"] for path in files)
    series = []
    for k in range(tickers):
        path, copy = files[k % len(files)], k // len(files)
        scale = 1 + copy / 100
        rows: list[dict] = []
        for candle in iter_candle_file(path, 60, Rejects("bench")):
            if len(rows) == candles:
                break
            if candle["timestamp_ms"] < start:
                continue
            base, quote = candle["pair"].split("/")
            record = universe_candle(candle, "1m")
            for name in ("open", "high", "low", "close"):
                record[name] *= scale
            rows.append({**record, "pair": f"{base}{copy}/{quote}"})
        series.append(rows)
    return list(heapq.merge(*series, key=lambda r: r["window_end_ms"]))


def bench_settings(tmp: Path, port: int, redis_url: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        _env_file=None,
        kafka_broker_address=None,
        embedded_broker_port=port,
        redis_url=redis_url,
        run_dir=tmp / "run",
        feature_repo_path=copy_feature_repo(tmp / "feature_repo"),
        feast_project="bench_universe",
        universe_candles_topic=f"bench-{tag}-universe-candles",
        dead_letter_topic=f"bench-{tag}-dead-letters",
        universe_consumer_group=f"bench-{tag}-universe",
        metrics_port=0,
        log_level="WARNING",
    )


def create_topics(settings: Settings, broker: services.Broker) -> None:
    """The universe topics with the project's config, before anything is produced to them."""
    universe_topics(
        new_application(settings, broker, consumer_group=f"{settings.universe.consumer_group}-setup"), settings
    )


def produce(settings: Settings, records: list[dict], run_id: str, ends: bool = True) -> None:
    """The records (and an end marker per pair) into the universe candles topic, keyed by pair."""
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}", "linger.ms": 5})
    topic = settings.universe.candles_topic
    for record in records:
        producer.produce(topic, key=record["pair"], value=json.dumps(record), timestamp=record["window_end_ms"])
        producer.poll(0)
    if ends:
        last = max(r["window_end_ms"] for r in records)
        for pair in sorted({r["pair"] for r in records}):
            marker = {"control": CONTROL_END, "pair": pair, "timestamp_ms": last, "run_id": run_id}
            producer.produce(topic, key=pair, value=json.dumps(marker), timestamp=last)
    producer.flush(60)


def run_reference(settings: Settings, broker: services.Broker, total: int) -> dict:
    """A bare Quix pass-through of the pre-loaded topic; seconds from the first message to the last."""
    app = new_application(settings, broker, consumer_group=f"{settings.universe.consumer_group}-reference")
    source, _ = universe_topics(app, settings)
    out = json_topic(app, f"{source.name}-passthrough", topic_config(settings))
    seen = {"n": 0, "first": None, "last": None}

    def count(_value) -> None:
        seen["first"] = seen["first"] or time.perf_counter()
        seen["n"] += 1
        if seen["n"] == total:
            seen["last"] = time.perf_counter()
            app.stop()

    app.dataframe(source).update(count).to_topic(out)
    run_application(app, broker, settings.services.broker_wait_s)
    return {"messages": total, "seconds": seen["last"] - seen["first"]}


class TimedSink(FeastSink):
    """`FeastSink` that notes when its first row arrives (the first candle processed)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first: dict[str, float] = {}

    def add(self, *args, **kwargs):
        self.first.setdefault("t", time.perf_counter())
        return super().add(*args, **kwargs)


def pipeline(settings: Settings, broker: services.Broker, pairs: set[str], run_id: str):
    """The universe app with its Feast sink, stopped by `Completion`; returns (app, sink, first-message clock)."""
    app = new_application(settings, broker, consumer_group=settings.universe.consumer_group)
    completion = Completion(run_id, pairs, app.stop)
    sink = TimedSink(lambda: feature_store(settings), universe_routes, on_end=completion.on_end)
    candles, dead_letters = universe_topics(app, settings)
    build_universe_dataflow(app, candles, dead_letters, settings, sink)
    return app, sink, sink.first


def run_throughput(settings: Settings, broker: services.Broker, records: list[dict], run_id: str) -> dict:
    app, sink, first = pipeline(settings, broker, {r["pair"] for r in records}, run_id)
    cpu = psutil.Process().cpu_times()
    run_application(app, broker, settings.services.broker_wait_s)
    end = time.perf_counter()
    used = psutil.Process().cpu_times()
    seconds = end - first["t"]
    return {
        "candles": len(records),
        "seconds": seconds,
        "rows": sum(sink.rows_written.values()),
        "cpu_s": (used.user - cpu.user) + (used.system - cpu.system),
    }


def run_live(settings: Settings, broker: services.Broker, records: list[dict], burst_s: float, idle_s: float) -> dict:
    """Bursts of one candle per ticker (a minute of the universe) every `burst_s`, after `idle_s` without input."""
    run_id = uuid.uuid4().hex
    minutes: dict[int, list[dict]] = {}
    for record in records:
        minutes.setdefault(record["window_end_ms"], []).append(record)
    bursts = [minutes[t] for t in sorted(minutes)]
    app, sink, _ = pipeline(settings, broker, {r["pair"] for r in records}, run_id)
    process = psutil.Process()
    marks: dict[str, float] = {}

    def cpu() -> float:
        t = process.cpu_times()
        return t.user + t.system

    def feed() -> None:
        time.sleep(2.0)  # the app's start-up, not measured
        marks["idle_cpu0"], marks["idle_t0"] = cpu(), time.perf_counter()
        time.sleep(idle_s)
        marks["idle_cpu1"], marks["idle_t1"] = cpu(), time.perf_counter()
        for i, burst in enumerate(bursts):
            produce(settings, burst, run_id, ends=i == len(bursts) - 1)
            time.sleep(burst_s)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    run_application(app, broker, settings.services.broker_wait_s)
    end_cpu, end_t = cpu(), time.perf_counter()
    thread.join(5)
    idle_rate = (marks["idle_cpu1"] - marks["idle_cpu0"]) / (marks["idle_t1"] - marks["idle_t0"])
    busy = (end_cpu - marks["idle_cpu1"]) - idle_rate * (end_t - marks["idle_t1"])
    per_minute = busy / len(bursts)
    return {
        "tickers": len(bursts[0]),
        "minutes": len(bursts),
        "idle_share": idle_rate,
        "cpu_s_per_minute": per_minute,
        "share_of_one_core": per_minute / 60.0 + idle_rate,
        "rows": sum(sink.rows_written.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer candles (200 a ticker) and live minutes (10)")
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--candles", type=int, default=600, help="candles a ticker in the throughput phases")
    parser.add_argument("--live-minutes", type=int, default=30)
    parser.add_argument("--burst-s", type=float, default=1.0, help="wall seconds between two live minutes")
    parser.add_argument("--broker-port", type=int, default=19792)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    candles, live_minutes = (200, 10) if args.quick else (args.candles, args.live_minutes)
    console = Console()
    if not BINANCE_1M.is_dir():
        console.print(f"[red]{BINANCE_1M} is not there: the bench reads the shared Binance candles[/red]")
        return 2
    configure_logging("WARNING")
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="bench-universe-"))
    redis_settings = Settings(_env_file=None, run_dir=tmp / "redis", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    settings = None
    try:
        redis_url = services.ensure_redis(redis_settings)
        settings = bench_settings(tmp, args.broker_port, redis_url)
        broker = services.ensure_broker(settings)
        apply_feature_repo(settings)
        records = tiled_candles(args.tickers, candles)
        run_id = uuid.uuid4().hex
        create_topics(settings, broker)
        produce(settings, records, run_id)
        total = len(records) + args.tickers
        reference = run_reference(settings, broker, total)
        throughput = run_throughput(settings, broker, records, run_id)
        live_settings = settings.override(
            universe_candles_topic=f"{settings.universe.candles_topic}-live",
            universe_consumer_group=f"{settings.universe.consumer_group}-live",
        )
        live_records = tiled_candles(args.tickers, live_minutes)
        create_topics(live_settings, broker)
        live = run_live(live_settings, broker, live_records, args.burst_s, idle_s=10.0)
    finally:
        if settings is not None:
            services.stop_services(settings)
        services.stop_services(redis_settings)
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = os.getloadavg()[0]
    results = {
        "machine": {**machine, "load_end": load_end},
        "reference": reference,
        "throughput": throughput,
        "live": live,
    }
    table = Table(title="universe features (bench/bench_universe.py)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "machine",
        f"{machine['cpu_model']}, {machine['cores_usable']} cores, load {machine['load_start']:.2f} -> {load_end:.2f}",
    )
    table.add_row("bare Quix pass-through", f"{reference['messages'] / reference['seconds']:,.0f} messages/s")
    rate = throughput["candles"] / throughput["seconds"]
    table.add_row(
        f"universe features + Feast ({args.tickers} tickers x {candles})",
        f"{rate:,.0f} candles/s ({throughput['cpu_s'] / throughput['candles'] * 1e6:,.0f} us CPU a candle)",
    )
    table.add_row(
        f"live: {live['tickers']} tickers, 1-minute candles",
        f"{live['share_of_one_core']:.2%} of one core (a minute's candles {live['cpu_s_per_minute'] * 1000:.0f} ms "
        f"CPU; idle {live['idle_share']:.2%}); target < 10 %",
    )
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    raise SystemExit(main())
