"""The Quix Streams Application and topics, configured from Settings for every pipeline."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from quixstreams import Application
from quixstreams.error_callbacks import ProducerErrorCallback
from quixstreams.internal_producer import InternalProducer
from quixstreams.models import TopicConfig
from quixstreams.models.topics import Topic
from quixstreams.models.topics.admin import TopicAdmin

from coinflow.embedded_broker import (
    EMBEDDED_SOURCE_LINGER_MS,
    HistoryWatch,
    embedded_changelog_producer_config,
    embedded_consumer_config,
)
from coinflow.redact import redact
from coinflow.services import Broker, ServiceError, _kafka_healthy, stream_state_dir
from coinflow.settings import Settings

logger = logging.getLogger(__name__)

# Commit failures that only say the group coordinator is away, or forgot the group (a restarted broker).
_OUTAGE_ERRORS = frozenset(
    {
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)
_TRANSACTION_TIMEOUT_MS = 60_000  # librdkafka's default transaction.timeout.ms


def outage_error(error: KafkaError) -> bool:
    """Whether a Kafka error says only that the broker (or its group coordinator) is away or was restarted."""
    return error.code() in _OUTAGE_ERRORS or error.retriable()


Commit = Callable[..., list[TopicPartition] | None]


def commit_riding_out_outages(commit: Commit) -> Commit:
    """Wrap a consumer's ``commit`` so that a commit failing because the broker is away is skipped, not fatal.

    Quix stops the application on any failed offset commit. Under at-least-once
    a skipped commit loses nothing: the next checkpoint commits later offsets,
    and what stays uncommitted is read again after a restart, where every sink
    deduplicates. Other errors still raise.
    """

    def tolerant(*args: Any, **kwargs: Any) -> list[TopicPartition] | None:
        try:
            partitions = commit(*args, **kwargs)
        except KafkaException as exc:
            if not outage_error(exc.args[0]):
                raise
            logger.warning(
                "Offsets not committed, the broker is unreachable (%s); the next checkpoint commits them",
                exc.args[0].str(),
            )
            return None
        failed = [p.error for p in partitions or () if p.error]
        if failed and all(outage_error(error) for error in failed):
            logger.warning(
                "Offsets not committed, the broker is unreachable (%s); the next checkpoint commits them",
                failed[0].str(),
            )
            return [p for p in partitions or () if not p.error]
        return partitions

    return tolerant


class PipelineApplication(Application):
    """A Quix Application whose consumer rides out a broker outage instead of failing the run on a commit, and
    whose sources' producers can have settings of their own.

    Only the application's own consumer is wrapped: the sources' consumers
    are pickled to their processes and commit nothing. Quix gives sources a
    producer with the application's settings; given
    `source_producer_extra_config`, they get those instead (sources carry the
    traffic, the application's own producer a few records a second and its
    state changes, and the embedded broker wants the traffic in few batches and
    the changelogs in batches of one: `coinflow.embedded_broker`).
    """

    def __init__(self, *args: Any, source_producer_extra_config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._source_producer_extra_config = source_producer_extra_config or {}  # read while Quix builds producers
        super().__init__(*args, **kwargs)
        # Quix builds its consumer inside Application.__init__, so its commit is wrapped on the instance (the
        # wrapper keeps the signature); mypy refuses any assignment to a method.
        self._consumer.commit = commit_riding_out_outages(self._consumer.commit)  # type: ignore[method-assign]

    def _get_internal_producer(
        self, on_error: ProducerErrorCallback | None = None, transactional: bool | None = None
    ) -> InternalProducer:
        """Quix's producer. Quix asks for the application's own with `transactional` None, and for a source's
        (or a one-off state migration's) with False: those get the sources' settings."""
        if transactional is not False or not self._source_producer_extra_config:
            return super()._get_internal_producer(on_error=on_error, transactional=transactional)
        return InternalProducer(
            broker_address=self._config.broker_address,
            extra_config=dict(self._source_producer_extra_config),
            flush_timeout=self._config.flush_timeout,
            on_error=on_error,
            transactional=False,
        )

    @property
    def topics(self) -> list[Topic]:
        """The topics the application reads and writes (not the changelogs)."""
        return list(self._topic_manager.non_changelog_topics.values())

    @property
    def changelog_topics(self) -> list[Topic]:
        """The changelog topics of the application's state stores (none when changelogs are off)."""
        return list(self._topic_manager.changelog_topics_list)


class TopicKeeper:
    """While a run lasts, creates the application's topics again when the broker has lost them.

    The embedded broker keeps its topics in memory: started again, it knows
    none, and the running pipeline's consumer would wait on them silently
    while its sources' records find no topic. Checking the broker's topic list
    every ``interval_s`` and creating what is missing, with the project's
    config as at start-up, lets the pipeline carry on. Best effort: Tansu 0.6
    takes records for a partition a producer still knows before the topic
    exists again, and a topic then created over them refuses every later
    record (the sources count those as ``broker_refused``). A durable broker
    keeps its topics. Use as a context manager.
    """

    def __init__(self, app: PipelineApplication, interval_s: float = 1.0) -> None:
        self._app = app
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="topic-keeper", daemon=True)

    def __enter__(self) -> TopicKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _keep(self) -> None:
        admin = TopicAdmin(self._app.config.broker_address)
        while not self._stop.wait(self._interval_s):
            try:
                existing = admin.list_topics(timeout=2)
            except Exception:  # noqa: BLE001 - the broker is away; the next round looks again
                continue
            missing = [topic for topic in self._app.topics if topic.name not in existing]
            if not missing:
                continue
            logger.warning(
                "The broker lost the topics %s (restarted?); creating them again",
                ", ".join(topic.name for topic in missing),
            )
            try:
                admin.create_topics(missing, timeout=5)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                logger.warning("Could not create the topics again (%s)", exc)


def outage_config(settings: Settings, broker: Broker, wait_s: float | None) -> dict[str, Any]:
    """librdkafka producer settings that keep records while the broker is away, for ``wait_s`` (None: until it is back).

    Undelivered records wait in librdkafka's queue (at most
    ``source_buffer_messages``) and are retried, reconnecting with backoff, in
    the order produced (one request in flight per connection). Records are
    never sent to topics the broker would create itself: a memory broker
    restarted would create them with its own partition count. Tansu forgets
    producer ids when restarted, after which an idempotent producer retries
    forever (UNKNOWN_PRODUCER_ID), so idempotence is off on the embedded broker;
    consumers deduplicate what a retry repeats.
    """
    timeout_ms = 0 if wait_s is None else int(wait_s * 1000)
    if settings.stream.processing_guarantee == "exactly-once" and timeout_ms:
        timeout_ms = min(timeout_ms, _TRANSACTION_TIMEOUT_MS)  # librdkafka refuses a longer one with transactions
    config: dict[str, Any] = {
        "message.timeout.ms": timeout_ms,
        "queue.buffering.max.messages": settings.stream.source_buffer_messages,
        "max.in.flight.requests.per.connection": 1,
        "allow.auto.create.topics": False,
    }
    if broker.embedded:
        config["enable.idempotence"] = False
    return config


def source_producer_config(settings: Settings, broker: Broker, wait_s: float | None) -> dict[str, Any]:
    """`outage_config` for a producer of a source's traffic: on the embedded broker it batches
    `EMBEDDED_SOURCE_LINGER_MS`, which keeps the partitions' history short (`coinflow.embedded_broker`)."""
    config = outage_config(settings, broker, wait_s)
    if broker.embedded:
        config["linger.ms"] = EMBEDDED_SOURCE_LINGER_MS
    return config


def new_application(
    settings: Settings,
    broker: Broker,
    consumer_group: str | None = None,
    broker_wait_s: float | None = None,
    changelogs: bool | None = None,
    **overrides,
) -> PipelineApplication:
    """An Application on the given broker with the project's checkpointing and state location.

    When the broker goes away, the run waits ``broker_wait_s`` for it (None:
    until it is back; finite commands pass ``Settings.broker_wait_s``), then
    fails with `KafkaBrokerUnavailableError` or an undelivered record.

    State is kept in changelog topics on a real Kafka or Redpanda, so that a
    partition's state moves with it to another consumer of the group. On the
    embedded Tansu broker, by default, state lives only in the local RocksDB
    store (flushed at every checkpoint, tied to the broker's lifetime): its
    ListOffsets answers are right only for batches of one record, which the
    application's producer then writes (`embedded_changelog_producer_config`;
    ``changelogs=True``, as the scale-out workers ask). The embedded broker's
    consumers get `embedded_consumer_config`, and the sources' producers
    `source_producer_config`.
    """
    use_changelogs = not broker.embedded if changelogs is None else changelogs
    producer_overrides = overrides.pop("producer_extra_config", None) or {}
    own_producer = outage_config(settings, broker, broker_wait_s)
    if use_changelogs and broker.embedded:
        own_producer.update(embedded_changelog_producer_config())
    options: dict[str, Any] = dict(
        broker_address=broker.address,
        consumer_group=consumer_group or settings.stream.consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.stream.commit_interval_s,
        processing_guarantee=settings.stream.processing_guarantee,
        state_dir=stream_state_dir(settings, broker),
        loglevel=settings.services.log_level,
        # Topics are created with explicit configs (see `topic_config`); the
        # internal changelog/repartition topics inherit the broker's defaults.
        auto_create_topics=True,
        use_changelog_topics=use_changelogs,
        broker_availability_timeout=broker_wait_s or 0,
        producer_extra_config={**own_producer, **producer_overrides},
        source_producer_extra_config={
            "enable.idempotence": True,  # as Quix's default for its producers
            **source_producer_config(settings, broker, broker_wait_s),
            **producer_overrides,
        },
    )
    consumer = embedded_consumer_config() if broker.embedded else {}
    consumer.update(overrides.pop("consumer_extra_config", None) or {})
    if consumer:
        options["consumer_extra_config"] = consumer
    options.update(overrides)
    return PipelineApplication(**options)


class BrokerGone(ServiceError):
    """The broker went away during a run and did not come back in time."""


def run_application(app: PipelineApplication, broker: Broker, broker_wait_s: float | None) -> None:
    """``app.run()``; a run that ends because the broker went away raises one `BrokerGone` naming it.

    Whatever Quix raised then (an undelivered checkpoint, a source that could
    not flush, `KafkaBrokerUnavailableError`) is kept as the cause; a failure
    while the broker answers is raised as it is.
    """
    try:
        if broker.embedded:
            watched = [t.name for t in [*app.topics, *app.changelog_topics]]
            with TopicKeeper(app), HistoryWatch(broker.address, watched):
                app.run()
        else:
            app.run()
    except Exception as exc:
        if _kafka_healthy(broker.address, timeout=2.0):
            raise
        waited = f" within {broker_wait_s:g} s (COINFLOW_BROKER_WAIT_S)" if broker_wait_s else ""
        raise BrokerGone(
            f"The broker at {redact(broker.address)} went away and did not come back{waited}; "
            "the run stopped before its end: run it again once the broker is up."
        ) from exc


def topic_config(settings: Settings, partitions: int | None = None) -> TopicConfig:
    """Explicit topic settings; brokers such as Tansu report no retention.ms otherwise."""
    return TopicConfig(
        num_partitions=partitions or settings.topics.partitions,
        replication_factor=1,
        extra_config={"retention.ms": str(settings.topics.retention_ms), "retention.bytes": "-1"},
    )


@dataclass(frozen=True)
class Topics:
    trades: Topic
    candles: Topic
    features: Topic
    dead_letters: Topic


def json_topic(
    app: Application, name: str, config: TopicConfig, value_deserializer: Literal["json", "bytes"] = "json"
) -> Topic:
    """A topic of the project: JSON values written, read as JSON (or as raw bytes, for a step that parses and counts
    bad ones itself), string keys."""
    return app.topic(
        name,
        value_deserializer=value_deserializer,
        value_serializer="json",
        key_deserializer="str",
        key_serializer="str",
        config=config,
    )


def pipeline_topics(app: Application, settings: Settings) -> Topics:
    """The feature pipeline's topics: JSON on the wire, string keys.

    Trades are read as raw bytes so that the dataflow itself parses them and
    counts malformed ones instead of failing in the deserializer.
    """
    config = topic_config(settings)
    return Topics(
        trades=json_topic(app, settings.topics.trades, config, "bytes"),
        candles=json_topic(app, settings.topics.candles, config),
        features=json_topic(app, settings.topics.features, config),
        dead_letters=json_topic(app, settings.topics.dead_letters, config, "bytes"),
    )
