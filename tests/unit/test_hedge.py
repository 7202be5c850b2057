"""Hedge ratios: the incremental Kalman filter equals statsmodels' with the parameters it estimated, keeps a
persistent spread as the spread (not in the hedge), tracks a beta that moves, never uses a candle for its own
hedge; rolling OLS as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from coinflow.hedge import KalmanHedge, NoiseVariances, estimate_noise, hedge_model, kalman_hedge, rolling_ols


def ar1(n: int, phi: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    u = np.zeros(n)
    for t in range(1, n):
        u[t] = phi * u[t - 1] + rng.normal(0, sd)
    return u


def log_pair(n: int = 5000, seed: int = 0, shift_at: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log prices with log y = beta log x + 0.2 + an AR(1) spread (phi 0.97); beta moves at `shift_at`."""
    rng = np.random.default_rng(seed)
    log_x = np.log(100) + np.cumsum(rng.normal(0, 0.002, n))
    beta = np.ones(n) if shift_at is None else np.r_[np.ones(shift_at), np.full(n - shift_at, 1.05)]
    spread = ar1(n, 0.97, 0.004, rng)
    return log_x, beta * log_x + 0.2 + spread, spread


def test_the_incremental_filter_equals_statsmodels_with_the_estimated_parameters():
    x, y, _ = log_pair(2000)
    noise = estimate_noise(x, y)
    assert noise.converged and 0.9 < noise.phi < 1 and noise.sigma2 > 0 and noise.beta >= 0
    filtered = hedge_model(x, y).smooth([noise.intercept, noise.phi, noise.beta, noise.sigma2]).filtered_state
    hedge = KalmanHedge(noise)
    after = []
    for a, b in zip(x, y, strict=True):
        hedge.update(float(a), float(b))
        after.append(hedge.mean.copy())  # predicted for the next candle: transition of the filtered state
    predicted_beta = np.array(after)[:, 1]
    np.testing.assert_allclose(predicted_beta, filtered[1], rtol=1e-6)  # beta's transition is the identity
    predicted_u = np.array(after)[:, 0]
    np.testing.assert_allclose(predicted_u, noise.intercept + noise.phi * filtered[0], rtol=1e-6, atol=1e-9)


def test_a_persistent_spread_stays_in_the_spread_and_its_z_scores_are_standard():
    x, y, spread = log_pair()
    frame = kalman_hedge(x, y, estimate_noise(x, y))
    late = frame.iloc[500:]
    assert np.corrcoef(late["spread"], spread[500:])[0, 1] > 0.95  # the spread is found, not absorbed
    assert abs(late["z"].mean()) < 0.3 and late["z"].std() == pytest.approx(1, abs=0.3)


def test_the_filter_follows_a_hedge_that_moves():
    x, y, spread = log_pair(6000, seed=3, shift_at=3000)
    frame = kalman_hedge(x, y, estimate_noise(x, y))
    implied = frame["beta"] * x  # what the hedge explains of log y, next to the true one
    truth = np.r_[np.ones(3000), np.full(3000, 1.05)] * x + 0.2
    error = np.abs(implied + estimate_noise(x, y).spread_mean - truth)
    assert np.median(error[5000:]) < np.median(np.abs(0.05 * x[5000:]))  # it moved towards the new beta


def test_no_candle_enters_its_own_hedge_and_the_state_round_trips():
    x, y, _ = log_pair(300)
    noise = NoiseVariances(beta=1e-7, intercept=0.006, phi=0.97, sigma2=1.6e-5)
    shocked = y.copy()
    shocked[200] += 1.0  # a wild print at one candle
    before, after = kalman_hedge(x, y, noise), kalman_hedge(x, shocked, noise)
    np.testing.assert_array_equal(before["beta"].to_numpy()[:201], after["beta"].to_numpy()[:201])
    assert after["z"].iloc[200] > 10
    first = KalmanHedge(noise)
    for a, b in zip(x[:150], y[:150], strict=True):
        first.update(float(a), float(b))
    resumed = KalmanHedge.from_state(noise, first.state())
    tail = [resumed.update(float(a), float(b)).beta for a, b in zip(x[150:], y[150:], strict=True)]
    np.testing.assert_allclose(tail, before["beta"].to_numpy()[150:])


def test_rolling_ols_hedges_each_candle_with_the_window_before_it():
    x, y, _ = log_pair(600)
    ols = rolling_ols(x, y, window=100)
    assert ols["beta"].iloc[:100].isna().all()
    window = slice(200, 300)
    slope, intercept = np.polyfit(x[window], y[window], 1)
    assert ols["beta"].iloc[300] == pytest.approx(slope) and ols["alpha"].iloc[300] == pytest.approx(intercept)
    assert ols["spread"].iloc[300] == pytest.approx(y[300] - intercept - slope * x[300])
