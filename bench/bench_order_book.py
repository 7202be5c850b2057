"""Benchmark of the order-book pipeline: level updates per second in the book, and end to end through the broker.

    .venv/bin/python -m bench.bench_order_book [--quick]

Input: the real recorded Coinbase session (data/coinbase/...jsonl.gz: a
snapshot of about 23,000 levels, then 374 level2 updates). It is replayed in a
loop: after each pass an update that takes the book back to the snapshot's
levels (the difference between the two books) keeps the book a valid one,
so the next pass's updates apply to the state they were recorded against;
times move on by the session's length each pass.

1. Book structure (one core, in process): `OrderBook.apply` over the looped
   levels (exact Decimals, parsed beforehand), and the same with parsing each
   recorded frame (`coinbase_protocol.parse_message`) included.
2. End to end: the looped session, as the Coinbase source's `BookGate` emits
   it (normalised frames), is pre-loaded into a book-updates topic; then the
   project's book dataflow (`build_book_dataflow` + `FeastSink` +
   `Completion`, Feast online and offline) runs over it until the end marker
   is written. The rate is level updates applied / (first message consumed ->
   end marker written); a bare Quix pass-through over the same topic is the
   reference.

Isolated like bench_feature_pipeline: its own Tansu broker (port 19792),
topics, consumer groups, run dir, Redis db 3, Feast project "bench_books" and
a temporary copy of feature_repo/, all removed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from rich.table import Table

from bench.bench_feature_pipeline import (
    Clock,
    CpuMeter,
    _cpu,
    _produce,
    clear_online_rows,
    console,
    copy_feature_repo,
    machine_info,
    watchdog,
)
from coinflow import services
from coinflow.books import Level, OrderBook, book_key
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.logs import configure_logging
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from coinflow.streaming import new_application, topic_config
from feature_pipeline.books.dataflow import book_topics, build_book_dataflow, on_book_end
from feature_pipeline.runtime import Completion
from feature_pipeline.sinks.feast_sink import FeastSink, single_view
from feature_pipeline.sources.book_source import BookGate
from feature_pipeline.sources.coinbase_protocol import parse_message
from feature_pipeline.sources.coinbase_replay_server import read_session
from feature_repo.names import ORDERBOOK_VIEW

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "data" / "coinbase" / "advanced_trade_ETH-USD_2026-08-09.jsonl.gz"
PRODUCT = "ETH-USD"
TARGET_BOOK = 200_000
TARGET_E2E = 20_000

logger = logging.getLogger("bench")


# --------------------------------------------------------------------------- input


def session_events() -> tuple[list[str], list[tuple[bool, list[Level], list[Level], int]]]:
    """The session's level2 frames (raw text) and their events (snapshot?, bids, asks, timestamp ms)."""
    texts, events = [], []
    for frame in read_session(SESSION):
        if '"l2_data"' not in frame.data:
            continue
        message = parse_message(frame.data)
        texts.append(frame.data)
        events += [(e.snapshot, e.bids, e.asks, message.timestamp_ms) for e in message.books]
    return texts, events


def back_to(book: OrderBook, target: OrderBook) -> tuple[list[Level], list[Level]]:
    """The level changes that turn ``book`` into ``target``."""

    def diff(side: str) -> list[Level]:
        have, want = getattr(book, side), getattr(target, side)
        changes = [(p, q) for p, q in want.items() if have.get(p) != q]
        return changes + [(p, Decimal(0)) for p in have if p not in want]

    return diff("bids"), diff("asks")


def looped(events, passes: int):
    """(snapshot?, bids, asks, timestamp) over ``passes`` passes of the session, each ending back at the snapshot."""
    snapshot = OrderBook()
    snapshot.apply(events[0][1], events[0][2])
    book = OrderBook()
    book.apply(events[0][1], events[0][2])
    for _, bids, asks, _ in events[1:]:
        book.apply(bids, asks)
    closing = back_to(book, snapshot)
    span = events[-1][3] - events[0][3] + 1000
    yield events[0]
    for n in range(passes):
        shift = n * span
        for _, bids, asks, ts in events[1:]:
            yield False, bids, asks, ts + shift
        yield False, closing[0], closing[1], events[-1][3] + shift + 500


# --------------------------------------------------------------------------- 1. the book structure


def bench_book(events, texts: list[str], min_seconds: float) -> dict:
    passes = 1
    while True:
        sequence = list(looped(events, passes))
        levels = sum(len(b) + len(a) for snap, b, a, _ in sequence if not snap)
        book = OrderBook()
        book.apply(sequence[0][1], sequence[0][2])
        started = time.perf_counter()
        for _, bids, asks, _ in sequence[1:]:
            book.apply(bids, asks)
        seconds = time.perf_counter() - started
        if seconds >= min_seconds:
            break
        passes *= 2
    assert not book.crossed()
    updates = texts[1:]
    started = time.perf_counter()
    parsed_levels = 0
    while time.perf_counter() - started < min_seconds:
        book = OrderBook()
        for text in updates:
            for event in parse_message(text).books:
                parsed_levels += book.apply(event.bids, event.asks)
    parse_seconds = time.perf_counter() - started
    return {
        "passes": passes,
        "levels": levels,
        "seconds": seconds,
        "rate": levels / seconds,
        "parse_levels": parsed_levels,
        "parse_seconds": parse_seconds,
        "parse_rate": parsed_levels / parse_seconds,
        "book_levels": len(book),
    }


# --------------------------------------------------------------------------- 2. end to end


def bench_settings(tmp: Path, tag: str, port: int, log_level: str) -> Settings:
    return Settings(
        kafka_broker_address=None,
        embedded_broker_port=port,
        redis_url="redis://127.0.0.1:6379/3",
        run_dir=tmp / "run",
        feature_repo_path=copy_feature_repo(tmp / "feature_repo"),
        feast_project="bench_books",
        feast_registry_path=None,
        book_updates_topic=f"bench-{tag}-book-updates",
        book_topic=f"bench-{tag}-book",
        dead_letter_topic=f"bench-{tag}-dead-letters",
        book_consumer_group=f"bench-{tag}-books",
        metrics_port=0,
        log_level=log_level,
        _env_file=None,
    )


def preload(settings: Settings, broker: services.Broker, events, passes: int, run_id: str) -> dict:
    """The looped session through the source's integrity gate into the book-updates topic, then an end marker."""
    from confluent_kafka import Producer

    app = new_application(settings, broker, consumer_group=f"{settings.books.consumer_group}-setup")
    topic = book_topics(app, settings).updates
    producer = Producer(
        {
            "bootstrap.servers": broker.address,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.max.bytes": 2_000_000,
        }
    )
    counts = {"messages": 0, "update_levels": 0, "snapshot_levels": 0}

    def emit(key: str, record: dict) -> None:
        _produce(producer, topic.name, key.encode(), json.dumps(record).encode(), record["timestamp_ms"])
        counts["messages"] += 1
        if counts["messages"] % 10_000 == 0:
            producer.poll(0)

    gate = BookGate("coinbase", emit, lambda product, reason: None)
    started = time.perf_counter()
    last_ts = 0
    for snapshot, bids, asks, ts in looped(events, passes):
        if snapshot:
            gate.snapshot(PRODUCT, bids, asks, ts)
            counts["snapshot_levels"] += len(bids) + len(asks)
        else:
            gate.update(PRODUCT, bids, asks, ts)
            counts["update_levels"] += len(bids) + len(asks)
        last_ts = ts
    emit(
        book_key("coinbase", PRODUCT),
        {"control": CONTROL_END, "exchange": "coinbase", "product": PRODUCT, "timestamp_ms": last_ts, "run_id": run_id},
    )
    left = producer.flush(60)
    if left or gate.resyncs:
        raise RuntimeError(f"preload failed: {left} undelivered, resyncs {dict(gate.resyncs)}")
    return {**counts, "seconds": time.perf_counter() - started, "span_s": (last_ts - events[0][3]) / 1000}


def run_reference(settings: Settings, broker: services.Broker, messages: int, timeout_s: float) -> dict:
    meter = CpuMeter(settings)
    clock = Clock(stop_after=messages, meter=meter)
    app = new_application(
        settings, broker, consumer_group=f"{settings.books.consumer_group}-reference", on_message_processed=clock
    )
    clock.app = app
    config = topic_config(settings)
    source = app.topic(
        settings.topics.book_updates, value_deserializer="bytes", key_deserializer="bytes", config=config
    )
    target = app.topic(
        f"{settings.topics.book_updates}-passthrough", value_serializer="bytes", key_serializer="bytes", config=config
    )
    app.dataframe(source).to_topic(target)
    with watchdog(timeout_s, app.stop, "The reference pass-through") as fired:
        app.run()
    seconds = (clock.last or time.perf_counter()) - (clock.first or time.perf_counter())
    return {
        "messages": clock.count,
        "seconds": seconds,
        "rate": clock.count / seconds if seconds > 0 else 0.0,
        "timed_out": fired.is_set(),
        "cpu": meter.result,
    }


def run_end_to_end(settings: Settings, broker: services.Broker, run_id: str, levels: int, timeout_s: float) -> dict:
    meter = CpuMeter(settings)
    clock = Clock(meter=meter)
    started = time.perf_counter()
    app = new_application(settings, broker, consumer_group=settings.books.consumer_group, on_message_processed=clock)
    done: dict[str, float] = {}

    def stop() -> None:
        done["t"] = time.perf_counter()
        meter.stop()
        app.stop()

    completion = Completion(run_id, {book_key("coinbase", PRODUCT)}, stop)
    sink = FeastSink(
        lambda: feature_store(settings),
        single_view(ORDERBOOK_VIEW),
        retries=settings.stream.sink_retries,
        on_end=on_book_end(completion.on_end),
    )
    rejects, processor = build_book_dataflow(app, book_topics(app, settings), settings, sink)
    with watchdog(timeout_s, app.stop, "The end-to-end run") as fired:
        app.run()
    seconds = done.get("t", time.perf_counter()) - (clock.first or started)
    return {
        "messages": clock.count,
        "level_updates": processor.level_updates,
        "seconds": seconds,
        "rate": processor.level_updates / seconds if seconds > 0 else 0.0,
        "update_rate": levels / seconds if seconds > 0 else 0.0,
        "completed": "t" in done and not fired.is_set(),
        "rows": dict(sink.rows_written),
        "rejects": dict(rejects.counts),
        "cpu": meter.result,
        "startup_s": (clock.first or started) - started,
    }


# --------------------------------------------------------------------------- report


def report(machine: dict, book: dict, pre: dict | None, ref: dict | None, e2e: dict | None) -> Table:
    table = Table(title="order-book pipeline benchmark", show_lines=False)
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_column("notes")
    table.add_row(
        "machine",
        f"{machine['cores_usable']} of {machine['cores']} cores",
        f"{machine['cpu_model']}, {machine['ram_gib']} GiB, load {machine['load_start']:.2f}, "
        f"Python {machine['python']}, quixstreams {machine['quixstreams']}, feast {machine['feast']}",
    )
    ok = book["rate"] >= TARGET_BOOK
    table.add_row(
        "book structure: level updates/s (1 core)",
        f"{book['rate']:,.0f}",
        f"{'PASS' if ok else 'FAIL'} target >= {TARGET_BOOK:,}; {book['levels']:,} levels, "
        f"{book['passes']} passes of the session in {book['seconds']:.2f} s",
    )
    table.add_row(
        "  with frame parsing (JSON + Decimal)",
        f"{book['parse_rate']:,.0f}",
        f"{book['parse_levels']:,} levels of the recorded update frames",
    )
    if pre:
        table.add_row(
            "input (pre-loaded)",
            f"{pre['messages']:,} messages",
            f"{pre['update_levels']:,} update levels + one {pre['snapshot_levels']:,}-level snapshot, "
            f"{pre['span_s'] / 60:.1f} min of session time",
        )
    if ref:
        table.add_row("reference: bare Quix pass-through", f"{ref['rate']:,.0f} msg/s", _cpu(ref["cpu"]))
    if e2e:
        ok = e2e["completed"] and e2e["update_rate"] >= TARGET_E2E
        msg_rate = e2e["messages"] / e2e["seconds"] if e2e["seconds"] else 0.0
        ratio = f", {msg_rate / ref['rate']:.2f}x the reference's msg/s" if ref and ref["rate"] else ""
        table.add_row(
            "end to end: update levels/s -> book records",
            f"{e2e['update_rate']:,.0f}",
            f"{'PASS' if ok else 'FAIL'} target >= {TARGET_E2E:,}; {msg_rate:,.0f} msg/s{ratio}; "
            f"all levels incl. snapshot {e2e['rate']:,.0f}/s; {e2e['seconds']:.1f} s "
            f"(+{e2e['startup_s']:.1f} s start-up); rows {e2e['rows']}; rejects {e2e['rejects'] or 0}; "
            f"{_cpu(e2e['cpu'])}",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer passes (about 1 minute).")
    parser.add_argument(
        "--passes", type=int, default=None, help="Passes of the session end to end (default 200, quick 50)."
    )
    parser.add_argument("--port", type=int, default=19792, help="Port of the bench's own embedded broker.")
    parser.add_argument("--book-only", action="store_true", help="Only the in-process book structure.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory.")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    machine = machine_info()
    texts, events = session_events()
    book = bench_book(events, texts, min_seconds=1.0 if args.quick else 3.0)
    pre = ref = e2e = None
    if not args.book_only:
        tmp = Path(tempfile.mkdtemp(prefix="bench-books-"))
        settings = bench_settings(tmp, uuid.uuid4().hex[:8], args.port, args.log_level)
        try:
            broker = services.ensure_broker(settings)
            services.ensure_redis(settings)
            apply_feature_repo(settings)
            run_id = uuid.uuid4().hex
            pre = preload(settings, broker, events, args.passes or (50 if args.quick else 200), run_id)
            ref = run_reference(settings, broker, pre["messages"], timeout_s=300)
            e2e = run_end_to_end(settings, broker, run_id, pre["update_levels"], timeout_s=600)
        finally:
            clear_online_rows(settings)
            services.stop_services(settings)
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
    console.print(report(machine, book, pre, ref, e2e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
