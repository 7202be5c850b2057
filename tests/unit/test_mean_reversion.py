"""The Hurst exponent on series of known H within its stated error, the half-life and mean crossings on
hand-checked cases, and what cannot be estimated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinflow.mean_reversion import NO_ESTIMATE, half_life, hurst_dfa, mean_crossings
from tests.support.fgn import fractional_gaussian_noise


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7])
def test_the_estimate_is_within_its_stated_error_on_fractional_gaussian_noise(hurst):
    rng = np.random.default_rng(int(hurst * 10))
    estimates = [hurst_dfa(fractional_gaussian_noise(512, hurst, rng)) for _ in range(200)]
    assert np.mean([abs(e.h - hurst) <= 2 * e.se for e in estimates]) >= 0.85  # 88-94 % measured
    assert np.mean([abs(e.h - hurst) <= 3 * e.se for e in estimates]) >= 0.95  # 97-99.8 % measured
    assert abs(np.mean([e.h for e in estimates]) - hurst) < 0.03  # the documented bias is under 0.02 here
    assert all(e.n == 512 and 0 < e.se < 0.15 for e in estimates)


def test_a_random_walk_s_prices_and_a_mean_reverting_spread_tell_apart():
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(size=2000))
    spread = np.zeros(2000)
    for t in range(1, 2000):
        spread[t] = 0.9 * spread[t - 1] + rng.normal()
    assert abs(hurst_dfa(np.diff(walk)).h - 0.5) < 0.1
    assert hurst_dfa(np.diff(spread)).h < 0.3


def test_what_cannot_be_estimated_is_no_estimate():
    assert hurst_dfa(np.ones(500)) is NO_ESTIMATE  # a constant price
    assert hurst_dfa(np.arange(40.0)) is NO_ESTIMATE  # too short for two octaves of scales
    assert hurst_dfa(np.r_[np.random.default_rng(0).normal(size=500), np.nan]) is NO_ESTIMATE
    assert math.isnan(NO_ESTIMATE.h)


def test_half_life_of_an_ar1_spread_and_of_what_does_not_revert():
    rng = np.random.default_rng(2)
    phi = 0.5 ** (1 / 10)  # a deviation halves in 10 bars
    spread = np.zeros(20_000)
    for t in range(1, len(spread)):
        spread[t] = phi * spread[t - 1] + rng.normal()
    assert half_life(spread) == pytest.approx(10, rel=0.1)
    assert half_life(np.cumsum(rng.normal(size=20_000)) + np.arange(20_000)) > 20_000  # a trend: no reversion in sight
    assert half_life(np.full(100, 3.0)) == math.inf and half_life(np.array([1.0, 2.0])) == math.inf


def test_mean_crossings_count_sign_changes_around_the_mean():
    assert mean_crossings(np.array([1.0, -1.0, 1.0, -1.0])) == 3
    assert mean_crossings(np.array([1.0, 0.0, -1.0])) == 1  # touching the mean is not crossing
    assert mean_crossings(np.array([1.0, 2.0, 3.0])) == 1
