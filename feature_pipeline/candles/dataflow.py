"""The streaming graph: trades -> candles -> indicators -> feature store.

One graph serves live trading, file replays and backfills; only the source
differs. Two stages meet through the candles topic, so candle files can be
backfilled straight into the second stage:

1. trades topic: one stateful step per message parses and screens it (bad
   ones are counted and sent to the dead-letter topic) and folds it into the
   pair's event-time tumbling window, releasing a candle when a window closes
   (see `transforms.candles`).
2. candles topic: indicators are updated in O(1) per candle from state kept
   in Quix state, and each row goes to Feast (and to the features topic).

End-of-input markers ride behind the data through both stages, so the sink
can tell a finite run when everything it produced is in the stores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.sinks import BaseSink
from quixstreams.state import State

from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END, invalid_candle_reason
from coinflow.settings import Settings
from coinflow.streaming import Topics
from feature_pipeline.transforms.candles import (
    accept_trade,
    advance_clock,
    close_windows,
    new_pair_state,
)
from feature_pipeline.transforms.indicators import new_indicator_state, update_indicators
from feature_pipeline.transforms.screening import invalid_reason

logger = logging.getLogger(__name__)

PAIR_STATE = "pair"


def trades_to_candles(settings: Settings, rejects: Rejects) -> Callable:
    """The stateful step of stage 1: parse, screen and window each raw trade message.

    Returns the records the message releases, in order: a dead-letter record
    for a rejected input, the candles of windows it closed, and an end marker
    after the candles it closed.
    """
    duration_ms = settings.stream.candle_seconds * 1000
    grace_ms = settings.stream.window_grace_ms
    max_future_ms = settings.stream.max_future_ms
    interval = settings.stream.candle_interval

    def step(raw: bytes, key: str | None, timestamp: int, headers, state: State) -> Sequence[Mapping[str, Any]]:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [rejects.reject("malformed_json", raw)]
        reason = invalid_reason(record, int(time.time() * 1000), max_future_ms)
        if reason is None and record["pair"] != key:
            reason = "key_mismatch"
        if reason is not None:
            return [rejects.reject(reason, raw)]
        pair_state = state.get(PAIR_STATE) or new_pair_state()
        control = record.get("control")
        if control is None:
            reason = accept_trade(pair_state, record, duration_ms, grace_ms)
            if reason is not None:
                return [rejects.reject(reason, raw)]
        else:
            advance_clock(pair_state, record["timestamp_ms"])
        released = close_windows(pair_state, record["pair"], interval, duration_ms, grace_ms)
        state.set(PAIR_STATE, pair_state)
        return [*released, record] if control == CONTROL_END else released

    return step


def compute_features(settings: Settings, rejects: Rejects) -> Callable:
    """The stateful step that turns a candle into a feature row (candle + indicators).

    Returns the feature row, an end marker as it came, or the dead-letter
    record of a rejected candle: one that is not a usable candle (checked in
    full here, so that nothing the feature store cannot write reaches the
    sink) or not newer than the last one of its pair and interval (a replayed
    backfill, say): indicators only move forward.
    """
    max_future_ms = settings.stream.max_future_ms

    def step(record: dict, state: State) -> dict:
        if isinstance(record, dict) and record.get("control") == CONTROL_END:
            return record
        reason = invalid_candle_reason(record, int(time.time() * 1000), max_future_ms)
        if reason is not None:
            return rejects.reject(reason, record)
        state_key = f"indicators:{record['interval']}"
        current = state.get(state_key) or {"last_end_ms": 0, "indicators": new_indicator_state()}
        if record["window_end_ms"] <= current["last_end_ms"]:
            return rejects.reject("stale_candle", record)
        values = update_indicators(current["indicators"], record)
        current["last_end_ms"] = record["window_end_ms"]
        state.set(state_key, current)
        return {**record, **values}

    return step


def is_dead_letter(record: dict) -> bool:
    """A dead-letter record (`coinflow.quality.dead_letter`) among a stage's outputs."""
    return "stage" in record


def stage_one_topic(topics: Topics) -> Callable:
    """Where a record of stage 1 goes: dead letters apart, candles and end markers to the candles topic."""

    def route(value: dict, key, timestamp, headers):
        return topics.dead_letters if is_dead_letter(value) else topics.candles

    return route


def build_dataflow(app: Application, topics: Topics, settings: Settings, sink: BaseSink) -> Rejects:
    """Wire both stages into `app`; returns the dataflow's reject counters."""
    rejects = Rejects("dataflow")

    stage_one = app.dataframe(topics.trades).apply(
        trades_to_candles(settings, rejects), stateful=True, metadata=True, expand=True
    )
    stage_one.to_topic(stage_one_topic(topics))

    outputs = app.dataframe(topics.candles).apply(compute_features(settings, rejects), stateful=True)
    outputs.filter(is_dead_letter).to_topic(topics.dead_letters)
    features = outputs.filter(lambda r: not is_dead_letter(r))
    features.sink(sink)
    features.filter(lambda r: "control" not in r).to_topic(topics.features)
    return rejects
