"""The orchestrator's graph: universe candles -> one universe state -> rolling discovery -> pair_candidates.

1. Each candle of the universe candles topic (``COINFLOW_UNIVERSE_CANDLES_TOPIC``, the topic the universe
   features and the pair jobs read) is checked; bad ones are counted and dead-lettered, end markers and other
   intervals than 1-minute dropped.
2. The valid ones are re-keyed to one key (``universe``, a repartition topic): discovery needs every ticker
   together, so the whole universe is one Quix state (bounded: the latest re-test window of bars), and one
   consumer runs it.
3. The stateful step (`transforms.pair_orchestration.orchestrate`) re-tests at the end of every
   ``COINFLOW_PAIRS_RETEST_INTERVAL_S`` of event time; its enter and leave records go to the pair_candidates
   topic (``COINFLOW_PAIR_JOBS_CANDIDATES_TOPIC``), keyed by pair id, stamped with the re-test's time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quixstreams import Application
from quixstreams.models import Topic
from quixstreams.state import State

from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from coinflow.streaming import json_topic, topic_config
from feature_pipeline.transforms.pair_orchestration import LATE, OrchestratorParams, orchestrate, orchestrator_params
from feature_pipeline.transforms.pair_spread import leg_candle_reason

INTERVAL = "1m"  # the pair jobs' interval: the orchestrator discovers on the same candles
UNIVERSE_KEY = "universe"


@dataclass(frozen=True)
class OrchestratorTopics:
    candles: Topic
    candidates: Topic
    dead_letters: Topic


def orchestrator_topics(app: Application, settings: Settings) -> OrchestratorTopics:
    config = topic_config(settings)
    return OrchestratorTopics(
        candles=json_topic(app, settings.universe.candles_topic, config),
        candidates=json_topic(app, settings.pair_jobs.candidates_topic, config),
        dead_letters=json_topic(app, settings.topics.dead_letters, config, "bytes"),
    )


def is_dead_letter(record: dict) -> bool:
    return "stage" in record


def check_candle(rejects: Rejects) -> Callable:
    """A candle -> [its (ticker, close time, close)], [its dead-letter record], or [] (end markers, intervals other
    than 1-minute)."""

    def check(record: object, key: str | None, timestamp: int, headers) -> list[dict]:
        if isinstance(record, dict) and record.get("control") == CONTROL_END:
            return []
        reason = leg_candle_reason(record, key)
        if reason is not None:
            return [rejects.reject(reason, record)]
        assert isinstance(record, dict)
        if record["interval"] != INTERVAL:
            return []
        return [{"pair": record["pair"], "window_end_ms": record["window_end_ms"], "close": float(record["close"])}]

    return check


def discover_step(params: OrchestratorParams, late: Rejects) -> Callable:
    """The stateful step (one key: the universe): a candle -> the pair_candidates records it triggers."""

    def step(candle: dict, state: State) -> list[dict]:
        out = orchestrate(state, candle["pair"], candle["window_end_ms"], candle["close"], params)
        if out == LATE:
            late.add({LATE: 1})
            return []
        assert isinstance(out, list)
        return [dict(record) for record in out]

    return step


def build_orchestrator_dataflow(app: Application, topics: OrchestratorTopics, settings: Settings) -> list[Rejects]:
    """Wire the orchestrator's graph into `app`; returns its reject counter (dead-lettered) and its late count."""
    rejects, late = Rejects("pairs_orchestrator"), Rejects("pairs_orchestrator_late")
    checked = app.dataframe(topics.candles).apply(check_candle(rejects), expand=True, metadata=True)
    checked.filter(is_dead_letter).to_topic(topics.dead_letters)
    universe = checked.filter(lambda r: not is_dead_letter(r)).group_by(
        lambda r: UNIVERSE_KEY, name="pairs_universe", key_serializer="str", key_deserializer="str"
    )
    records = universe.apply(discover_step(orchestrator_params(settings.pairs_trading), late), stateful=True,
                             expand=True)  # fmt: skip
    records = records.set_timestamp(lambda value, key, timestamp, headers: value["timestamp_ms"])
    records.to_topic(topics.candidates, key=lambda value: value["pair_id"])
    return [rejects, late]
