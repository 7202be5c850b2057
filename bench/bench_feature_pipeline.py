"""Benchmark of the streaming feature pipeline: throughput end to end and freshness at 1,000 trades/s.

    .venv/bin/python -m bench.bench_feature_pipeline [--quick]

Everything runs in isolation from a user's data: the bench starts its own
embedded broker (port 19192 by default) with its own run directory, uses its
own topics, consumer groups, Feast project ("bench"), Redis db 2 and a temporary
copy of the feature repository (so its Parquet files land in the copy), and
removes all of that at the end.

Phases (all through the project's own code: `new_application`,
`pipeline_topics`, `build_dataflow`, `FeastSink`, `Completion`):

1. Input: the real Kraken trades of data/kraken/btcusd_trades_2019-07-01T00.csv,
   tiled into N trades over 4 pairs (time shifted by one hour per repetition,
   row-numbered ids), written as one trades CSV per pair and replayed with the
   project's CSV reader into the trades topic (JSON in the shape of
   `coinflow.schemas.Trade`, keyed by pair, timestamp = trade time), followed by
   an end marker per pair exactly as `FiniteFileSource` sends them.
2. Reference: a bare Quix pass-through (trades topic -> another topic, bytes).
3. End to end: the full dataflow over the same pre-loaded topic, stopped by
   `Completion` once every pair's end marker is written to Feast.
4. Freshness: trades paced at a fixed rate over several pairs, stamped with the
   wall clock, while the pipeline runs live; per candle, the time from its
   window end to (a) the sink's write returning and (b) the row being visible
   through `FeatureStore.get_online_features`, polled from another process.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

with warnings.catch_warnings(), contextlib.suppress(ImportError):
    import authlib.deprecate  # installs an "always" filter; the "ignore" below must come after it

    warnings.simplefilter("ignore")  # Feast's imports warn that authlib falls back to httpx: noise here
    import authlib.integrations.httpx_client  # noqa: F401

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from coinflow import parquet_writer, services
from coinflow.embedded_broker import EMBEDDED_FETCH_WAIT_MS, newest_record_fetch_s
from coinflow.exchange_files import iter_trades_csv
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.logs import configure_logging
from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END, Control
from coinflow.settings import Settings, keyword_names
from coinflow.streaming import new_application, pipeline_topics, source_producer_config, topic_config
from feature_pipeline.candles.dataflow import build_dataflow
from feature_pipeline.candles.sink import CandleFeastSink
from feature_pipeline.runtime import Completion
from feature_pipeline.transforms.candles import new_candle, update_candle
from feature_repo.names import indicators_view, ohlcv_view

ROOT = Path(__file__).resolve().parent.parent
SOURCE_CSV = ROOT / "data" / "kraken" / "btcusd_trades_2019-07-01T00.csv"
FEATURE_REPO = ROOT / "feature_repo"
HOUR_MS = 3_600_000

THROUGHPUT_PAIRS = {"BTC/USD": 1.0, "ETH/USD": 0.0285, "SOL/USD": 0.0031, "XRP/USD": 0.0000365}
LIVE_PAIRS = [
    "BTC/USD",
    "ETH/USD",
    "SOL/USD",
    "XRP/USD",
    "ADA/USD",
    "DOGE/USD",
    "DOT/USD",
    "LTC/USD",
    "LINK/USD",
    "AVAX/USD",
    "ATOM/USD",
    "XLM/USD",
    "UNI/USD",
    "BCH/USD",
    "ETC/USD",
    "FIL/USD",
]

TARGET_TRADES_PER_S = 20_000
TARGET_P99_S = 1.0
LATE_LIMIT_S = 2.0
RUN_ID_SPAN = 10_000_000  # trade ids per pair of one live run, more than any run sends

console = Console()
if not console.is_terminal:
    console = Console(width=150)
logger = logging.getLogger("bench")


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from importlib.metadata import version

    return {
        "cpu_model": model,
        "load_start": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "ram_gib": round(ram_gib, 1) if ram_gib else None,
        "python": platform.python_version(),
        "quixstreams": version("quixstreams"),
        "feast": version("feast"),
        "confluent_kafka": version("confluent-kafka"),
    }


# --------------------------------------------------------------------------- isolation


def copy_feature_repo(dst: Path) -> Path:
    """A copy of the feature repository (definitions + config), so the offline Parquet files land in it."""
    dst.mkdir(parents=True)
    for item in FEATURE_REPO.iterdir():
        if item.suffix == ".py" or item.name in ("feature_store.yaml", ".feastignore"):
            shutil.copy2(item, dst / item.name)
    return dst


ISOLATION_FIELDS = {
    "kafka_broker_address",
    "embedded_broker_port",
    "redis_url",
    "run_dir",
    "feature_repo_path",
    "feast_project",
    "feast_registry_path",
    "trades_topic",
    "candles_topic",
    "features_topic",
    "dead_letter_topic",
    "consumer_group",
}


def bench_settings(tmp: Path, tag: str, port: int, log_level: str, overrides: dict[str, str]) -> Settings:
    """The bench's settings: isolated from a user's data; `overrides` (from --set) may change the rest."""
    return Settings(
        **overrides,
        kafka_broker_address=None,
        embedded_broker_port=port,
        redis_url="redis://127.0.0.1:6379/2",
        run_dir=tmp / "run",
        feature_repo_path=copy_feature_repo(tmp / "feature_repo"),
        feast_project="bench",
        feast_registry_path=None,
        trades_topic=f"bench-{tag}-trades",
        candles_topic=f"bench-{tag}-candles",
        features_topic=f"bench-{tag}-features",
        dead_letter_topic=f"bench-{tag}-dead-letters",
        consumer_group=f"bench-{tag}-pipeline",
        metrics_port=0,
        log_level=log_level,
    )


def phase_settings(settings: Settings, phase: str) -> Settings:
    tag = settings.stream.consumer_group.removesuffix("-pipeline")
    return settings.override(
        trades_topic=f"{tag}-{phase}-trades",
        candles_topic=f"{tag}-{phase}-candles",
        features_topic=f"{tag}-{phase}-features",
        dead_letter_topic=f"{tag}-{phase}-dead-letters",
        consumer_group=f"{tag}-{phase}-pipeline",
    )


def reset_stores(settings: Settings) -> None:
    """Empty the bench's offline Parquet files and online rows, so every repetition writes the same."""
    shutil.rmtree(settings.feast.repo_path / "data" / "offline", ignore_errors=True)
    clear_online_rows(settings)


def clear_online_rows(settings: Settings) -> None:
    """Remove the bench project's rows from Redis (Feast teardown of the online store)."""
    with contextlib.suppress(Exception):
        store = feature_store(settings)
        provider = store._get_provider()
        provider.teardown_infra(settings.feast.project, store.list_feature_views(), store.list_entities())


# --------------------------------------------------------------------------- input


def base_trades() -> list[dict]:
    rejects = Rejects("bench-input")
    trades = list(iter_trades_csv(SOURCE_CSV, "BTC/USD", rejects))
    first, last = trades[0]["timestamp_ms"], trades[-1]["timestamp_ms"]
    if last - (first - first % HOUR_MS) >= HOUR_MS:
        raise SystemExit(f"{SOURCE_CSV} spans more than one hour; the tiling assumes one")
    return trades


def write_tiled_csv(path: Path, base: list[dict], count: int, scale: float) -> None:
    """`count` trades from `base`, repeated with time shifted by one hour per repetition."""
    lines = ["time_ms,timestamp,price,qty,side\n"]
    n = len(base)
    for i in range(count):
        rep, j = divmod(i, n)
        trade = base[j]
        ts = trade["timestamp_ms"] + rep * HOUR_MS
        iso = datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts % 1000:03d}Z"
        lines.append(f"{ts},{iso},{trade['price'] * scale:.10g},{trade['qty']!r},{trade['side']}\n")
    path.write_text("".join(lines))


def _produce(producer, topic: str, key, value, timestamp: int, on_delivery=None) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value, timestamp=timestamp, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def preload_trades(settings: Settings, broker: services.Broker, files: dict[str, Path], run_id: str) -> dict:
    """Replay the per-pair CSVs (interleaved by time) into the trades topic, then one end marker per pair."""
    from confluent_kafka import Producer

    app = new_application(settings, broker, consumer_group=f"{settings.stream.consumer_group}-setup")
    topic = pipeline_topics(app, settings).trades  # creates the pipeline's topics with the project's config
    producer = Producer(
        {
            "bootstrap.servers": broker.address,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    rejects = Rejects("bench-preload")
    merged = heapq.merge(
        *(iter_trades_csv(path, pair, rejects) for pair, path in files.items()), key=lambda r: r["timestamp_ms"]
    )
    close_after = settings.stream.candle_close_after_ms
    last_ts: dict[str, int] = {}
    count = 0
    started = time.perf_counter()
    for record in merged:
        ts = record["timestamp_ms"]
        message = topic.serialize(key=record["pair"], value=record, timestamp_ms=ts)
        _produce(producer, topic.name, message.key, message.value, message.timestamp)
        last_ts[record["pair"]] = ts
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    for pair in files:
        end_ts = last_ts[pair] + close_after
        marker = Control(control=CONTROL_END, pair=pair, timestamp_ms=end_ts, run_id=run_id)
        message = topic.serialize(key=pair, value=marker, timestamp_ms=end_ts)
        _produce(producer, topic.name, message.key, message.value, message.timestamp)
    left = producer.flush(60)
    seconds = time.perf_counter() - started
    if left:
        raise RuntimeError(f"{left} messages were not delivered to {topic.name}")
    return {"trades": count, "messages": count + len(files), "seconds": seconds, "rejects": dict(rejects.counts)}


# --------------------------------------------------------------------------- runs


class CpuMeter:
    """CPU used by this process (the app), the bench's broker and the whole machine between start and stop."""

    def __init__(self, settings: Settings) -> None:
        self.procs = {"app": psutil.Process()}
        with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
            record = json.loads((settings.services.run_dir / "broker.json").read_text())
            self.procs["broker"] = psutil.Process(record["pid"])
        self.begin: tuple | None = None
        self.result: dict = {}

    def _sample(self) -> tuple:
        used = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                used[name] = times.user + times.system
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return time.perf_counter(), used, busy

    def start(self) -> None:
        self.begin = self._sample()

    def stop(self) -> dict:
        if self.begin is None:
            return {}
        (t0, used0, busy0), (t1, used1, busy1) = self.begin, self._sample()
        seconds = max(t1 - t0, 1e-9)
        cores = {name: (used1[name] - used0[name]) / seconds for name in used1 if name in used0}
        cores["machine"] = (busy1 - busy0) / seconds
        cores["others"] = max(cores["machine"] - sum(v for k, v in cores.items() if k != "machine"), 0.0)
        self.result = {"cores_busy": cores, "app_cpu_s": used1.get("app", 0.0) - used0.get("app", 0.0)}
        return self.result


class Clock:
    """First/last processed-message times of an Application (its `on_message_processed` callback)."""

    def __init__(self, stop_after: int | None = None, meter: CpuMeter | None = None) -> None:
        self.first: float | None = None
        self.first_wall: float | None = None
        self.last: float | None = None
        self.count = 0
        self.stop_after = stop_after
        self.meter = meter
        self.app = None
        self.previous_wall: float | None = None
        self.gaps: list[tuple[float, float]] = []

    def __call__(self, topic: str, partition: int, offset: int) -> None:
        now = time.time()
        if self.previous_wall is not None and now - self.previous_wall > 0.5:
            self.gaps.append((self.previous_wall, now - self.previous_wall))
        self.previous_wall = now
        if self.first is None:
            self.first, self.first_wall = time.perf_counter(), time.time()
            if self.meter:
                self.meter.start()
        self.count += 1
        if self.stop_after is not None and self.count == self.stop_after:
            self.last = time.perf_counter()
            if self.meter:
                self.meter.stop()
            self.app.stop()


@contextlib.contextmanager
def watchdog(seconds: float, stop, what: str):
    fired = threading.Event()

    def fire():
        fired.set()
        console.print(f"[red]{what} did not finish within {seconds:.0f} s; stopping it[/red]")
        stop()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def app_options(consumer_extra: dict[str, str]) -> dict:
    """Extra Application options of a what-if run (--consumer-set), merged over the project's own."""
    return {"consumer_extra_config": consumer_extra} if consumer_extra else {}


def run_reference(
    settings: Settings,
    broker: services.Broker,
    messages: int,
    timeout_s: float,
    consumer_extra: dict[str, str],
    kind: str = "reference",
) -> dict:
    """A reference Quix app over the pre-loaded trades topic.

    ``reference``: a bare pass-through (bytes in, bytes out). ``quix-window``:
    Quix's own ``tumbling_window(...).reduce(...).final()`` building the same
    candles with the project's candle reducer, the alternative to the
    dataflow's window step.
    """
    meter = CpuMeter(settings)
    clock = Clock(stop_after=messages, meter=meter)
    started = time.perf_counter()
    app = new_application(
        settings,
        broker,
        consumer_group=f"{settings.stream.consumer_group}-{kind}",
        on_message_processed=clock,
        **app_options(consumer_extra),
    )
    clock.app = app
    config = topic_config(settings)
    if kind == "reference":
        source = app.topic(settings.topics.trades, value_deserializer="bytes", key_deserializer="bytes", config=config)
        target = app.topic(
            f"{settings.topics.trades}-passthrough", value_serializer="bytes", key_serializer="bytes", config=config
        )
        app.dataframe(source).to_topic(target)
    else:
        source = app.topic(settings.topics.trades, value_deserializer="json", key_deserializer="str", config=config)
        target = app.topic(
            f"{settings.topics.trades}-quix-candles", value_serializer="json", key_serializer="str", config=config
        )
        (
            app.dataframe(source)
            .filter(lambda r: "control" not in r)
            .set_timestamp(lambda value, key, timestamp, headers: value["timestamp_ms"])
            .tumbling_window(
                duration_ms=settings.stream.candle_seconds * 1000, grace_ms=settings.stream.window_grace_ms
            )
            .reduce(reducer=update_candle, initializer=new_candle)
            .final()
            .to_topic(target)
        )
    with watchdog(timeout_s, app.stop, f"The {kind} app") as fired:
        app.run()
    wall = time.perf_counter() - started
    seconds = (clock.last or time.perf_counter()) - (clock.first or started)
    return {
        "messages": clock.count,
        "seconds": seconds,
        "rate": clock.count / seconds if seconds > 0 else 0.0,
        "wall_s": wall,
        "timed_out": fired.is_set(),
        "cpu": meter.result,
    }


class TimedFeastSink(CandleFeastSink):
    """The project's sink, noting when each row reached it and when its write to both stores returned."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrived: dict[tuple[str, int], float] = {}
        self.written: dict[tuple[str, int], float] = {}
        self.write_seconds: list[float] = []

    def add(self, value, *args, **kwargs):
        if isinstance(value, dict) and "control" not in value:
            self.arrived.setdefault((value["pair"], value["window_end_ms"]), time.time())
        return super().add(value, *args, **kwargs)

    def write_rows(self, rows: list[dict]) -> None:
        started = time.perf_counter()
        super().write_rows(rows)
        self.write_seconds.append(time.perf_counter() - started)
        now = time.time()
        for row in rows:
            self.written.setdefault((row["pair"], row["window_end_ms"]), now)


def pipeline_app(
    settings: Settings, broker: services.Broker, run_id: str, pairs: set[str], consumer_extra: dict[str, str]
):
    """The feature pipeline wired exactly as `feature_pipeline.candles.runner.run_pipeline` does, plus timing hooks."""
    meter = CpuMeter(settings)
    clock = Clock(meter=meter)
    app = new_application(settings, broker, on_message_processed=clock, **app_options(consumer_extra))
    topics = pipeline_topics(app, settings)
    done: dict[str, float] = {}

    def stop() -> None:
        done["t"], done["wall"] = time.perf_counter(), time.time()
        meter.stop()
        app.stop()

    completion = Completion(run_id, pairs, stop)
    sink = TimedFeastSink(
        lambda: feature_store(settings),
        settings.stream.online_window_length,
        retries=settings.stream.sink_retries,
        on_end=completion.on_end,
    )
    rejects = build_dataflow(app, topics, settings, sink)
    return app, clock, sink, rejects, done, meter


def run_end_to_end(
    settings: Settings,
    broker: services.Broker,
    run_id: str,
    pairs: set[str],
    trades: int,
    timeout_s: float,
    consumer_extra: dict[str, str],
) -> dict:
    started = time.perf_counter()
    app, clock, sink, rejects, done, meter = pipeline_app(settings, broker, run_id, pairs, consumer_extra)
    with watchdog(timeout_s, app.stop, "The end-to-end run") as fired:
        app.run()
    wall = time.perf_counter() - started
    end = done.get("t", time.perf_counter())
    seconds = end - (clock.first or started)
    # What the stores hold afterwards.
    offline_rows = {}
    store = feature_store(settings)
    for view_name in (ohlcv_view(settings.stream.candle_interval), indicators_view(settings.stream.candle_interval)):
        root = parquet_writer.dataset_root(store.get_feature_view(view_name).batch_source.path)
        offline_rows[view_name] = len(parquet_writer.read_rows(root))
    online = store.get_online_features(
        features=[f"{ohlcv_view(settings.stream.candle_interval)}:close"],
        entity_rows=[{"pair": p} for p in sorted(pairs)],
    ).to_dict(include_event_timestamps=True)
    online_ts = {p: ts for p, ts in zip(sorted(pairs), online["close__ts"], strict=False)}
    last_window = {}
    for pair, end_ms in sink.written:
        last_window[pair] = max(last_window.get(pair, 0), end_ms)
    online_ok = sum(1 for p in pairs if online_ts.get(p) and online_ts[p] * 1000 == last_window.get(p))
    return {
        "trades": trades,
        "seconds": seconds,
        "rate": trades / seconds if seconds > 0 else 0.0,
        "wall_s": wall,
        "startup_s": (clock.first or started) - started,
        "completed": "t" in done and not fired.is_set(),
        "messages_processed": clock.count,
        "rows_written": dict(sink.rows_written),
        "offline_rows": offline_rows,
        "online_latest_ok": online_ok,
        "pairs": len(pairs),
        "rejects": dict(rejects.counts),
        "sink_writes": len(sink.write_seconds),
        "sink_write_s_total": sum(sink.write_seconds),
        "sink_write_s_p50": _pct(sink.write_seconds, 50),
        "cpu": meter.result,
    }


# --------------------------------------------------------------------------- freshness


def live_producer(
    address: str,
    producer_config: dict,
    topic: str,
    pairs: list[str],
    rate: float,
    duration_s: float,
    run_id: str,
    close_after_ms: int,
    go,
    out,
    first_id: int = 1,
) -> None:
    """Child process: trades paced at `rate`/s round-robin over `pairs`, stamped with the wall clock.

    It produces with the producer settings of the project's sources (`producer_config`), as a live source would.
    """
    import orjson
    from confluent_kafka import Producer

    base = base_trades()
    scale = {p: 1.0 / (1 + i) for i, p in enumerate(pairs)}
    producer = Producer({"bootstrap.servers": address, **producer_config})
    acks: list[float] = []
    slow_acks: list[tuple[float, float]] = []

    def acked(error, message) -> None:
        """Broker acknowledgement time of each trade: a produce-side stall shows here, a consumer-side one does not."""
        took = time.time() - message.timestamp()[1] / 1000
        acks.append(took)
        if took > 0.5:
            slow_acks.append((message.timestamp()[1] / 1000, took))

    next_id = {p: first_id for p in pairs}
    last_ts = {p: 0 for p in pairs}
    go.wait(120)
    sent = 0
    start = time.monotonic()
    stop_at = start + duration_s
    max_behind = 0
    while True:
        now = time.monotonic()
        if now >= stop_at:
            break
        due = int((now - start) * rate)
        max_behind = max(max_behind, due - sent)
        while sent < due:
            pair = pairs[sent % len(pairs)]
            src = base[sent % len(base)]
            ts = max(int(time.time() * 1000), last_ts[pair])
            trade = {
                "exchange": "kraken",
                "pair": pair,
                "trade_id": next_id[pair],
                "price": round(src["price"] * scale[pair], 8),
                "qty": src["qty"],
                "side": src["side"],
                "timestamp_ms": ts,
            }
            _produce(producer, topic, pair.encode(), orjson.dumps(trade), ts, acked)
            next_id[pair] += 1
            last_ts[pair] = ts
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    producer.flush(30)
    for pair in pairs:
        end_ts = last_ts[pair] + close_after_ms
        marker = {"control": CONTROL_END, "pair": pair, "timestamp_ms": end_ts, "run_id": run_id}
        _produce(producer, topic, pair.encode(), orjson.dumps(marker), end_ts)
    producer.flush(30)
    out.put(
        {
            "sent": sent,
            "seconds": elapsed,
            "last_ts": last_ts,
            "max_behind": max_behind,
            "ack": _summary(acks),
            "slow_acks": _stall_spans(slow_acks),
        }
    )


def _stall_spans(events: list[tuple[float, float]], join_s: float = 1.0) -> list[dict]:
    """(wall time, delay) events grouped into spans: start time, length and worst delay of each."""
    spans: list[dict] = []
    for at, delay in sorted(events):
        if spans and at - spans[-1]["end"] <= join_s:
            spans[-1]["end"] = at
            spans[-1]["worst_s"] = round(max(spans[-1]["worst_s"], delay), 3)
        else:
            spans.append({"start": at, "end": at, "worst_s": round(delay, 3)})
    return [
        {**span, "start_utc": datetime.fromtimestamp(span["start"], UTC).strftime("%H:%M:%S.%f")[:-3]} for span in spans
    ]


def live_poller(settings: Settings, pairs: list[str], period_s: float, ready, stop, out) -> None:
    """Child process: polls Feast's online store for every pair every `period_s`; notes when a new row shows."""
    logging.disable(logging.WARNING)
    store = feature_store(settings)
    ohlcv, indicators = ohlcv_view(settings.stream.candle_interval), indicators_view(settings.stream.candle_interval)
    features = [f"{ohlcv}:close", f"{indicators}:rsi_14"]
    rows = [{"pair": p} for p in pairs]
    last = dict.fromkeys(pairs, 0)
    seen: list[tuple[str, int, float]] = []
    durations: list[float] = []
    store.get_online_features(features=features, entity_rows=rows, full_feature_names=True)  # warm up
    ready.set()
    started = time.monotonic()
    due = started
    while not stop.is_set():
        t0 = time.perf_counter()
        response = store.get_online_features(features=features, entity_rows=rows, full_feature_names=True)
        data = response.to_dict(include_event_timestamps=True)
        now = time.time()
        durations.append(time.perf_counter() - t0)
        for pair, a, b in zip(pairs, data[f"{ohlcv}__close__ts"], data[f"{indicators}__rsi_14__ts"], strict=False):
            ts = min(a or 0, b or 0)  # both views of the row are visible
            if ts > last[pair]:
                last[pair] = ts
                seen.append((pair, ts * 1000, now))
        due += period_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            due = time.monotonic()
    elapsed = time.monotonic() - started
    out.put(
        {
            "seen": seen,
            "polls": len(durations),
            "seconds": elapsed,
            "poll_ms_p50": _pct(durations, 50) * 1000,
            "poll_ms_p99": _pct(durations, 99) * 1000,
        }
    )


def run_freshness(
    settings: Settings,
    broker: services.Broker,
    pairs: list[str],
    rate: float,
    duration_s: float,
    poll_s: float,
    warmup_s: float,
    consumer_extra: dict[str, str],
    first_trade_id: int = 1,
) -> dict:
    """One live run; a run after another on the same topic starts its trade ids past the earlier run's
    (`first_trade_id`), or the pipeline's dedup would reject them as repeats."""
    ctx = multiprocessing.get_context("spawn")
    run_id = uuid.uuid4().hex
    close_after = settings.stream.candle_close_after_ms
    app, clock, sink, rejects, done, _ = pipeline_app(settings, broker, run_id, set(pairs), consumer_extra)
    ready, stop, go = ctx.Event(), ctx.Event(), ctx.Event()
    poll_out, prod_out = ctx.Queue(), ctx.Queue()
    poller = ctx.Process(target=live_poller, args=(settings, pairs, poll_s, ready, stop, poll_out), daemon=True)
    producer = ctx.Process(
        target=live_producer,
        daemon=True,
        args=(
            broker.address,
            source_producer_config(settings, broker, None),
            settings.topics.trades,
            pairs,
            rate,
            duration_s,
            run_id,
            close_after,
            go,
            prod_out,
            first_trade_id,
        ),
    )
    poller.start()
    producer.start()
    if not ready.wait(120):
        raise RuntimeError("The Feast poller did not start")
    go.set()
    produce_started = time.time()
    try:
        with watchdog(duration_s + 240, app.stop, "The live run") as fired:
            app.run()
    finally:
        stop.set()
    produced = prod_out.get(timeout=60)
    polled = poll_out.get(timeout=60)
    producer.join(10)
    poller.join(10)

    ready_wall = max(clock.first_wall or produce_started, produce_started)
    grace = settings.stream.window_grace_ms
    seen = {(p, end): t for p, end, t in polled["seen"]}
    wrote, via_poll, to_sink, in_sink, late = [], [], [], [], []
    excluded_warmup = excluded_end = 0
    for (pair, end_ms), written in sorted(sink.written.items()):
        if end_ms + grace > produced["last_ts"][pair]:
            excluded_end += 1  # closed by the end marker, not by trades
            continue
        if end_ms / 1000 < ready_wall + warmup_s:
            excluded_warmup += 1  # closed while the app was still starting
            continue
        end_s = end_ms / 1000
        wrote.append(written - end_s)
        if written - end_s > 1.0:
            late.append({"pair": pair, "window_end_ms": end_ms, "written_after_s": round(written - end_s, 3)})
        arrived = sink.arrived.get((pair, end_ms))
        if arrived is not None:
            to_sink.append(arrived - end_s)
            in_sink.append(written - arrived)
        if (pair, end_ms) in seen:
            via_poll.append(seen[(pair, end_ms)] - end_s)
    return {
        "pairs": len(pairs),
        "rate_target": rate,
        "duration_s": duration_s,
        "sent": produced["sent"],
        "rate_achieved": produced["sent"] / produced["seconds"],
        "producer_max_behind": produced["max_behind"],
        "completed": "t" in done and not fired.is_set(),
        "startup_s": (clock.first_wall or produce_started) - produce_started,
        "candles_written": len(sink.written),
        "excluded_warmup": excluded_warmup,
        "excluded_end": excluded_end,
        "sink": _summary(wrote),
        "poll": _summary(via_poll),
        "to_sink": _summary(to_sink),
        "in_sink": _summary(in_sink),
        "poll_missed": len(wrote) - len(via_poll),
        "late": late,
        "producer_ack": produced["ack"],
        "producer_slow_acks": produced["slow_acks"],
        "consumer_gaps": _stall_spans(clock.gaps),
        "polls": polled["polls"],
        "poll_period_ms": polled["seconds"] / max(polled["polls"], 1) * 1000,
        "poll_call_ms_p50": polled["poll_ms_p50"],
        "poll_call_ms_p99": polled["poll_ms_p99"],
        "rejects": dict(rejects.counts),
        "grace_ms": grace,
        "commit_interval_s": settings.stream.commit_interval_s,
        "sink_writes": len(sink.write_seconds),
        "sink_write_ms_p50": _pct(sink.write_seconds, 50) * 1000,
        "sink_write_ms_max": max(sink.write_seconds, default=float("nan")) * 1000,
    }


# --------------------------------------------------------------------------- broker history

HISTORY_SIZES = (10_000, 50_000, 100_000, 200_000)
HISTORY_SHORT_WAIT_MS = 20


def _ms_or_stalled(seconds: list[float | None]) -> str:
    return ", ".join("no record in 10 s" if x is None or math.isinf(x) else f"{x * 1000:.0f} ms" for x in seconds)


def run_broker_history(settings: Settings, broker: services.Broker, sizes: tuple[int, ...] = HISTORY_SIZES) -> dict:
    """Fetch time of a partition's newest record against the number of batches the partition holds.

    The embedded broker's fetch lists every batch of the partition (see
    `coinflow.streaming.EMBEDDED_FETCH_WAIT_MS`): one record per batch grows the
    partition to each size, then a fresh consumer fetches the newest record
    with the project's fetch wait and with a short one.
    """
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"{settings.topics.trades}-history"
    admin = AdminClient({"bootstrap.servers": broker.address})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer(
        {"bootstrap.servers": broker.address, "batch.num.messages": 1, "linger.ms": 0, "enable.idempotence": False}
    )
    rows, produced = [], 0
    for size in sizes:
        started = time.perf_counter()
        while produced < size:
            _produce(producer, topic, b"k", b"%d" % produced, int(time.time() * 1000))
            produced += 1
            if produced % 1000 == 0:
                producer.poll(0)
        producer.flush(120)
        fill_s = time.perf_counter() - started
        project = [newest_record_fetch_s(broker.address, topic, 0) for _ in range(3)]
        short = newest_record_fetch_s(broker.address, topic, 0, wait_ms=HISTORY_SHORT_WAIT_MS)
        rows.append({"batches": size, "fill_s": fill_s, "fetch_s": project, "short_wait_fetch_s": short})
        console.print(f"  {size:,} batches: newest record in {_ms_or_stalled(project)}")
    return {"wait_ms": EMBEDDED_FETCH_WAIT_MS, "short_wait_ms": HISTORY_SHORT_WAIT_MS, "rows": rows}


# --------------------------------------------------------------------------- report


def _pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _median_run(runs: list[dict]) -> dict:
    """The run with the median rate (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["rate"])[(len(runs) - 1) // 2]


def _runs(result: dict, unit: str) -> str:
    runs = result.get("runs") or []
    if len(runs) < 2:
        return ""
    return f"; median of {len(runs)} runs: {', '.join(f'{r:,.0f}' for r in runs)} {unit}"


def _summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": _pct(values, 50),
        "p99": _pct(values, 99),
        "max": max(values) if values else float("nan"),
    }


def _cpu(cpu: dict | None) -> str:
    if not cpu:
        return "n/a"
    c = cpu["cores_busy"]
    return (
        f"app {c.get('app', 0):.2f}, broker {c.get('broker', 0):.2f}, others {c.get('others', 0):.2f}; "
        f"machine {c.get('machine', 0):.2f} of {os.cpu_count()}"
    )


def _ok(passed: bool) -> str:
    return "[green]PASS[/green]" if passed else "[red]FAIL[/red]"


def results_table(title: str, machine: dict, load_end: float, software: str) -> Table:
    """A benchmark's table (measure, value, target, pass/fail) opened with the machine it ran on."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    table.add_row(
        "machine", f"{machine['cores']} cores ({machine['cores_usable']} usable), {machine['ram_gib']} GiB RAM"
    )
    table.add_row("CPU", machine["cpu_model"])
    table.add_row("load average (1 min) at start / end", f"{machine['load_start']:.2f} / {load_end:.2f}")
    table.add_row("software", software)
    return table


def _freshness_line(f: dict) -> str:
    p, s_ = f["poll"], f["sink"]
    late = sum(1 for x in f["late"] if x["written_after_s"] > LATE_LIMIT_S)
    return (
        f"visible p50 {p['p50']:.2f} / p99 {p['p99']:.2f} / max {p['max']:.2f} s; to sink p99 "
        f"{f['to_sink']['p99']:.2f} s; sink write p99 {s_['p99']:.2f} s; "
        f"{late} candles > {LATE_LIMIT_S:g} s; end markers {'consumed' if f['completed'] else 'NOT consumed'}"
    )


def _freshness_runs_rows(table: Table, runs: list[dict]) -> None:
    table.add_section()
    for k, f in enumerate(runs, 1):
        passed = f["poll"]["p99"] < TARGET_P99_S and f["completed"]
        passed = passed and not any(x["written_after_s"] > LATE_LIMIT_S for x in f["late"])
        table.add_row(f"freshness run {k}/{len(runs)}", _freshness_line(f), f"p99 < {TARGET_P99_S:g} s", _ok(passed))


def _history_rows(table: Table, history: dict) -> None:
    table.add_section()
    for row in history["rows"]:
        table.add_row(
            f"embedded broker, partition of {row['batches']:,} batches: newest record fetched in",
            f"{_ms_or_stalled(row['fetch_s'])} (wait {history['wait_ms']} ms); with a {history['short_wait_ms']} ms "
            f"wait: {_ms_or_stalled([row['short_wait_fetch_s']])}",
        )


def report(results: dict) -> Table:
    m = results["machine"]
    table = results_table(
        f"coinflow feature pipeline benchmark ({'quick' if results['quick'] else 'full'})",
        m,
        results.get("load_end", float("nan")),
        f"Python {m['python']}, quixstreams {m['quixstreams']}, feast {m['feast']}, "
        f"confluent-kafka {m['confluent_kafka']}",
    )
    s = results["settings"]
    table.add_row(
        "pipeline settings",
        f"commit {s['commit_interval_s']} s, grace {s['window_grace_ms']} ms, "
        f"{s['processing_guarantee']}, {s['candle_interval']} candles, "
        f"broker {s['broker']}",
    )
    if s.get("overrides"):
        table.add_row("what-if overrides (--set)", ", ".join(f"{k}={v}" for k, v in s["overrides"].items()))
    if s.get("consumer_extra"):
        table.add_row("what-if consumer config", ", ".join(f"{k}={v}" for k, v in s["consumer_extra"].items()))

    if "input" in results:
        i = results["input"]
        table.add_section()
        table.add_row(
            "input",
            f"{i['trades']:,} real trades ({i['base_trades']:,} x {i['repetitions']} tiles) over {i['pairs']} pairs",
        )
        table.add_row(
            "file replay -> broker (pre-load)", f"{i['trades'] / i['seconds']:,.0f} trades/s ({i['seconds']:.1f} s)"
        )
    if "reference" in results:
        r = results["reference"]
        table.add_row(
            "reference: bare Quix pass-through", f"{r['rate']:,.0f} msgs/s ({r['seconds']:.1f} s{_runs(r, 'msgs/s')})"
        )
        table.add_row("  CPU while it ran (cores busy)", _cpu(r.get("cpu")))
    if "quix_window" in results:
        q = results["quix_window"]
        table.add_row(
            "reference: Quix tumbling_window().reduce().final() candles only",
            f"{q['rate']:,.0f} trades/s ({q['seconds']:.1f} s{_runs(q, 'trades/s')})",
        )
    if "end_to_end" in results:
        e = results["end_to_end"]
        table.add_row(
            "end to end: trades -> candles -> indicators -> Feast (processing)",
            f"{e['rate']:,.0f} trades/s ({e['seconds']:.1f} s{_runs(e, 'trades/s')})",
            f">= {TARGET_TRADES_PER_S:,}",
            _ok(e["rate"] >= TARGET_TRADES_PER_S and e["completed"]),
        )
        table.add_row("  CPU while it ran (cores busy)", _cpu(e.get("cpu")))
        if e.get("cpu", {}).get("app_cpu_s"):
            table.add_row("  app CPU per trade", f"{e['cpu']['app_cpu_s'] / e['trades'] * 1e6:.0f} µs")
        table.add_row(
            "end to end incl. start-up (wall)",
            f"{e['trades'] / e['wall_s']:,.0f} trades/s ({e['wall_s']:.1f} s, start-up {e['startup_s']:.1f} s)",
        )
        if "input" in results:
            total = results["input"]["seconds"] + e["wall_s"]
            table.add_row(
                "file -> Feast incl. pre-load and start-up", f"{e['trades'] / total:,.0f} trades/s ({total:.1f} s)"
            )
        if "reference" in results and results["reference"]["rate"]:
            ratios = results.get("ratios") or []
            per_run = f" (per run: {', '.join(f'{x:.3f}' for x in ratios)})" if len(ratios) > 1 else ""
            table.add_row("ratio end to end / reference", f"{e['rate'] / results['reference']['rate']:.3f}{per_run}")
        rows = ", ".join(f"{v}={n:,}" for v, n in sorted(e["rows_written"].items()))
        table.add_row("rows written (sink)", rows)
        offline_ok = all(e["offline_rows"].get(v) == n for v, n in e["rows_written"].items())
        table.add_row(
            "offline rows / online latest per pair",
            f"{', '.join(f'{n:,}' for n in e['offline_rows'].values())} / {e['online_latest_ok']}/{e['pairs']}",
            "",
            _ok(offline_ok and e["online_latest_ok"] == e["pairs"]),
        )
        table.add_row(
            "sink writes (checkpoints) / time in sink",
            f"{e['sink_writes']} / {e['sink_write_s_total']:.1f} s (p50 {e['sink_write_s_p50'] * 1000:.0f} ms)",
        )
        table.add_row("rejects", ", ".join(f"{k}={v}" for k, v in e["rejects"].items()) or "none")
    if "broker_history" in results:
        _history_rows(table, results["broker_history"])
    if "freshness_runs" in results:
        _freshness_runs_rows(table, results["freshness_runs"])
    if "freshness" in results:
        f = results["freshness"]
        table.add_section()
        table.add_row(
            "live load",
            f"{f['sent']:,} trades, {f['rate_achieved']:,.0f}/s over {f['pairs']} pairs, {f['duration_s']:.0f} s",
        )
        table.add_row(
            "candles measured",
            f"{f['sink']['n']} (of {f['candles_written']}; excluded: "
            f"{f['excluded_warmup']} warm-up, {f['excluded_end']} closed by end marker)",
            ">= 30" if not results["quick"] else "(full run)",
            _ok(f["sink"]["n"] >= 30) if not results["quick"] else "",
        )
        s_ = f["sink"]
        table.add_row(
            "freshness: window end -> sink write done (p50 / p99 / max)",
            f"{s_['p50']:.3f} / {s_['p99']:.3f} / {s_['max']:.3f} s",
            f"p99 < {TARGET_P99_S:g} s",
            _ok(s_["p99"] < TARGET_P99_S),
        )
        p = f["poll"]
        table.add_row(
            "freshness: window end -> visible via Feast get_online_features",
            f"{p['p50']:.3f} / {p['p99']:.3f} / {p['max']:.3f} s (n={p['n']})",
            f"p99 < {TARGET_P99_S:g} s",
            _ok(p["p99"] < TARGET_P99_S),
        )
        table.add_row(
            "  poller",
            f"every {f['poll_period_ms']:.0f} ms (all pairs in one call, "
            f"{f['poll_call_ms_p50']:.1f} ms p50), {f['poll_missed']} rows overwritten before seen",
        )
        t, b = f["to_sink"], f["in_sink"]
        table.add_row(
            "  of which window end -> row reaches sink",
            f"{t['p50']:.3f} / {t['p99']:.3f} / {t['max']:.3f} s (grace {f['grace_ms']} ms included)",
        )
        table.add_row(
            "  of which in sink until written (checkpoint + write)",
            f"{b['p50']:.3f} / {b['p99']:.3f} / {b['max']:.3f} s (commit every {f['commit_interval_s']} s)",
        )
        a = f["producer_ack"]
        table.add_row(
            "  trade produced -> acknowledged by the broker",
            f"{a['p50'] * 1000:.1f} / {a['p99'] * 1000:.1f} / {a['max'] * 1000:.0f} ms; "
            f"{len(f['producer_slow_acks'])} spans of acks > 0.5 s",
        )
        table.add_row(
            "  consumer pauses > 0.5 s (no message processed)",
            ", ".join(f"{g['start_utc']} {g['worst_s']:.1f} s" for g in f["consumer_gaps"]) or "none",
        )
        table.add_row(
            "  sink writes",
            f"{f['sink_writes']}, {f['sink_write_ms_p50']:.0f} ms p50, "
            f"{f['sink_write_ms_max']:.0f} ms max (Parquet merge + Redis, both views)",
        )
        table.add_row("rejects", ", ".join(f"{k}={v}" for k, v in f["rejects"].items()) or "none")
    return table


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller run: 50,000 trades, 2 minutes live")
    parser.add_argument("--trades", type=int, help="trades in the throughput run (default 200,000; quick 50,000)")
    parser.add_argument("--pairs", type=int, default=len(THROUGHPUT_PAIRS), help="pairs in the throughput run (<=4)")
    parser.add_argument(
        "--repeat", type=int, help="reference + end-to-end repetitions, median reported (default 3; quick 1)"
    )
    parser.add_argument("--live-seconds", type=float, help="length of the live run (default 240; quick 120)")
    parser.add_argument(
        "--live-runs",
        type=int,
        default=1,
        help="freshness runs in a row on one broker and one trades topic (its history grows from run to run)",
    )
    parser.add_argument("--live-pairs", type=int, default=10, help=f"pairs of the live run (<= {len(LIVE_PAIRS)})")
    parser.add_argument("--live-rate", type=float, default=1000.0, help="trades per second of the live run, in all")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="Feast polling period of the live run")
    parser.add_argument(
        "--warmup-s", type=float, default=2.0, help="ignore candles whose window ended before the app consumed + this"
    )
    parser.add_argument(
        "--phases",
        default="reference,quix-window,end-to-end,freshness",
        help="comma-separated subset of reference,quix-window,end-to-end,freshness,broker-history "
        "(the embedded broker's fetch time against its history; not in the default)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a Settings field for a what-if run, e.g. --set commit_interval_s=0.1 "
        "(not the isolation fields: topics, groups, ports, paths, Redis, Feast project)",
    )
    parser.add_argument(
        "--consumer-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what-if librdkafka consumer setting of the benchmarked apps, e.g. fetch.wait.max.ms=20",
    )
    parser.add_argument("--broker-port", type=int, default=19192, help="port of the bench's own embedded broker")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = phases - {"reference", "quix-window", "end-to-end", "freshness", "broker-history"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    n_trades = args.trades or (50_000 if args.quick else 200_000)
    live_s = args.live_seconds or (120.0 if args.quick else 240.0)
    repeat = max(1, args.repeat or (1 if args.quick else 3))
    pairs = dict(list(THROUGHPUT_PAIRS.items())[: max(1, min(args.pairs, len(THROUGHPUT_PAIRS)))])
    live_pairs = LIVE_PAIRS[: max(1, min(args.live_pairs, len(LIVE_PAIRS)))]

    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in keyword_names():
            parser.error(f"--set wants NAME=VALUE with a setting's name (its variable without COINFLOW_), not {item!r}")
        if name in ISOLATION_FIELDS or name == "log_level":
            parser.error(f"--set cannot change {name}: the bench isolates it")
        overrides[name] = value

    consumer_extra = {}
    for item in args.consumer_set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--consumer-set wants KEY=VALUE, not {item!r}")
        consumer_extra[name] = value

    tag = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="coinflow-bench-"))
    results: dict = {"quick": args.quick, "machine": machine_info(), "tag": tag}
    settings = bench_settings(tmp, tag, args.broker_port, args.log_level, overrides)
    configure_logging(settings.services.log_level)
    results["settings"] = {
        "commit_interval_s": settings.stream.commit_interval_s,
        "window_grace_ms": settings.stream.window_grace_ms,
        "processing_guarantee": settings.stream.processing_guarantee,
        "candle_interval": settings.stream.candle_interval,
        "broker": f"embedded Tansu 127.0.0.1:{settings.services.embedded_broker_port}",
        "overrides": overrides,
        "consumer_extra": consumer_extra,
    }
    console.print(f"[bold]coinflow bench[/bold] {tag}: temp dir {tmp}")
    broker_started = False
    try:
        broker = services.ensure_broker(settings)
        broker_started = True
        services.ensure_redis(settings)
        with contextlib.redirect_stdout(sys.stderr if args.log_level.upper() == "DEBUG" else open(os.devnull, "w")):
            apply_feature_repo(settings)  # Feast prints what it deploys
        clear_online_rows(settings)

        if phases & {"reference", "quix-window", "end-to-end"}:
            tp = phase_settings(settings, "tp")
            base = base_trades()
            per_pair = n_trades // len(pairs)
            files = {}
            console.print(f"Writing {per_pair * len(pairs):,} trades to {len(pairs)} CSV files ...")
            for pair, scale in pairs.items():
                files[pair] = tmp / f"trades_{pair.replace('/', '')}.csv"
                write_tiled_csv(files[pair], base, per_pair, scale)
            run_id = uuid.uuid4().hex
            console.print("Pre-loading them into the trades topic ...")
            loaded = preload_trades(tp, broker, files, run_id)
            results["input"] = {
                **loaded,
                "pairs": len(pairs),
                "base_trades": len(base),
                "repetitions": -(-per_pair // len(base)),
            }
            console.print(f"  {loaded['trades']:,} trades in {loaded['seconds']:.1f} s")
            timeout = 120 + loaded["trades"] / 200
            ref_runs, window_runs, e2e_runs = [], [], []
            for k in range(repeat):
                # Each repetition: fresh consumer groups, downstream topics and stores; the same pre-loaded trades.
                rep = tp.override(
                    candles_topic=f"{tp.topics.candles}-{k}",
                    features_topic=f"{tp.topics.features}-{k}",
                    dead_letter_topic=f"{tp.topics.dead_letters}-{k}",
                    consumer_group=f"{tp.stream.consumer_group}-{k}",
                )
                label = f" (run {k + 1}/{repeat})" if repeat > 1 else ""
                if "reference" in phases:
                    console.print(f"Reference: bare pass-through{label} ...")
                    ref_runs.append(run_reference(rep, broker, loaded["messages"], timeout, consumer_extra))
                    console.print(f"  {ref_runs[-1]['rate']:,.0f} msgs/s")
                if "quix-window" in phases:
                    console.print(f"Reference: Quix tumbling window candles{label} ...")
                    window_runs.append(
                        run_reference(rep, broker, loaded["messages"], timeout, consumer_extra, kind="quix-window")
                    )
                    console.print(f"  {window_runs[-1]['rate']:,.0f} trades/s")
                if "end-to-end" in phases:
                    reset_stores(rep)
                    console.print(f"End to end: candles, indicators, Feast online + offline{label} ...")
                    e2e_runs.append(
                        run_end_to_end(rep, broker, run_id, set(pairs), loaded["trades"], timeout, consumer_extra)
                    )
                    console.print(f"  {e2e_runs[-1]['rate']:,.0f} trades/s")
            if ref_runs:
                results["reference"] = {**_median_run(ref_runs), "runs": [r["rate"] for r in ref_runs]}
            if window_runs:
                results["quix_window"] = {**_median_run(window_runs), "runs": [r["rate"] for r in window_runs]}
            if e2e_runs:
                results["end_to_end"] = {**_median_run(e2e_runs), "runs": [r["rate"] for r in e2e_runs]}
            if ref_runs and e2e_runs:
                results["ratios"] = [e["rate"] / r["rate"] for r, e in zip(ref_runs, e2e_runs, strict=False)]

        if "freshness" in phases:
            fr = phase_settings(settings, "live")
            console.print(
                f"Freshness: {args.live_rate:,.0f} trades/s over {len(live_pairs)} pairs for {live_s:.0f} s ..."
            )
            runs = []
            for k in range(max(1, args.live_runs)):
                runs.append(
                    run_freshness(
                        fr,
                        broker,
                        live_pairs,
                        args.live_rate,
                        live_s,
                        args.poll_ms / 1000,
                        args.warmup_s,
                        consumer_extra,
                        first_trade_id=1 + k * RUN_ID_SPAN,
                    )
                )
                if args.live_runs > 1:
                    console.print(f"  run {k + 1}/{args.live_runs}: {_freshness_line(runs[-1])}")
            results["freshness"] = runs[0]
            if len(runs) > 1:
                results["freshness_runs"] = runs
        if "broker-history" in phases:
            console.print("Broker history: fetch time of the newest record against the batches a partition holds ...")
            results["broker_history"] = run_broker_history(phase_settings(settings, "history"), broker)
    finally:
        clear_online_rows(settings)
        if broker_started:
            services.stop_services(settings)
        if args.keep:
            console.print(f"Kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    results["load_end"] = os.getloadavg()[0]
    console.print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
