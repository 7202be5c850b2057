"""Synthetic candle histories for the training tests: a known predictable component, or none.

Features are computed with the project's own batch indicators, so a
synthetic history has exactly the columns the FeatureService serves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_pipeline.transforms.indicators import compute_indicators
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, INDICATOR_FEATURES, OHLCV_FEATURES

FEATURES = (*OHLCV_FEATURES, *INDICATOR_FEATURES)
START = pd.Timestamp("2024-01-01", tz="UTC")
# The pairs of the integration tests' synthetic histories: one with a predictable component, one a random walk.
PREDICTABLE, RANDOM_WALK = "BTC/USD", "ETH/USD"


def ar1_returns(n: int, phi: float, sigma: float = 5e-4, seed: int = 0) -> np.ndarray:
    """Log returns with r_t = phi * r_{t-1} + noise: phi = 0 is a random walk, phi = 0.5 half predictable."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, n)
    returns = np.empty(n)
    previous = 0.0
    for i, e in enumerate(noise):
        previous = phi * previous + e
        returns[i] = previous
    return returns


def candles_from_returns(
    returns: np.ndarray, pair: str = "BTC/USD", interval_s: int = 60, seed: int = 1, start_price: float = 20_000.0
) -> pd.DataFrame:
    """One candle per interval, closing at the given log returns; stamped at the window end."""
    rng = np.random.default_rng(seed)
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[start_price], close[:-1]])
    spread = np.abs(rng.normal(0.0, 2e-4, len(close)))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    return pd.DataFrame(
        {
            ENTITY: pair,
            EVENT_TIMESTAMP: START + pd.to_timedelta(interval_s * (np.arange(len(close)) + 1), unit="s"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(0.1, 5.0, len(close)),
            "vwap": (open_ + high + low + close) / 4,
            "trade_count": rng.integers(1, 50, len(close)),
        }
    )


def features_of(candles: pd.DataFrame) -> pd.DataFrame:
    """The FeatureService columns at each candle, as the offline store holds them."""
    ordered = candles.sort_values(EVENT_TIMESTAMP).reset_index(drop=True)
    indicators = compute_indicators(ordered[["open", "high", "low", "close", "volume"]])
    return pd.concat([ordered[[ENTITY, EVENT_TIMESTAMP, *OHLCV_FEATURES]], indicators.reset_index(drop=True)], axis=1)
