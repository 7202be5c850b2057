"""A job file on the real broker with Quix's state store: hooks in order, state per key, a raising record
dead-lettered and counted, and after a restart (a new application over the same state) recover called with each
key's restored state before its next record, the counts going on where they stopped."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from coinflow import services
from coinflow.jobs import PROCESS_ERROR, Job
from coinflow.settings import Settings
from feature_pipeline.run_job import job_application
from tests.support.feature_runs import read_topic

pytestmark = pytest.mark.integration

JOB = """
def setup(settings):
    return {"calls": [("setup",)]}

def process(record, state):
    if record.get("bad"):
        raise ValueError("a bug on this record")
    state.config["calls"].append(("process", state.key))
    count = state.get("count", 0) + 1
    state.set("count", count)
    return {"key": state.key, "n": record["n"], "count": count}

def recover(state):
    state.config["calls"].append(("recover", state.key, state.get("count")))
"""


def create_topic(settings: Settings, topic: str) -> None:
    """The input topic with the project's config (a broker's own defaults report no retention, which Quix needs)."""
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}"})
    config = {"retention.ms": str(settings.topics.retention_ms), "retention.bytes": "-1"}
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=config)]).values():
        future.result(30)


def produce(settings: Settings, topic: str, records: list[tuple[str, dict]]) -> None:
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}"})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
    producer.flush(30)


def run_once(settings: Settings, job: Job, source: str, output: str):
    broker = services.ensure_broker(settings)
    app, run, _ = job_application(settings, broker, job, source, output, consumer_group=settings.stream.consumer_group)
    app.run(timeout=5)
    return run


def test_a_job_keeps_state_per_key_dead_letters_a_bad_record_and_recovers_after_a_restart(settings, tmp_path):
    tag = uuid.uuid4().hex[:8]
    source, output = f"job-in-{tag}", f"job-out-{tag}"
    path = tmp_path / "counter.py"
    path.write_text(JOB)
    first = [("a", {"n": 1}), ("b", {"n": 2}), ("a", {"n": 3, "bad": True}), ("a", {"n": 4})]
    create_topic(settings, source)
    produce(settings, source, first)
    run = run_once(settings, Job.load(path), source, output)
    assert run.config["calls"] == [("setup",), ("process", "a"), ("process", "b"), ("process", "a")]
    assert run.rejects.counts == {PROCESS_ERROR: 1}
    dead = [json.loads(m.value()) for m in read_topic(settings, settings.topics.dead_letters)]
    assert [(d["stage"], d["reason"], json.loads(d["raw"])) for d in dead] == [
        ("job_counter", PROCESS_ERROR, {"n": 3, "bad": True})
    ]

    produce(settings, source, [("b", {"n": 5}), ("a", {"n": 6})])
    restarted = run_once(settings, Job.load(path), source, output)  # a new application over the same state
    assert restarted.config["calls"] == [
        ("setup",),
        ("recover", "b", 1),
        ("process", "b"),
        ("recover", "a", 2),
        ("process", "a"),
    ]
    rows = [(m.key().decode(), json.loads(m.value())) for m in read_topic(settings, output)]
    assert sorted(rows, key=lambda r: r[1]["n"]) == [
        ("a", {"key": "a", "n": 1, "count": 1}),
        ("b", {"key": "b", "n": 2, "count": 1}),
        ("a", {"key": "a", "n": 4, "count": 2}),
        ("b", {"key": "b", "n": 5, "count": 2}),
        ("a", {"key": "a", "n": 6, "count": 3}),
    ]
