"""Hedge ratios of a pair, y = beta x + u with u the spread: a Kalman filter that tracks beta as a random walk and
the spread as a mean-reverting AR(1) state, and rolling OLS as the reference. Shared by the pair jobs (streaming)
and the pairs backtest (batch).

The model is statsmodels' regression with AR(1) errors and a time-varying
coefficient: ``y_t = beta_t x_t + u_t``, ``beta_{t+1} = beta_t + eta``,
``u_{t+1} = c + phi u_t + e``. Its parameters (the drift variance of beta,
the spread's intercept, persistence and innovation variance) are estimated by
maximum likelihood (`estimate_noise`), never hard-coded. Modelling the spread
as its own state matters: a filter whose intercept is a free random walk
absorbs a persistent spread into that intercept, and its residuals no longer
revert. The filter then runs incrementally, one candle at a time
(`KalmanHedge.update`), initialised as statsmodels initialises it (the spread
at its stationary distribution, beta approximately diffuse), so it equals
statsmodels' filtered states (tested).

At a candle, the spread is ``y - beta x - mean(u)`` with the beta known
before that candle (nothing of the candle enters its own hedge) and its
z-score divides by the spread's stationary standard deviation
``sqrt(sigma2 / (1 - phi^2))``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.regression.rolling import RollingOLS
from statsmodels.tools.sm_exceptions import ConvergenceWarning

DIFFUSE_VARIANCE = 1e10  # statsmodels' approximate diffuse initialisation


@dataclass(frozen=True)
class NoiseVariances:
    """The filter's parameters per candle: beta's drift variance, and the spread's AR(1) intercept, persistence and
    innovation variance."""

    beta: float
    intercept: float
    phi: float
    sigma2: float
    converged: bool = True  # the likelihood's optimiser said it converged (if not, its best point is used)

    @property
    def spread_mean(self) -> float:
        return self.intercept / (1 - self.phi)

    @property
    def spread_variance(self) -> float:
        """The spread's stationary variance (infinite when it does not revert)."""
        return self.sigma2 / (1 - self.phi**2) if abs(self.phi) < 1 else math.inf


def hedge_model(x: np.ndarray, y: np.ndarray) -> sm.tsa.SARIMAX:
    """statsmodels' state-space form of the model (see the module docstring)."""
    return sm.tsa.SARIMAX(
        np.asarray(y, dtype=float),
        exog=np.asarray(x, dtype=float),
        order=(1, 0, 0),
        trend="c",
        time_varying_regression=True,
        mle_regression=False,
    )


def estimate_noise(x: np.ndarray, y: np.ndarray) -> NoiseVariances:
    """The maximum-likelihood parameters of the model for `y` on `x`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in `converged` instead
        warnings.simplefilter("ignore", UserWarning)  # statsmodels' note on non-stationary starting parameters
        fitted = hedge_model(x, y).fit(disp=False)
    intercept, phi, beta, sigma2 = (float(v) for v in fitted.params)
    return NoiseVariances(beta, intercept, phi, sigma2, bool(fitted.mle_retvals.get("converged", True)))


@dataclass(frozen=True)
class HedgeStep:
    """One candle: the hedge known before it (beta), the spread at it, the spread's variance, and z."""

    beta: float
    spread: float
    variance: float

    @property
    def z(self) -> float:
        return self.spread / math.sqrt(self.variance) if 0 < self.variance < math.inf else math.nan


@dataclass
class KalmanHedge:
    """The filter's state (mean and covariance of the spread u and beta); `update` takes one candle of both legs."""

    noise: NoiseVariances
    mean: np.ndarray = field(default_factory=lambda: np.zeros(2))
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))

    def __post_init__(self) -> None:
        if not self.covariance.any():  # statsmodels' initialisation: u stationary, beta approximately diffuse
            self.mean = np.array([self.noise.spread_mean, 0.0])
            self.covariance = np.diag([self.noise.spread_variance, DIFFUSE_VARIANCE])

    def update(self, x: float, y: float) -> HedgeStep:
        """The spread at this candle with the hedge known before it, then the state after it."""
        n = self.noise
        beta = float(self.mean[1])
        step = HedgeStep(beta, y - beta * x - n.spread_mean, n.spread_variance)
        h = np.array([1.0, x])
        variance = float(h @ self.covariance @ h)
        gain = self.covariance @ h / variance
        mean = self.mean + gain * (y - float(h @ self.mean))
        covariance = self.covariance - np.outer(gain, h @ self.covariance)
        transition = np.diag([n.phi, 1.0])
        self.mean = transition @ mean + np.array([n.intercept, 0.0])
        self.covariance = transition @ covariance @ transition.T + np.diag([n.sigma2, n.beta])
        return step

    def state(self) -> dict[str, list[float]]:
        """The state as plain lists (for a stream's state store)."""
        return {"mean": self.mean.tolist(), "covariance": self.covariance.ravel().tolist()}

    @classmethod
    def from_state(cls, noise: NoiseVariances, state: dict[str, list[float]]) -> KalmanHedge:
        return cls(noise, np.array(state["mean"]), np.array(state["covariance"]).reshape(2, 2))


def kalman_hedge(x: np.ndarray, y: np.ndarray, noise: NoiseVariances) -> pd.DataFrame:
    """The filter over whole series: beta (before each candle), spread, variance and z per candle."""
    hedge = KalmanHedge(noise)
    steps = [hedge.update(float(a), float(b)) for a, b in zip(x, y, strict=True)]
    return pd.DataFrame(
        {
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
