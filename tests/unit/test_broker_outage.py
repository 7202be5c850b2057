"""What keeps a pipeline going while its broker is away, and what stops a source it fails: no services."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from quixstreams.models.topics import Topic

from coinflow.exchange_files import read_trades_csv
from coinflow.quality import Rejects
from coinflow.services import Broker
from coinflow.settings import Settings
from coinflow.streaming import commit_riding_out_outages, outage_config
from feature_pipeline.sources.kraken_rest import KrakenRestSource, load_checkpoint
from tests.support.fake_kraken import PAIR, FakeKraken
from tests.support.paths import KRAKEN_TRADES_CSV

EMBEDDED = Broker("127.0.0.1:19092", "abc", embedded=True)
EXTERNAL = Broker("kafka:9092", "external", embedded=False)


def _settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def test_live_runs_keep_records_until_the_broker_is_back_and_finite_ones_for_the_wait():
    live = outage_config(_settings(source_buffer_messages=5000), EMBEDDED, wait_s=None)
    assert live["message.timeout.ms"] == 0  # librdkafka: never time out
    assert live["queue.buffering.max.messages"] == 5000
    assert live["max.in.flight.requests.per.connection"] == 1  # retries keep the order
    assert live["allow.auto.create.topics"] is False
    assert outage_config(_settings(), EMBEDDED, wait_s=30)["message.timeout.ms"] == 30_000


def test_idempotence_is_off_only_on_the_embedded_broker_which_forgets_producer_ids():
    assert outage_config(_settings(), EMBEDDED, None)["enable.idempotence"] is False
    assert "enable.idempotence" not in outage_config(_settings(), EXTERNAL, None)


def test_exactly_once_keeps_the_message_timeout_within_the_transaction_timeout():
    config = outage_config(_settings(processing_guarantee="exactly-once"), EXTERNAL, wait_s=300)
    assert config["message.timeout.ms"] == 60_000


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    ],
)
def test_a_commit_failing_because_the_broker_is_away_is_skipped(code, caplog):
    def commit(**_):
        raise KafkaException(KafkaError(code))

    with caplog.at_level(logging.WARNING, logger="coinflow.streaming"):
        assert commit_riding_out_outages(commit)(offsets=[TopicPartition("t", 0, 5)], asynchronous=False) is None
    assert any("Offsets not committed" in r.getMessage() for r in caplog.records)


def test_other_commit_failures_still_raise():
    def commit(**_):
        raise KafkaException(KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE))

    with pytest.raises(KafkaException):
        commit_riding_out_outages(commit)(offsets=[TopicPartition("t", 0, 5)], asynchronous=False)


def test_a_successful_commit_is_returned_as_it_is():
    committed = [TopicPartition("t", 0, 5)]
    assert commit_riding_out_outages(lambda **_: committed)(offsets=committed, asynchronous=False) is committed


class _UnreachableProducer:
    """A producer whose broker takes nothing: every flush leaves records undelivered."""

    def __init__(self) -> None:
        self.messages = 0

    def produce(self, *_: object, **__: object) -> None:
        self.messages += 1

    def flush(self, timeout: float | None = None) -> int:
        return self.messages


def test_a_resumable_source_stops_without_recording_progress_past_records_the_broker_did_not_take(tmp_path, caplog):
    # Served as Kraken's own trades (the exchange's ids), as in test_kraken_rest.
    trades = [
        {k: v for k, v in t.items() if k != "id_space"} for t in read_trades_csv(KRAKEN_TRADES_CSV, PAIR, Rejects("t"))
    ]
    checkpoint = tmp_path / "backfill.json"
    source = KrakenRestSource(
        [PAIR],
        days=365 * 40,
        checkpoint_path=checkpoint,
        dead_letter_topic="dead-letters",
        close_after_ms=60_000,
        run_id="run-1",
        min_interval_s=0.0,
        progress=False,
        transport=FakeKraken(trades[:250], page_size=100).transport(),
    )
    producer = _UnreachableProducer()
    source.configure(Topic("trades", key_serializer="string", value_serializer="json"), producer)
    with caplog.at_level(logging.ERROR, logger="feature_pipeline.sources.base"):
        source.start()

    assert producer.messages == 100  # the first page, then no further page and no end marker
    assert PAIR not in load_checkpoint(checkpoint)
    assert not source.running
    assert [r.getMessage() for r in caplog.records if "the source stops" in r.getMessage()] == [
        "kraken-rest-trades: the broker did not take the records in time (100 records not delivered: "
        "'100' messages failed to be produced before the producer flush timeout); the source stops"
    ]
