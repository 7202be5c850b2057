"""Pair discovery: planted cointegrated pairs are found among independent random walks, the independent ones are
not, clustering limits the tests made, and bad tickers (constant, gaps, listed late, too short) are counted,
never a crash."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from coinflow.pair_discovery import (
    CONSTANT,
    SHORT_HISTORY,
    SHORT_OVERLAP,
    Discovery,
    all_pairs,
    discover,
    pair_id,
    pair_statistics,
)
from coinflow.settings import PairsTrading
from tests.support.pairs_synthetic import random_walk, universe

SETTINGS = PairsTrading(min_history_bars=500)


def found(result: Discovery) -> set[frozenset[str]]:
    return {frozenset((p.y, p.x)) for p in result.accepted}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_pairs_are_found_and_independent_walks_are_not(seed: int) -> None:
    prices, planted = universe(seed, planted=((1.5, 0.9), (0.8, 0.95)))
    discovered, reference = discover(prices, SETTINGS), all_pairs(prices, SETTINGS)
    assert found(reference) == planted
    assert found(discovered) == planted
    for pair in discovered.accepted:  # the hedge ratio of the direction chosen is the planted beta (or 1 / beta)
        assert min(abs(pair.hedge_ratio - b) for b in (1.5, 1 / 1.5, 0.8, 1 / 0.8)) < 0.05


def test_clustering_limits_the_tests_made() -> None:
    prices, _ = universe(4, n_independent=30)
    discovered, reference = discover(prices, SETTINGS), all_pairs(prices, SETTINGS)
    assert reference.tests == math.comb(32, 2)
    assert discovered.tests == sum(math.comb(len(c), 2) for c in discovered.clusters) == len(discovered.pairs)
    assert discovered.tests <= reference.tests // 4
    in_clusters = [t for c in discovered.clusters for t in c]
    assert sorted(in_clusters + list(discovered.unclustered)) == sorted(prices.columns)


def test_benjamini_hochberg_over_the_pairs_tested() -> None:
    prices, _ = universe(5)
    result = all_pairs(prices, SETTINGS)
    p = [pair.p_value for pair in result.pairs]
    expected = multipletests(p, alpha=SETTINGS.fdr, method="fdr_bh")[1]
    assert np.allclose([pair.p_adjusted for pair in result.pairs], expected)
    for pair in result.pairs:
        assert pair.p_value == min(1.0, 2 * min(pair.p_yx, pair.p_xy))
        assert pair.accepted == (not pair.reasons)
        assert ("eg_fdr" in pair.reasons) == (pair.p_adjusted > SETTINGS.fdr)


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ({"min_crossings": 10**6}, "crossings"),
        ({"max_half_life_bars": 1.5}, "half_life"),
        ({"min_half_life_bars": 1000.0, "max_half_life_bars": 2000.0}, "half_life"),
        ({"max_hurst": 0.01}, "hurst"),
    ],
)
def test_each_acceptance_threshold_is_a_setting(setting: dict, reason: str) -> None:
    prices, planted = universe(1)
    result = all_pairs(prices, SETTINGS.model_copy(update=setting))
    (pair,) = [p for p in result.pairs if frozenset((p.y, p.x)) in planted]
    assert not pair.accepted and reason in pair.reasons


def test_bad_tickers_are_counted_not_crashed_on() -> None:
    prices, planted = universe(6)
    n = len(prices)
    rng = np.random.default_rng(6)
    prices["FLAT/USDT"] = math.log(3.0)
    prices["NEW/USDT"] = np.r_[np.full(n - 200, np.nan), random_walk(rng, 200)]  # listed too late
    prices["GONE/USDT"] = np.nan
    late = prices["Q0/USDT"].to_numpy().copy()
    late[: n // 3] = np.nan  # listed a third of the way in
    prices["Q0/USDT"] = late
    gappy = prices["P0/USDT"].to_numpy().copy()
    gappy[rng.random(n) < 0.1] = np.nan  # 10 % of the bars missing
    gappy[5] = np.inf  # an impossible value counts as missing
    prices["P0/USDT"] = gappy
    for result in (discover(prices, SETTINGS), all_pairs(prices, SETTINGS)):
        assert result.skipped == {"FLAT/USDT": CONSTANT, "NEW/USDT": SHORT_HISTORY, "GONE/USDT": SHORT_HISTORY}
        assert found(result) == planted
        (pair,) = result.accepted
        assert pair.n_bars == int((np.isfinite(late) & np.isfinite(gappy)).sum())


def test_too_little_history_and_tiny_universes() -> None:
    prices, _ = universe(7, n_bars=300)
    for result in (discover(prices, SETTINGS), all_pairs(prices, SETTINGS)):
        assert result.pairs == () and result.tests == 0
        assert set(result.skipped.values()) == {SHORT_HISTORY} and len(result.skipped) == prices.shape[1]
    empty = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
    single, _ = universe(7, n_independent=1, planted=())
    for frame in (empty, single):
        for result in (discover(frame, SETTINGS), all_pairs(frame, SETTINGS)):
            assert result.pairs == () and result.skipped == {}
    assert discover(single, SETTINGS).unclustered == ("R0/USDT",)


def test_a_short_overlap_is_not_tested() -> None:
    rng = np.random.default_rng(8)
    a = np.r_[random_walk(rng, 1000), np.full(1000, np.nan)]
    b = np.r_[np.full(800, np.nan), random_walk(rng, 1200)]
    pair = pair_statistics("A/USDT", "B/USDT", a, b, SETTINGS)
    assert pair.reasons == (SHORT_OVERLAP,) and pair.n_bars == 200 and not pair.tested
    result = all_pairs(pd.DataFrame({"A/USDT": a, "B/USDT": b}), SETTINGS)
    assert result.tests == 0 and not result.accepted


def test_identical_and_perfectly_collinear_prices() -> None:
    rng = np.random.default_rng(9)
    walk = random_walk(rng, 1000)
    prices = pd.DataFrame({"A/USDT": walk, "B/USDT": 2 * walk + 1, "C/USDT": random_walk(rng, 1000)})
    result = all_pairs(prices, SETTINGS)
    assert result.tests == 3 and not result.accepted  # a ticker quoted twice has no spread to trade
    (twin,) = [p for p in result.pairs if {p.y, p.x} == {"A/USDT", "B/USDT"}]
    assert twin.p_value == 0.0 and twin.reasons


def test_the_frame_has_every_statistic() -> None:
    prices, planted = universe(1)
    frame = discover(prices, SETTINGS).frame()
    for column in ("pair_id", "p_yx", "p_xy", "johansen_trace", "johansen_critical", "hedge_ratio", "half_life",
                   "crossings", "hurst", "p_adjusted", "accepted", "reasons"):  # fmt: skip
        assert column in frame.columns
    accepted = frame[frame["accepted"]]
    assert {frozenset(pid.replace("-", "/").split("__")) for pid in accepted["pair_id"]} == planted
    assert (accepted["reasons"] == "").all()
    assert pair_id("ETH/USDT", "BTC/USDT") == "ETH-USDT__BTC-USDT"
