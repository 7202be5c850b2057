"""Rolling re-tests: a pair enters the candidates when it passes, stays through short failures (hysteresis), and
leaves once it has failed for the configured time; the schedule is in event time."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from coinflow.pair_candidates import (
    NOT_TESTED,
    CandidateTracker,
    candidate_events,
    retest_times,
    rolling_discovery,
)
from coinflow.pair_discovery import Discovery, PairTest
from coinflow.settings import PairsTrading
from tests.support.pairs_synthetic import random_walk, universe

HOUR_MS = 3_600_000


def result(y: str = "ETH/USDT", x: str = "BTC/USDT", accepted: bool = True, reasons: tuple[str, ...] = ()) -> PairTest:
    return PairTest(
        y, x, 1000, 0.001, 0.01, 0.002, 30.0, 15.5, 1.2, 0.1, 20.0, 40, 0.3, 0.004, accepted,
        reasons if not accepted else (),
    )  # fmt: skip


def discovery(*pairs: PairTest) -> Discovery:
    return Discovery(pairs, (), (), {})


PASS, FAIL, ABSENT = discovery(result()), discovery(result(accepted=False, reasons=("hurst",))), discovery()


def events(steps: list[Discovery], leave_after_s: float) -> list[tuple[int, str]]:
    """(hour, event) of re-tests one hour apart."""
    out = candidate_events([(h * HOUR_MS, d) for h, d in enumerate(steps)], leave_after_s)
    return [(e["timestamp_ms"] // HOUR_MS, e["event"]) for e in out]


def test_a_pair_enters_once_when_it_passes() -> None:
    assert events([FAIL, PASS, PASS, PASS], leave_after_s=7200) == [(1, "enter")]


def test_a_short_failure_does_not_make_it_leave() -> None:
    # failing at hours 2 and 3 (1 h of failing by hour 3), passing again at 4: below the 2 h limit, it stays
    assert events([PASS, PASS, FAIL, FAIL, PASS, FAIL, PASS], leave_after_s=7200) == [(0, "enter")]


def test_it_leaves_after_failing_for_the_configured_time_and_can_come_back() -> None:
    assert events([PASS, FAIL, FAIL, FAIL, PASS], leave_after_s=7200) == [(0, "enter"), (3, "leave"), (4, "enter")]
    assert events([PASS, FAIL, PASS], leave_after_s=0) == [(0, "enter"), (1, "leave"), (2, "enter")]


def test_a_pair_no_longer_tested_counts_as_failing() -> None:
    tracker = CandidateTracker(leave_after_s=3600)
    assert tracker.update(0, PASS)[0]["event"] == "enter"
    assert tracker.update(HOUR_MS, ABSENT) == []
    (leave,) = tracker.update(2 * HOUR_MS, ABSENT)
    assert leave["event"] == "leave" and leave["reasons"] == [NOT_TESTED] and not tracker.alive


def test_the_records_keep_the_pair_id_it_entered_with() -> None:
    tracker = CandidateTracker(leave_after_s=0)
    (enter,) = tracker.update(0, PASS)
    assert enter == {
        "pair_id": "ETH-USDT__BTC-USDT", "event": "enter", "timestamp_ms": 0, "y": "ETH/USDT", "x": "BTC/USDT",
        "hedge_ratio": 1.2, "half_life": 20.0, "hurst": 0.3, "p_adjusted": 0.004, "reasons": [],
    }  # fmt: skip
    assert tracker.update(HOUR_MS, discovery(result("BTC/USDT", "ETH/USDT"))) == []  # regressed the other way round
    (leave,) = tracker.update(2 * HOUR_MS, discovery(result("BTC/USDT", "ETH/USDT", False, ("half_life",))))
    assert leave["pair_id"] == "ETH-USDT__BTC-USDT" and leave["reasons"] == ["half_life"]


def test_retest_times_are_the_last_bar_of_each_interval_once_a_window_exists() -> None:
    index = pd.date_range("2021-05-15 00:00", periods=300, freq="min", tz="UTC")  # to 04:59
    times = retest_times(index, interval_s=3600, window_bars=90)
    assert [t.strftime("%H:%M") for t in times] == ["01:59", "02:59", "03:59"]  # 04:59: no later bar yet
    assert retest_times(index, 3600, 301) == []
    gappy = index.delete(range(110, 180))  # no bar from 01:50 to 02:59
    assert [t.strftime("%H:%M") for t in retest_times(gappy, 3600, 90)] == ["01:49", "03:59"]


def test_rolling_discovery_enters_a_cointegrated_pair_and_lets_it_go_when_it_breaks() -> None:
    prices, planted = universe(11, n_bars=4000, n_independent=6)
    rng = np.random.default_rng(11)
    q = prices["Q0/USDT"].to_numpy().copy()
    q[2000:] = 1.5 * prices["P0/USDT"].to_numpy()[2000:] + 1.0 + 3 * random_walk(rng, 2000)  # no longer cointegrated
    prices["Q0/USDT"] = q
    settings = PairsTrading(
        min_history_bars=500, retest_window_bars=1000, retest_interval_s=500 * 60, leave_after_s=1000 * 60
    )
    results = list(rolling_discovery(prices, settings))
    bar = {int(t.value // 1_000_000): i for i, t in enumerate(prices.index)}
    assert [bar[t] for t, _ in results] == [1219, 1719, 2219, 2719, 3219, 3719]  # 500-minute slots from the epoch
    assert sum(d.tests for _, d in results) < len(results) * math.comb(8, 2)  # clusters, not all 28 pairs each time
    events = candidate_events(results, settings.leave_after_s)
    assert [(bar[e["timestamp_ms"]], e["event"]) for e in events] == [(1219, "enter"), (3719, "leave")]
    assert {events[0]["y"], events[0]["x"]} in [set(p) for p in planted]
    assert events[1]["pair_id"] == events[0]["pair_id"] and "eg_fdr" in events[1]["reasons"]
