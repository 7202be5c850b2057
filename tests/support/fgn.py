"""Exact fractional Gaussian noise (the Davies-Harte method), for series of known Hurst exponent."""

from __future__ import annotations

import numpy as np


def fractional_gaussian_noise(n: int, hurst: float, rng: np.random.Generator) -> np.ndarray:
    """`n` increments of fractional Brownian motion with exponent `hurst` (unit variance)."""
    k = np.arange(n + 1)
    autocovariance = 0.5 * (np.abs(k + 1) ** (2 * hurst) - 2 * k ** (2 * hurst) + np.abs(k - 1) ** (2 * hurst))
    circulant = np.concatenate([autocovariance, autocovariance[-2:0:-1]])
    eigenvalues = np.clip(np.fft.fft(circulant).real, 0, None)
    m = len(circulant)
    noise = rng.normal(size=m) + 1j * rng.normal(size=m)
    return np.fft.fft(np.sqrt(eigenvalues / (2 * m)) * noise).real[:n]
