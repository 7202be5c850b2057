"""The embedded broker's fetch cost grows with a partition's history; the project's fetch wait outlasts it, a short
wait stalls, and the history watch measures it: on the real embedded broker."""

from __future__ import annotations

import logging
import math
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from coinflow import services
from coinflow.embedded_broker import HistoryWatch, newest_record_fetch_s
from coinflow.settings import Settings

BATCHES = 40_000


@pytest.fixture(scope="module")
def long_partition(base_settings: Settings) -> tuple[str, str]:
    """A topic of one partition holding BATCHES batches of one record each, on the session's embedded broker."""
    address = services.ensure_broker(base_settings).address
    topic = f"history-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": address})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer(
        {"bootstrap.servers": address, "batch.num.messages": 1, "linger.ms": 0, "enable.idempotence": False}
    )
    for i in range(BATCHES):
        while True:
            try:
                producer.produce(topic, key=b"k", value=b"%d" % i)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return address, topic


def test_the_project_wait_gets_the_newest_record_of_a_long_history_where_a_short_wait_stalls(long_partition):
    address, topic = long_partition
    assert newest_record_fetch_s(address, topic, 0) < 5
    # Every fetch of the short wait ends before the broker has listed the partition: no record, ever.
    assert math.isinf(newest_record_fetch_s(address, topic, 0, wait_ms=2, give_up_s=3))


def test_a_short_partition_answers_a_short_wait_and_an_empty_one_is_not_measured(long_partition):
    address, _ = long_partition
    empty = f"history-empty-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": address})
    admin.create_topics([NewTopic(empty, 1, 1)])[empty].result(30)
    assert newest_record_fetch_s(address, empty, 0) is None
    assert newest_record_fetch_s(address, _one_record_topic(address), 0, wait_ms=2, give_up_s=3) < 3


def test_the_watch_sets_the_gauge_and_warns_once_while_the_fetch_is_slow(long_partition, caplog):
    address, topic = long_partition
    watch = HistoryWatch(address, [topic], wait_ms=0)  # every fetch is slow against no wait
    with caplog.at_level(logging.WARNING, logger="coinflow.embedded_broker"):
        seconds = watch.check(topic, 0)
        watch.check(topic, 0)
    assert seconds is not None and math.isfinite(seconds)
    gauge = _gauge(topic)
    assert gauge is not None and gauge > 0
    warnings = [r for r in caplog.records if f"{topic}[0]" in r.getMessage()]
    assert len(warnings) == 1


def test_the_watch_measures_while_a_run_lasts(long_partition):
    address, _ = long_partition
    topic = _one_record_topic(address)
    with HistoryWatch(address, [topic], interval_s=0.2):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _gauge(topic) is None:
            time.sleep(0.1)
    assert _gauge(topic) is not None


def _gauge(topic: str) -> float | None:
    return REGISTRY.get_sample_value("coinflow_embedded_broker_fetch_seconds", {"topic": topic, "partition": "0"})


def _one_record_topic(address: str) -> str:
    topic = f"history-short-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": address})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": False})
    producer.produce(topic, value=b"one")
    assert producer.flush(30) == 0
    return topic
