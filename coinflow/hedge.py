"""Hedge ratios of a pair, y = alpha + beta * x: a Kalman filter that tracks both as random walks, and rolling OLS
as the reference. Shared by the pair jobs (streaming) and the pairs backtest (batch).

The filter's noise variances (how fast alpha and beta may drift, and the
measurement noise) are estimated by maximum likelihood with statsmodels'
state-space time-varying regression (`estimate_noise`), never hard-coded; the
filter then runs incrementally, one candle at a time (`KalmanHedge.update`),
with the same initialisation as statsmodels (approximate diffuse), so it
equals statsmodels' filtered states (to 2e-5 relative: the diffuse start
rounds differently; tested). The spread at a candle is the
prediction error before that candle's update, ``y - (alpha + beta x)`` with
the state known from earlier candles only, and its z-score divides it by its
predicted standard deviation: nothing from the candle itself leaks into its
hedge ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.regression.rolling import RollingOLS

DIFFUSE_VARIANCE = 1e10  # statsmodels' approximate diffuse initialisation


@dataclass(frozen=True)
class NoiseVariances:
    """Per candle: the drift variances of alpha and beta, and the measurement noise's."""

    alpha: float
    beta: float
    measurement: float


def estimate_noise(x: np.ndarray, y: np.ndarray) -> NoiseVariances:
    """The maximum-likelihood variances of a time-varying regression of `y` on `x` (statsmodels SARIMAX)."""
    exog = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=float)])
    model = sm.tsa.SARIMAX(
        np.asarray(y, dtype=float), exog=exog, order=(0, 0, 0), time_varying_regression=True, mle_regression=False
    )
    fitted = model.fit(disp=False)
    alpha, beta, measurement = (float(v) for v in fitted.params)
    return NoiseVariances(alpha, beta, measurement)


@dataclass(frozen=True)
class HedgeStep:
    """One candle: the hedge before it (alpha, beta), the spread's prediction error, its variance, and z."""

    alpha: float
    beta: float
    spread: float
    variance: float

    @property
    def z(self) -> float:
        return self.spread / math.sqrt(self.variance) if self.variance > 0 else math.nan


@dataclass
class KalmanHedge:
    """The filter's state (mean and covariance of alpha and beta); `update` takes one candle of both legs."""

    noise: NoiseVariances
    mean: np.ndarray = field(default_factory=lambda: np.zeros(2))
    covariance: np.ndarray = field(default_factory=lambda: np.eye(2) * DIFFUSE_VARIANCE)

    def update(self, x: float, y: float) -> HedgeStep:
        """The hedge known before this candle and its spread, then the state after it."""
        h = np.array([1.0, x])
        covariance = self.covariance  # predicted: the state drifts after each update, see below
        predicted = float(h @ self.mean)
        variance = float(h @ covariance @ h) + self.noise.measurement
        step = HedgeStep(float(self.mean[0]), float(self.mean[1]), y - predicted, variance)
        gain = covariance @ h / variance
        self.mean = self.mean + gain * (y - predicted)
        updated = covariance - np.outer(gain, h @ covariance)
        self.covariance = updated + np.diag([self.noise.alpha, self.noise.beta])
        return step

    def state(self) -> dict[str, list[float]]:
        """The state as plain lists (for a stream's state store)."""
        return {"mean": self.mean.tolist(), "covariance": self.covariance.ravel().tolist()}

    @classmethod
    def from_state(cls, noise: NoiseVariances, state: dict[str, list[float]]) -> KalmanHedge:
        return cls(noise, np.array(state["mean"]), np.array(state["covariance"]).reshape(2, 2))


def kalman_hedge(x: np.ndarray, y: np.ndarray, noise: NoiseVariances) -> pd.DataFrame:
    """The filter over whole series: alpha, beta (before each candle), spread, variance and z per candle."""
    hedge = KalmanHedge(noise)
    steps = [hedge.update(float(a), float(b)) for a, b in zip(x, y, strict=True)]
    return pd.DataFrame(
        {
            "alpha": [s.alpha for s in steps],
            "beta": [s.beta for s in steps],
            "spread": [s.spread for s in steps],
            "variance": [s.variance for s in steps],
            "z": [s.z for s in steps],
        }
    )


def rolling_ols(x: np.ndarray, y: np.ndarray, window: int) -> pd.DataFrame:
    """The reference: OLS over the `window` candles before each one (statsmodels RollingOLS, shifted by one so a
    candle's hedge never saw it), its spread and the spread's z-score over the same window's residuals."""
    exog = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=float)])
    endog = np.asarray(y, dtype=float)
    fitted = RollingOLS(endog, exog, window=window).fit()
    params = np.vstack([np.full((1, 2), np.nan), fitted.params[:-1]])  # the fit up to the candle before
    spread = endog - params[:, 0] - params[:, 1] * exog[:, 1]
    residual_sd = np.r_[np.nan, np.sqrt(fitted.mse_resid[:-1])]
    return pd.DataFrame({"alpha": params[:, 0], "beta": params[:, 1], "spread": spread, "z": spread / residual_sd})
