"""Synthetic universes for pair discovery: independent random walks, and cointegrated pairs made of a random walk
and the same walk scaled plus a stationary AR(1) spread."""

from __future__ import annotations

import numpy as np
import pandas as pd

STEP = 0.01  # a bar's log-return standard deviation


def random_walk(rng: np.random.Generator, n: int, start: float = 0.0) -> np.ndarray:
    return start + np.cumsum(rng.normal(0.0, STEP, n))


def ar1(rng: np.random.Generator, n: int, phi: float, sigma: float = STEP) -> np.ndarray:
    """A stationary AR(1) series (half-life -ln 2 / ln phi bars)."""
    shocks = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    out[0] = shocks[0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + shocks[t]
    return out


def universe(
    seed: int, n_bars: int = 3000, n_independent: int = 16, planted: tuple[tuple[float, float], ...] = ((1.5, 0.9),)
) -> tuple[pd.DataFrame, set[frozenset[str]]]:
    """Log prices of `n_independent` random walks (R0/USDT ...) and, per (beta, phi) in `planted`, a pair
    Pk/USDT = a random walk, Qk/USDT = beta * Pk + AR(1; phi) spread; and the planted pairs."""
    rng = np.random.default_rng(seed)
    columns = {f"R{i}/USDT": random_walk(rng, n_bars, rng.uniform(0, 5)) for i in range(n_independent)}
    pairs = set()
    for k, (beta, phi) in enumerate(planted):
        base = random_walk(rng, n_bars, rng.uniform(0, 5))
        columns[f"P{k}/USDT"] = base
        columns[f"Q{k}/USDT"] = beta * base + 1.0 + ar1(rng, n_bars, phi)
        pairs.add(frozenset((f"P{k}/USDT", f"Q{k}/USDT")))
    index = pd.date_range("2021-05-15", periods=n_bars, freq="min", tz="UTC")
    return pd.DataFrame(columns, index=index), pairs
