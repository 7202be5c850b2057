"""The embedded broker's fetch cost, the client settings that bound it, and a watch that says when it runs out.

The embedded broker (Tansu 0.6, memory engine) keeps every produced batch as
one object, and a fetch of a partition that has new records lists all of that
partition's batch objects since the broker started, stopping when the fetch's
max wait runs out. A listing longer than the wait answers the fetch with no
records; the consumer asks again at once, gets none again, and stalls for as
long as the listing outlasts the wait. The cost grows with the partition's
history (measured: `bench.bench_feature_pipeline --phases broker-history`), and
the memory engine never deletes a batch (retention and DeleteRecords are not
implemented there), so only a restart of the broker shortens it.

The client settings bound it: sources' producers, which carry the traffic,
batch for `EMBEDDED_SOURCE_LINGER_MS` (fewer objects per second of it; the
applications' own producers write a few records a second and keep librdkafka's
short linger, which is what freshness needs), and consumers wait `EMBEDDED_FETCH_WAIT_MS`,
which leaves the listing of hours of history time to finish. Tansu answers a
fetch as soon as one of its partitions has records, so the wait only adds
latency when the consumer is caught up (the broker looks again at half the
remaining wait). `HistoryWatch` measures the fetch of the newest record of each
topic while a pipeline runs, and warns before it reaches the wait.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Gauge

logger = logging.getLogger(__name__)

EMBEDDED_SOURCE_LINGER_MS = 50
EMBEDDED_FETCH_WAIT_MS = 200
EMBEDDED_SESSION_TIMEOUT_MS = 6000

FETCH_SECONDS = Gauge(
    "coinflow_embedded_broker_fetch_seconds",
    "Time the embedded broker took to fetch the newest record of a topic partition (grows with its history).",
    ["topic", "partition"],
)


def embedded_consumer_config() -> dict[str, Any]:
    """librdkafka consumer settings for the embedded broker (see the module's docstring).

    Tansu holds a JoinGroup for half the session timeout, so a short session
    timeout keeps a command's start-up quick (about 3 s).
    """
    return {"session.timeout.ms": EMBEDDED_SESSION_TIMEOUT_MS, "fetch.wait.max.ms": EMBEDDED_FETCH_WAIT_MS}


def embedded_changelog_producer_config() -> dict[str, Any]:
    """Producer settings under which Quix can recover state from changelog topics on the embedded broker.

    Tansu 0.6 answers ListOffsets with the base offset of a partition's newest
    batch plus one, not the offset after its last record; Quix reads a
    changelog up to that high watermark and would miss the rest of the last
    batch. With one record per batch the two are the same. It costs a batch
    per record (the history that every fetch lists), which an application's
    own producer can afford: it writes candles and, at each checkpoint, one
    changelog record per changed key (a pair's state), not the trades.
    """
    return {"batch.num.messages": 1}


def newest_record_fetch_s(
    address: str, topic: str, partition: int, wait_ms: int = EMBEDDED_FETCH_WAIT_MS, give_up_s: float = 10.0
) -> float | None:
    """Seconds a fresh consumer with a fetch wait of `wait_ms` takes to get the newest batch of a partition.

    None when the partition is empty; infinity when nothing came within
    `give_up_s` (the stall itself). Tansu's ListOffsets answers the base offset
    of the newest batch plus one, so the record asked for is the first of that
    batch.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"coinflow-history-watch-{uuid.uuid4().hex[:8]}",
            "fetch.wait.max.ms": wait_ms,
            "enable.auto.commit": False,
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5, cached=False)
        if high <= 0:
            return None
        consumer.assign([TopicPartition(topic, partition, high - 1)])
        started = time.perf_counter()
        while time.perf_counter() - started < give_up_s:
            message = consumer.poll(0.05)
            if message is not None and not message.error():
                return time.perf_counter() - started
        return math.inf
    finally:
        consumer.close()


def history_warning(
    topic: str, partition: int, seconds: float | None, wait_ms: int = EMBEDDED_FETCH_WAIT_MS
) -> str | None:
    """The warning for one measured fetch, or None while it stays under half the consumers' wait."""
    if seconds is None or seconds * 1000 < wait_ms / 2:
        return None
    took = "got no record within the probe's limit" if math.isinf(seconds) else f"took {seconds * 1000:.0f} ms"
    return (
        f"The embedded broker's fetch of the newest record of {topic}[{partition}] {took}: every fetch lists the "
        f"partition's whole history, and a fetch that needs more than {wait_ms} ms returns nothing (the consumer "
        "stalls). Restart the broker (make down, make up: its topics are forgotten) or use Kafka or Redpanda "
        "(KAFKA_BROKER_ADDRESS)."
    )


class HistoryWatch:
    """While a run lasts, every `interval_s` measures the fetch of each topic partition's newest record on the
    embedded broker (gauge `coinflow_embedded_broker_fetch_seconds`) and logs `history_warning` against the
    consumers' fetch wait `wait_ms`, once per partition until it is fast again. Use as a context manager."""

    def __init__(
        self, address: str, topics: list[str], interval_s: float = 60.0, wait_ms: int = EMBEDDED_FETCH_WAIT_MS
    ) -> None:
        self._address = address
        self._wait_ms = wait_ms
        self._topics = topics
        self._interval_s = interval_s
        self._warned: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="broker-history-watch", daemon=True)

    def __enter__(self) -> HistoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def check(self, topic: str, partition: int) -> float | None:
        """Measure one partition, set its gauge and warn if it is slow; the measured seconds."""
        seconds = newest_record_fetch_s(self._address, topic, partition)
        if seconds is not None:
            FETCH_SECONDS.labels(topic, str(partition)).set(seconds)
        warning = history_warning(topic, partition, seconds, self._wait_ms)
        key = (topic, partition)
        if warning is None:
            self._warned.discard(key)
        elif key not in self._warned:
            self._warned.add(key)
            logger.warning(warning)
        return seconds

    def _partitions(self) -> list[tuple[str, int]]:
        consumer = Consumer({"bootstrap.servers": self._address, "group.id": "coinflow-history-watch"})
        try:
            metadata = consumer.list_topics(timeout=5)
        finally:
            consumer.close()
        return [
            (name, partition)
            for name in self._topics
            if name in metadata.topics
            for partition in metadata.topics[name].partitions
        ]

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                for topic, partition in self._partitions():
                    if self._stop.is_set():
                        return
                    self.check(topic, partition)
            except Exception as exc:  # noqa: BLE001 - the broker is away or restarting; the next round measures again
                logger.debug("The broker history watch could not measure (%s)", exc)
