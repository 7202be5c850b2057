"""The pair jobs' graph: pair_candidates + candles -> leg topics keyed by pair id -> as-of join -> spread rows.

1. Routing, in Quix state keyed by ticker: each `pair_candidates` record becomes
   one membership record per leg, re-keyed to the leg's ticker (a repartition
   topic), and each ticker keeps the pairs it is a leg of. A candle of ticker T
   goes to ``pair-legs-y`` (key: pair id) for every pair whose y is T and to
   ``pair-legs-x`` for every pair whose x is T; an enter or leave goes to the
   leg's topic as a control record, in order with that ticker's candles. Only
   candidate pairs get candles: the work grows with the candidates, not N^2.
2. The join (`join_asof`, same key on both sides): each record of y's leg with
   x's latest candle at or before y's close time (message timestamps are the
   candles' close times; x's history kept ``join_grace_s``).
3. The pair job, in Quix state keyed by pair id: created by the enter control,
   dropped by the leave control; each y candle whose x is at most
   ``max_leg_age_s`` older gives a row (`transforms.pair_spread.pair_step`), written to Feast and put on
   ``rows_topic`` (key: pair id) for live trading.

A pair starts with the first candle its router sees after its enter event.
Bad records (candidates and candles) are counted and dead-lettered; stale or
missing x legs, replayed candles and failed fits are counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quixstreams import Application
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink
from quixstreams.state import State

from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from coinflow.streaming import json_topic, topic_config
from feature_pipeline.transforms.pair_spread import (
    ENTER,
    NO_JOB,
    ROLE_Y,
    PairJobParams,
    apply_membership,
    candidate_reason,
    leg_candle_reason,
    memberships,
    merge_legs,
    new_job,
    pair_step,
    route_candle,
)
from feature_repo.names import pair_spread_view

INTERVAL = "1m"  # the pair jobs read 1-minute candles (other intervals on the topic are ignored)
VIEW = pair_spread_view(INTERVAL)
LEGS_KEY = "legs"  # a ticker's pairs {pair_id: role}
JOB_KEY = "job"  # a pair's job state


@dataclass(frozen=True)
class PairTopics:
    candidates: Topic
    candles: Topic
    legs_y: Topic
    legs_x: Topic
    rows: Topic
    dead_letters: Topic


def pair_topics(app: Application, settings: Settings) -> PairTopics:
    config = topic_config(settings)
    jobs = settings.pair_jobs
    return PairTopics(
        candidates=json_topic(app, jobs.candidates_topic, config),
        candles=json_topic(app, settings.universe.candles_topic, config),
        legs_y=json_topic(app, jobs.legs_y_topic, config),
        legs_x=json_topic(app, jobs.legs_x_topic, config),
        rows=json_topic(app, jobs.rows_topic, config),
        dead_letters=json_topic(app, settings.topics.dead_letters, config, "bytes"),
    )


def job_params(settings: Settings) -> PairJobParams:
    jobs = settings.pair_jobs
    return PairJobParams(jobs.warmup_bars, jobs.half_life_window, jobs.max_leg_age_s * 1000)


def is_dead_letter(record: dict) -> bool:
    return "stage" in record


def check_candidate(rejects: Rejects) -> Callable:
    """A pair_candidates record as its two membership records, or [its dead-letter record]."""

    def check(record: object, key: str | None, timestamp: int, headers) -> list[dict]:
        reason = candidate_reason(record, key)
        if reason is not None:
            return [rejects.reject(reason, record)]
        assert isinstance(record, dict)
        return memberships(record)

    return check


def route(rejects: Rejects) -> Callable:
    """The router's stateful step (key: ticker): a membership -> [its control record]; a candle -> its leg records;
    a bad candle -> [its dead-letter record]; end markers and other intervals -> []."""

    def step(record: object, key: str | None, timestamp: int, headers, state: State) -> list[dict]:
        if isinstance(record, dict) and "role" in record and "ticker" in record:
            legs = state.get(LEGS_KEY) or {}
            control = apply_membership(legs, record)
            state.set(LEGS_KEY, legs) if legs else state.delete(LEGS_KEY)
            return [control]
        if isinstance(record, dict) and record.get("control") == CONTROL_END:
            return []
        reason = leg_candle_reason(record, key)
        if reason is not None:
            return [rejects.reject(reason, record)]
        assert isinstance(record, dict)
        if record["interval"] != INTERVAL:
            return []
        return route_candle(state.get(LEGS_KEY) or {}, record)

    return step


def leg_timestamp(value: dict, key, timestamp: int, headers) -> int:
    """A leg record's message time: its candle's close (a control's: its event's time)."""
    return value["timestamp_ms"] if "control" in value else value["window_end_ms"]


def run_job(params: PairJobParams, skipped: Rejects) -> Callable:
    """The pair job's stateful step (key: pair id): enter starts it, leave drops it, a joined y candle -> its row
    (or None; what is skipped is counted in `skipped`)."""

    def step(joined: dict, key: str | None, timestamp: int, headers, state: State) -> dict | None:
        y = joined["y"]
        if "control" in y:
            if y["control"] == ENTER:
                if state.get(JOB_KEY) is None:  # a replayed enter keeps the running job
                    state.set(JOB_KEY, new_job(y))
            else:
                state.delete(JOB_KEY)
            return None
        job = state.get(JOB_KEY)
        if job is None:
            skipped.add({NO_JOB: 1})
            return None
        row, counted = pair_step(job, joined, params)
        if counted:
            skipped.add(dict.fromkeys(counted, 1))
        if row is not None:
            state.set(JOB_KEY, job)
        return row

    return step


def build_pairs_dataflow(app: Application, topics: PairTopics, settings: Settings, sink: BaseSink) -> list[Rejects]:
    """Wire the pair jobs' graph into `app`; returns its reject counters (dead-lettered) and its skip counter."""
    candidate_rejects, candle_rejects = Rejects("pair_candidates"), Rejects("pair_legs")
    skipped = Rejects("pair_jobs")

    members = app.dataframe(topics.candidates).apply(check_candidate(candidate_rejects), expand=True, metadata=True)
    members.filter(is_dead_letter).to_topic(topics.dead_letters)
    members = (
        members.filter(lambda r: not is_dead_letter(r))
        .set_timestamp(lambda value, key, timestamp, headers: value["timestamp_ms"])
        .group_by(lambda r: r["ticker"], name="pair_leg_ticker", key_serializer="str", key_deserializer="str")
    )
    routed = (
        app.dataframe(topics.candles)
        .concat(members)
        .apply(route(candle_rejects), stateful=True, expand=True, metadata=True)
    )
    routed.filter(is_dead_letter).to_topic(topics.dead_letters)
    legs = routed.filter(lambda r: not is_dead_letter(r)).set_timestamp(leg_timestamp)
    legs.to_topic(
        lambda value, key, timestamp, headers: topics.legs_y if value["role"] == ROLE_Y else topics.legs_x,
        key=lambda value: value["pair_id"],
    )

    x_candles = app.dataframe(topics.legs_x).filter(lambda r: "control" not in r)
    joined = app.dataframe(topics.legs_y).join_asof(
        x_candles, how="left", on_merge=merge_legs, grace_ms=settings.pair_jobs.join_grace_s * 1000, name="pair_x"
    )
    rows = joined.apply(run_job(job_params(settings), skipped), stateful=True, metadata=True)
    rows = rows.filter(lambda r: r is not None)
    rows.to_topic(topics.rows, key=lambda row: row["pair_id"])  # the pairs strategy's live input
    rows.sink(sink)
    return [candidate_rejects, candle_rejects, skipped]
