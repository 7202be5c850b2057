"""The streaming graph: trades -> candles -> indicators -> feature store.

One graph serves live trading, file replays and backfills; only the source
differs. Two stages meet through the candles topic, so candle files can be
backfilled straight into the second stage:

1. trades topic: parse and screen each record (bad ones are counted and sent
   to the dead-letter topic), then an event-time tumbling window per pair
   reduces trades to a candle, emitted when the window closes.
2. candles topic: indicators are updated in O(1) per candle from state kept
   in Quix state, and each row goes to Feast (and to the features topic).

End-of-input markers ride behind the data through both stages, so the sink
can tell a finite run when everything it produced is in the stores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from quixstreams import Application
from quixstreams.sinks import BaseSink
from quixstreams.state import State

from coinflow.quality import Rejects, dead_letter
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from coinflow.streaming import Topics
from feature_pipeline.transforms.candles import finalize_candle, invalid_candle_reason, new_candle, update_candle
from feature_pipeline.transforms.indicators import new_indicator_state, update_indicators
from feature_pipeline.transforms.screening import invalid_reason, new_screen_state, screen

logger = logging.getLogger(__name__)

SCREEN_STATE = "screen"


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


def screen_trades(settings: Settings, rejects: Rejects) -> Callable:
    """The stateful step that parses raw trade messages and accepts or rejects each.

    Returns the record, or ``{"reject": reason, "raw": bytes}`` for the
    dead-letter branch.
    """
    duration_ms = settings.candle_seconds * 1000
    grace_ms = settings.window_grace_ms
    max_future_ms = settings.max_future_ms

    def step(raw: bytes, key: str | None, timestamp: int, headers, state: State) -> dict:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            reason = "malformed_json"
        else:
            reason = invalid_reason(record, int(time.time() * 1000), max_future_ms)
            if reason is None and record["pair"] != key:
                reason = "key_mismatch"
            if reason is None:
                screen_state = state.get(SCREEN_STATE) or new_screen_state()
                reason = screen(screen_state, record, duration_ms, grace_ms)
                if reason is None:
                    state.set(SCREEN_STATE, screen_state)
                    return record
        rejects.reject(reason, raw)
        return {"reject": reason, "raw": raw}

    return step


def compute_features(settings: Settings, rejects: Rejects) -> Callable:
    """The stateful step that turns a candle into a feature row (candle + indicators).

    Candles not newer than the last one of their pair and interval (a replayed
    backfill, say) are skipped and counted: indicators only move forward.
    """

    def step(record: dict, state: State) -> dict | None:
        if isinstance(record, dict) and record.get("control") == CONTROL_END:
            return record
        reason = invalid_candle_reason(record)
        if reason is not None:
            rejects.reject(reason, record)
            return None
        state_key = f"indicators:{record['interval']}"
        current = state.get(state_key) or {"last_end_ms": 0, "indicators": new_indicator_state()}
        if record["window_end_ms"] <= current["last_end_ms"]:
            rejects.reject("stale_candle", record)
            return None
        values = update_indicators(current["indicators"], record)
        current["last_end_ms"] = record["window_end_ms"]
        state.set(state_key, current)
        return {**record, **values}

    return step


def build_dataflow(app: Application, topics: Topics, settings: Settings, sink: BaseSink) -> Rejects:
    """Wire both stages into `app`; returns the dataflow's reject counters."""
    rejects = Rejects("dataflow")
    interval = settings.candle_interval

    screened = app.dataframe(topics.trades).apply(screen_trades(settings, rejects), stateful=True, metadata=True)

    # The window branch is declared first so that, for a given message, the
    # candles it closes are produced before the marker that closed them.
    accepted = screened.filter(lambda r: "reject" not in r)
    accepted = accepted.set_timestamp(lambda value, key, timestamp, headers: value["timestamp_ms"])
    windows = (
        accepted.tumbling_window(duration_ms=settings.candle_seconds * 1000, grace_ms=settings.window_grace_ms)
        .reduce(reducer=update_candle, initializer=new_candle)
        .final()
    )
    candles = windows.apply(lambda window, key, timestamp, headers: finalize_candle(window, key, interval), metadata=True)
    candles.filter(lambda c: c is not None).to_topic(topics.candles)

    def route(value, key, timestamp, headers):
        return topics.candles if value.get("control") == CONTROL_END else topics.dead_letters

    def outbound(value: dict) -> dict:
        if "reject" in value:
            return dead_letter("dataflow", value["reject"], value["raw"])
        return value

    screened.filter(lambda r: "reject" in r or r.get("control") == CONTROL_END).apply(outbound).to_topic(route)

    features = app.dataframe(topics.candles).apply(compute_features(settings, rejects), stateful=True)
    features = features.filter(lambda r: r is not None)
    features.sink(sink)
    features.filter(lambda r: "control" not in r).to_topic(topics.features)
    return rejects
