"""The live feed's merge: however the two topics' records interleave on arrival, frames and decisions come out in
the order a backtest of the same data sees them (books first at the same millisecond)."""

from __future__ import annotations

import random

import pytest

from coinflow.quality import Rejects
from inference_pipeline.execution.backtest import in_time_order
from inference_pipeline.execution.live import EventMerger, LiveFeed, frame_event
from inference_pipeline.execution.session import BookEvent, DecisionEvent


def frames(times: list[int]) -> list[BookEvent]:
    return [BookEvent("BTC-USD", True, (), (), t) for t in times]


def decisions(times: list[int]) -> list[DecisionEvent]:
    return [DecisionEvent("BTC-USD", t, {"mid": float(t)}) for t in times]


@pytest.mark.parametrize("seed", range(200))
def test_any_interleaving_comes_out_in_backtest_order(seed: int) -> None:
    rng = random.Random(seed)
    frame_times = sorted(rng.sample(range(0, 40_000, 250), 60))
    boundaries = range(4_000, frame_times[-1] + 1, 4_000)
    # a sample's row exists once a frame at or after it has been seen (the feature pipeline makes it then)
    decision_times = [b for b in boundaries if rng.random() < 0.8]
    market, rows = frames(frame_times), decisions(decision_times)
    expected = list(in_time_order(market, rows))
    merger, out = EventMerger(), []
    queues = [list(market), list(rows)]
    while any(queues):
        side = rng.choice([i for i, q in enumerate(queues) if q])
        event = queues[side].pop(0)
        out += merger.market(event) if side == 0 else merger.decision(event)
    out += merger.finish()
    assert out == expected


def test_nothing_is_released_before_it_is_safe() -> None:
    merger = EventMerger()
    assert merger.market(frames([1_000])[0]) == []  # a decision at or after 1,000 may still come
    assert merger.decision(decisions([4_000])[0]) == [frames([1_000])[0]]  # the frame goes, the decision waits
    released = merger.market(frames([4_000])[0])
    assert released == [frames([4_000])[0]]  # a book at the decision's millisecond precedes it
    assert merger.market(frames([4_100])[0]) == [decisions([4_000])[0]]  # a later frame: the decision is safe


def test_the_feed_ends_when_both_topics_have_ended_and_skips_other_books() -> None:
    got, ended = [], []
    feed = LiveFeed("coinbase:BTC-USD", ["mid"], got.append, on_end=lambda: ended.append(True))
    snapshot = {"exchange": "coinbase", "product": "BTC-USD", "kind": "snapshot", "bids": [["99", "1"]],
                "asks": [["101", "1"]], "timestamp_ms": 1_000}  # fmt: skip
    feed.on_frame(snapshot, "coinbase:ETH-USD")
    feed.on_frame(snapshot, "coinbase:BTC-USD")
    feed.on_frame({"control": "end", "timestamp_ms": 5_000}, "coinbase:BTC-USD")
    assert got == [] and not ended  # the features' end marker has not come yet
    feed.on_features({"product": "coinbase:BTC-USD", "window_end_ms": 4_000, "mid": None}, "coinbase:BTC-USD")
    feed.on_features({"control": "end", "timestamp_ms": 5_000}, "coinbase:BTC-USD")
    assert ended == [True] and [type(e).__name__ for e in got] == ["BookEvent", "DecisionEvent"]
    assert got[1].features["mid"] != got[1].features["mid"]  # null in JSON is NaN, as offline


def test_bad_frames_are_counted_not_fatal() -> None:
    rejects = Rejects("feed")
    bad = {"product": "BTC-USD", "kind": "snapshot", "bids": [["x", "1"]], "asks": [], "timestamp_ms": 1}
    assert frame_event(bad, rejects) is None
    assert frame_event({"control": "tick", "timestamp_ms": 1}, rejects) is None
    assert rejects.counts == {"unusable_frame": 1}
