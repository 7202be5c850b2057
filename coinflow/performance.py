"""Performance of an equity curve: annualised Sharpe ratio and maximum drawdown (pure numpy).

Shared by the training pipeline's simulation and the inference pipeline's
trading sessions, so a backtest and a simulation report the same measures.
"""

from __future__ import annotations

import math

import numpy as np

SECONDS_PER_YEAR = 365.25 * 24 * 3600


def sharpe_ratio(equity: np.ndarray, seconds_per_step: float) -> float:
    """Annualised Sharpe ratio of the step returns (no risk-free rate); 0 for a flat curve."""
    returns = np.diff(equity) / equity[:-1]
    deviation = returns.std()
    if len(returns) < 2 or deviation == 0:
        return 0.0
    return float(returns.mean() / deviation * math.sqrt(SECONDS_PER_YEAR / seconds_per_step))


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction of that peak."""
    peaks = np.maximum.accumulate(equity)
    return float(((peaks - equity) / peaks).max())
