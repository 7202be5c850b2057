"""The common ground of the pipeline's Quix sources: records keyed by pair, rejects to the dead-letter topic."""

from __future__ import annotations

import json

from quixstreams.sources import Source

from coinflow.schemas import pair_key


class RecordSource(Source):
    """A Source that produces records keyed by pair and keeps its rejects on the dead-letter topic."""

    def __init__(self, name: str, dead_letter_topic: str, shutdown_timeout: float = 10.0) -> None:
        super().__init__(name=name, shutdown_timeout=shutdown_timeout)
        self.dead_letter_topic = dead_letter_topic

    def produce_record(self, pair: str, record: dict, timestamp_ms: int) -> None:
        """Produce one record to the source's topic, keyed by its pair and stamped with its event time."""
        message = self.serialize(key=pair_key(pair), value=record, timestamp_ms=timestamp_ms)
        self.produce(key=message.key, value=message.value, timestamp=message.timestamp)

    def produce_dead_letter(self, record: dict) -> None:
        """Keep a dead-letter record (see `coinflow.quality.dead_letter`) on the dead-letter topic."""
        self.producer.produce(topic=self.dead_letter_topic, key=record["stage"], value=json.dumps(record).encode())
