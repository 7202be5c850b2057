"""Hedge ratios: the incremental Kalman filter equals statsmodels' with the variances it estimated, tracks a beta
that moves, never uses a candle for its own hedge; rolling OLS as the reference."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from coinflow.hedge import KalmanHedge, NoiseVariances, estimate_noise, kalman_hedge, rolling_ols


def pair(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=n)) + 100
    beta = np.r_[np.full(n // 2, 1.5), np.full(n - n // 2, 1.8)]
    return x, 2 + beta * x + rng.normal(scale=0.5, size=n), beta


def test_the_incremental_filter_equals_statsmodels_with_the_estimated_variances():
    x, y, _ = pair()
    noise = estimate_noise(x, y)
    assert noise.alpha > 0 and noise.beta > 0 and noise.measurement > 0
    exog = np.column_stack([np.ones(len(x)), x])
    model = sm.tsa.SARIMAX(y, exog=exog, order=(0, 0, 0), time_varying_regression=True, mle_regression=False)
    filtered = model.smooth([noise.alpha, noise.beta, noise.measurement]).filtered_state
    ours = kalman_hedge(x, y, noise)
    # a candle's hedge is the state filtered up to the candle before; the diffuse start's 1e10 variances round
    # differently in the two implementations, and that carries through at about 1e-6
    np.testing.assert_allclose(ours[["alpha", "beta"]].to_numpy()[1:], filtered.T[:-1], rtol=2e-5)


def test_the_filter_tracks_a_moving_beta_and_its_z_scores_are_standard():
    x, y, beta = pair()
    ours = kalman_hedge(x, y, estimate_noise(x, y))
    assert ours["beta"].iloc[900] == pytest.approx(1.5, abs=0.05)
    assert ours["beta"].iloc[-1] == pytest.approx(1.8, abs=0.05)
    z = ours["z"].iloc[50:]
    assert abs(z.mean()) < 0.1 and z.std() == pytest.approx(1, abs=0.15)


def test_no_candle_enters_its_own_hedge_and_the_state_round_trips():
    x, y, _ = pair(300)
    noise = NoiseVariances(1e-4, 1e-6, 0.25)
    shocked = y.copy()
    shocked[200] += 1000  # a wild print at one candle
    before, after = kalman_hedge(x, y, noise), kalman_hedge(x, shocked, noise)
    np.testing.assert_array_equal(before[["alpha", "beta"]].to_numpy()[:201], after[["alpha", "beta"]].to_numpy()[:201])
    assert after["z"].iloc[200] > 100
    first = KalmanHedge(noise)
    for a, b in zip(x[:150], y[:150], strict=True):
        first.update(float(a), float(b))
    resumed = KalmanHedge.from_state(noise, first.state())
    tail = [resumed.update(float(a), float(b)).beta for a, b in zip(x[150:], y[150:], strict=True)]
    np.testing.assert_allclose(tail, before["beta"].to_numpy()[150:])


def test_rolling_ols_hedges_each_candle_with_the_window_before_it():
    x, y, _ = pair(600)
    ols = rolling_ols(x, y, window=100)
    assert ols["beta"].iloc[:100].isna().all()
    window = slice(200, 300)
    slope, intercept = np.polyfit(x[window], y[window], 1)
    assert ols["beta"].iloc[300] == pytest.approx(slope) and ols["alpha"].iloc[300] == pytest.approx(intercept)
    assert ols["spread"].iloc[300] == pytest.approx(y[300] - intercept - slope * x[300])
