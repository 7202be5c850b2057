"""Rolling re-tests: discovery on a schedule of event times, and the `pair_candidates` events it implies. Pure code.

A pair enters the candidates when a re-test accepts it, and leaves once it has failed (been rejected, or not
been tested at all: out of every cluster, or a ticker without enough history) at every re-test for
``leave_after_s`` of event time; a pass in between resets the clock (hysteresis), so a pair that fails one
re-test and passes the next stays, and pair jobs are not started and stopped on every wobble. A pair is one
pair whichever way round a re-test regresses it: its ``pair_id`` is the one it entered with until it leaves.

The records (`PairCandidate`, times in Unix ms as on every topic) are ready for the ``pair_candidates`` topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from coinflow.pair_discovery import Discovery, PairTest, discover
from coinflow.pairs import PairCandidate
from coinflow.settings import PairsTrading

NOT_TESTED = "not_tested"


@dataclass
class Candidate:
    """A pair alive in the candidates: how it entered, and since when it has been failing (None: passing)."""

    entered: PairTest
    failing_since_ms: int | None = None


def pair_key(pair: PairTest) -> frozenset[str]:
    return frozenset((pair.y, pair.x))


def record(event: Literal["enter", "leave"], time_ms: int, entered: PairTest, last: PairTest | None) -> PairCandidate:
    """A `pair_candidates` record: the identity it entered with, the statistics of the re-test that decided it."""
    stats = last or entered
    return PairCandidate(
        pair_id=entered.pair_id, event=event, timestamp_ms=time_ms, y=entered.y, x=entered.x,
        hedge_ratio=stats.hedge_ratio, half_life=stats.half_life, hurst=stats.hurst, p_adjusted=stats.p_adjusted,
        reasons=[] if event == "enter" else list(last.reasons) if last is not None else [NOT_TESTED],
    )  # fmt: skip


class CandidateTracker:
    """The candidate pairs alive, updated by each re-test's discovery (in event-time order)."""

    def __init__(self, leave_after_s: float) -> None:
        self.leave_after_ms = int(leave_after_s * 1000)
        self.alive: dict[frozenset[str], Candidate] = {}

    def update(self, time_ms: int, discovery: Discovery) -> list[PairCandidate]:
        """The events of one re-test: pairs accepted for the first time enter, pairs failing for long enough leave."""
        results = {pair_key(p): p for p in discovery.pairs}
        events: list[PairCandidate] = []
        for key, candidate in list(self.alive.items()):
            last = results.get(key)
            if last is not None and last.accepted:
                candidate.failing_since_ms = None
                continue
            if candidate.failing_since_ms is None:
                candidate.failing_since_ms = time_ms
            if time_ms - candidate.failing_since_ms >= self.leave_after_ms:
                events.append(record("leave", time_ms, candidate.entered, last))
                del self.alive[key]
        for pair in discovery.accepted:
            if pair_key(pair) not in self.alive:
                self.alive[pair_key(pair)] = Candidate(pair)
                events.append(record("enter", time_ms, pair, pair))
        return events


def retest_times(index: pd.DatetimeIndex, interval_s: int, window_bars: int) -> list[pd.Timestamp]:
    """The re-tests' event times: the last bar of each interval (aligned to the epoch) once a full window of bars
    exists; an interval is known to be over when a bar of a later one arrives, so the data's last is not re-tested."""
    if len(index) < window_bars:
        return []
    stamps = index[window_bars - 1 :]
    slots = stamps.asi8 // (interval_s * 1_000_000_000)  # nanoseconds since the epoch -> interval number
    last_of_slot = np.flatnonzero(slots[1:] != slots[:-1])
    return [stamps[i] for i in last_of_slot]


def rolling_discovery(log_prices: pd.DataFrame, settings: PairsTrading) -> Iterator[tuple[int, Discovery]]:
    """Discovery over the latest ``retest_window_bars`` bars at each re-test time, in order (time in Unix ms)."""
    index = pd.DatetimeIndex(log_prices.index)
    for time in retest_times(index, settings.retest_interval_s, settings.retest_window_bars):
        end = int(index.searchsorted(time, side="right"))
        window = log_prices.iloc[max(0, end - settings.retest_window_bars) : end]
        yield int(time.value // 1_000_000), discover(window, settings)


def candidate_events(results: Iterable[tuple[int, Discovery]], leave_after_s: float) -> list[PairCandidate]:
    """Every `pair_candidates` event of a sequence of re-tests."""
    tracker = CandidateTracker(leave_after_s)
    return [event for time_ms, discovery in results for event in tracker.update(time_ms, discovery)]
