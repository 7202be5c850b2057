"""The common ground of the pipeline's Quix sources: records keyed by pair, rejects to the dead-letter topic."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from quixstreams.checkpointing.exceptions import CheckpointProducerTimeout
from quixstreams.kafka.exceptions import KafkaProducerDeliveryError
from quixstreams.sources import Source

from coinflow.quality import DEAD_LETTER_MAX_BYTES, Rejects, configure_dead_letters
from coinflow.schemas import pair_key
from feature_pipeline.sources.process import SourceLink, die_with_parent

logger = logging.getLogger(__name__)

BUFFER_STAGE = "source_buffer"  # records dropped because the broker was away and the buffer full


class RecordSource(Source):
    """A Source that produces records keyed by pair and keeps its rejects on the dead-letter topic.

    Everything it produces goes through `produce_to`, which keeps records while
    the broker is unreachable: they wait in the producer's queue (librdkafka,
    at most ``Settings.source_buffer_messages``, see
    `coinflow.streaming.outage_config`), retried with backoff and delivered in
    order once the broker is back. A record that finds the queue full, or
    that the broker refuses, is dropped and counted as a ``source_buffer``
    reject (not dead-lettered: the broker is away or refusing); one error line
    says the buffer filled, one says it drained. A record that waited longer
    than a finite run allows, or a flush the broker did not complete, stops
    the source (the run itself then fails, naming the broker).
    """

    link: SourceLink | None = None  # set in the parent by `SourceRelay.attach`, before the source is started

    def __init__(
        self,
        name: str,
        dead_letter_topic: str,
        shutdown_timeout: float = 10.0,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(name=name, shutdown_timeout=shutdown_timeout)
        self.dead_letter_topic = dead_letter_topic
        self.dead_letter_max_bytes = dead_letter_max_bytes  # the source's process keeps its dead letters to it
        self._pending = 0  # produced, not yet acknowledged by the broker
        self._dropped = 0  # since the buffer last filled
        self._full_at = 0  # records waiting when the buffer filled; 0: not full
        self._undeliverable = False
        self._buffer_rejects: Rejects | None = None

    def start(self) -> None:
        """In the source's process, before it runs: die with the parent, send it our logs and reject counts,
        and keep dead letters to the configured size."""
        die_with_parent(self.shutdown_timeout)
        configure_dead_letters(self.dead_letter_max_bytes)
        if self.link is not None:
            self.link.enter()
        super().start()

    def produce_record(self, pair: str, record: Mapping[str, Any], timestamp_ms: int) -> None:
        """Produce one record to the source's topic, keyed by its pair and stamped with its event time."""
        message = self.serialize(key=pair_key(pair), value=record, timestamp_ms=timestamp_ms)
        self.produce_to(self.producer_topic.name, message.key, message.value, message.timestamp)

    def produce_dead_letter(self, record: dict) -> None:
        """Keep a dead-letter record (see `coinflow.quality.dead_letter`) on the dead-letter topic."""
        self.produce_to(self.dead_letter_topic, record["stage"], json.dumps(record).encode())

    def produce_to(
        self,
        topic: str,
        key: str | bytes | None,
        value: str | bytes | None,
        timestamp: int | None = None,
    ) -> None:
        """Produce one record to ``topic``, kept in the buffer while the broker is away (see the class)."""
        if self._undeliverable:
            return
        try:
            # No retries on a full queue here: Quix's would block this source (and its WebSocket) for minutes.
            self.producer.produce(
                topic=topic,
                key=key,
                value=value,
                timestamp=timestamp,
                buffer_error_max_tries=0,
                on_delivery=self._delivered,
            )
        except BufferError:
            self._drop(value, "broker_unreachable")
            return
        except KafkaException as exc:  # the broker was restarted without the topic, and it was not created again
            if exc.args[0].code() != KafkaError._UNKNOWN_TOPIC:
                raise
            self._drop(value, "topic_missing")
            return
        except KafkaProducerDeliveryError as exc:  # raised for an earlier record (counted in `_delivered`)
            if exc.error.code() == KafkaError._MSG_TIMED_OUT:
                self._give_up(exc.error.str())
            else:
                self.produce_to(topic, key, value, timestamp)
            return
        self._pending += 1

    def flush(self, timeout: float | None = None) -> None:
        """Wait for the buffer to be delivered; records the broker did not take stop the source, with one error line.

        Callers check `running` before they move on (a resumable source must
        not record progress past them). Nothing is raised: the run reports the
        unreachable broker, and a traceback from this process would add nothing.
        """
        try:
            super().flush(timeout)
        except (CheckpointProducerTimeout, KafkaProducerDeliveryError) as exc:
            self._give_up(f"{self._pending} records not delivered: {exc}")

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        self._pending -= 1
        if error is not None and error.code() != KafkaError._MSG_TIMED_OUT:
            self._count(message.value(), "broker_refused")
        if self._full_at and self._pending <= self._full_at // 10:
            logger.error(
                "%s: the broker is back and took the buffered records; %d records were dropped while the "
                "buffer was full",
                self.name,
                self._dropped,
            )
            self._full_at, self._dropped = 0, 0

    def _drop(self, value: str | bytes | None, reason: str) -> None:
        if reason == "broker_unreachable" and not self._full_at:
            logger.error(
                "%s: the broker is unreachable and the buffer of %d records is full; newer records are "
                "dropped (counted as %s rejects) until it drains",
                self.name,
                self._pending,
                BUFFER_STAGE,
            )
            self._full_at = max(self._pending, 1)
        self._count(value, reason)
        self._dropped += 1

    def _count(self, value: str | bytes | None, reason: str) -> None:
        if self._buffer_rejects is None:  # made here, in the source's process, where the counts are relayed
            self._buffer_rejects = Rejects(BUFFER_STAGE)
        self._buffer_rejects.reject(reason, value or b"")

    def _give_up(self, detail: str) -> None:
        if not self._undeliverable:
            logger.error("%s: the broker did not take the records in time (%s); the source stops", self.name, detail)
        self._undeliverable = True
        self.stop()
