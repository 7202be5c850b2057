"""The Quix Streams Application and topics, configured from Settings for every pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from quixstreams import Application
from quixstreams.models import TopicConfig
from quixstreams.models.topics import Topic

from coinflow.services import Broker, stream_state_dir
from coinflow.settings import Settings


def new_application(settings: Settings, broker: Broker, consumer_group: str | None = None, **overrides) -> Application:
    """An Application on the given broker with the project's checkpointing and state location.

    On the embedded Tansu broker, state lives only in the local RocksDB store
    (flushed at every checkpoint, tied to the broker's lifetime): Tansu answers
    ListOffsets with wrong high watermarks, which breaks Quix's recovery from
    changelog topics. On a real Kafka or Redpanda, changelogs are used.
    Tansu also holds a JoinGroup for half the session timeout, so the embedded
    broker gets a short one (6 s) to keep start-up quick, and it holds a fetch
    for fetch.wait.max.ms even when another partition of the request has data
    (Kafka answers at once), so a short wait keeps sparse topics such as
    candles from lagging behind busy ones.
    """
    options = dict(
        broker_address=broker.address,
        consumer_group=consumer_group or settings.consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_s,
        processing_guarantee=settings.processing_guarantee,
        state_dir=stream_state_dir(settings, broker),
        loglevel=settings.log_level,
        # Topics are created with explicit configs (see `topic_config`); the
        # internal changelog/repartition topics inherit the broker's defaults.
        auto_create_topics=True,
        use_changelog_topics=not broker.embedded,
    )
    consumer = {"session.timeout.ms": 6000, "fetch.wait.max.ms": 20} if broker.embedded else {}
    consumer.update(overrides.pop("consumer_extra_config", None) or {})
    if consumer:
        options["consumer_extra_config"] = consumer
    options.update(overrides)
    return Application(**options)


def topic_config(settings: Settings, partitions: int | None = None) -> TopicConfig:
    """Explicit topic settings; brokers such as Tansu report no retention.ms otherwise."""
    return TopicConfig(
        num_partitions=partitions or settings.topic_partitions,
        replication_factor=1,
        extra_config={"retention.ms": str(settings.topic_retention_ms), "retention.bytes": "-1"},
    )


@dataclass(frozen=True)
class Topics:
    trades: Topic
    candles: Topic
    features: Topic
    dead_letters: Topic


def pipeline_topics(app: Application, settings: Settings) -> Topics:
    """The feature pipeline's topics: JSON on the wire, string keys.

    Trades are read as raw bytes so that the dataflow itself parses them and
    counts malformed ones instead of failing in the deserializer.
    """
    config = topic_config(settings)

    def make(name: str, value_deserializer: str = "json") -> Topic:
        return app.topic(
            name,
            value_deserializer=value_deserializer,
            value_serializer="json",
            key_deserializer="str",
            key_serializer="str",
            config=config,
        )

    return Topics(
        trades=make(settings.trades_topic, "bytes"),
        candles=make(settings.candles_topic),
        features=make(settings.features_topic),
        dead_letters=make(settings.dead_letter_topic, "bytes"),
    )
