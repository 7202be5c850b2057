"""Synthetic order-book feature histories for the action-model tests (the bundled book sessions last 30 s).

Rows have exactly the ``orderbook_4s`` columns the feature pipeline writes.
A hidden buying or selling pressure (AR(1)) moves the mid over the next
minutes and shows in the nearest depth buckets and the imbalance, so the
best action is predictable from the book; prices sit on a tick grid.
"""

from __future__ import annotations

import math

import numpy as np

from feature_repo.names import ASK_SHARE_FEATURES, BID_SHARE_FEATURES, BOOK_ENTITY, MID_HISTORY_FEATURES

START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
STEP_MS = 4000
MID_EVERY_MS = 30_000


def book_rows(
    n: int,
    product: str = "coinbase:ETH-USD",
    seed: int = 0,
    tick: float = 0.01,
    start_price: float = 3000.0,
    start_ms: int = START_MS,
    pressure_effect: float = 4e-5,
) -> list[dict]:
    """`n` consecutive 4-second samples of one book, as feature rows keyed by ``window_end_ms``."""
    rng = np.random.default_rng(seed)
    pressure = np.empty(n)
    level = 0.0
    for i in range(n):
        level = 0.97 * level + rng.normal(0.0, 0.25)
        pressure[i] = level
    log_price = math.log(start_price) + np.cumsum(
        pressure_effect * np.r_[0.0, pressure[:-1]] + rng.normal(0.0, 3e-5, n)
    )
    bid = np.floor(np.exp(log_price) / tick) * tick
    ask = bid + tick * rng.choice([1, 1, 1, 2], n)
    mid = (bid + ask) / 2
    times = start_ms + STEP_MS * np.arange(n)
    rows = []
    for i in range(n):
        tilt = float(np.tanh(pressure[i]))
        bids = rng.dirichlet(np.ones(20)) * 0.7
        asks = rng.dirichlet(np.ones(20)) * 0.7
        bids[0] += 0.15 * (1 + tilt)
        asks[0] += 0.15 * (1 - tilt)
        row = {
            BOOK_ENTITY: product,
            "window_end_ms": int(times[i]),
            "mid": float(mid[i]),
            "spread": float(ask[i] - bid[i]),
            "imbalance": tilt * 0.8,
            "microprice": float(mid[i] + tilt * (ask[i] - bid[i]) / 2),
        }
        row.update(zip(BID_SHARE_FEATURES, (bids / bids.sum()).tolist(), strict=True))
        row.update(zip(ASK_SHARE_FEATURES, (asks / asks.sum()).tolist(), strict=True))
        latest = times[i] // MID_EVERY_MS * MID_EVERY_MS
        mids = []
        for k in range(len(MID_HISTORY_FEATURES)):
            at = latest - k * MID_EVERY_MS
            known = np.flatnonzero(times <= at)
            mids.append(float(mid[known[-1]]) if at >= times[0] and len(known) else math.nan)
        row.update(zip(MID_HISTORY_FEATURES, mids, strict=True))
        rows.append(row)
    return rows
