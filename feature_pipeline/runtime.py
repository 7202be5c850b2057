"""What every feature pipeline's runner shares: the services and registry a run needs, its completion, and the
dead-letter writer of its sinks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from quixstreams import Application

from coinflow import services
from coinflow.feature_store import apply_feature_repo, is_registered
from coinflow.settings import Settings

logger = logging.getLogger(__name__)


def prepare(settings: Settings) -> services.Broker:
    """Start or check the services and register the feature repository if it is not yet."""
    broker = services.ensure_broker(settings)
    services.ensure_redis(settings)
    if not is_registered(settings):
        logger.info("Registering the feature repository %s", settings.feast.repo_path)
        apply_feature_repo(settings)
    return broker


@dataclass
class Completion:
    """Collects end-of-input markers of one run; calls `stop` once every expected pair has ended."""

    run_id: str
    expected: set[str]
    stop: Callable[[], None]
    done: set[str] = field(default_factory=set)

    def on_end(self, marker: dict) -> None:
        if marker.get("run_id") != self.run_id:
            return
        self.done.add(marker["pair"])
        logger.info("All data of %s is in the feature store", marker["pair"])
        if self.expected <= self.done:
            self.stop()


def dead_letter_writer(app: Application, topic: str) -> Callable[[dict], None]:
    """Keeps dead-letter records on `topic` from outside the dataflow's steps (the sink's rejects), one at a time:
    they are rare, and each is flushed before the batch that held it is committed."""
    producer = app.get_producer()

    def write(record: dict) -> None:
        producer.produce(topic=topic, key=record["stage"], value=orjson.dumps(record))
        producer.flush()

    return write
