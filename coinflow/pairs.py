"""The `pair_candidates` contract, shared by the training pipeline (which decides the events) and the feature
pipeline (whose pair jobs they start and stop): a pair's id and the record of it entering or leaving.

A pair is ``y = hedge_ratio * x + spread``; its id names y first: ``ETH/USDT``, ``BTC/USDT`` ->
``ETH-USDT__BTC-USDT``. Times are Unix ms, as on every topic.
"""

from __future__ import annotations

from typing import Literal, TypedDict

PAIR_ID_SEPARATOR = "__"


def pair_id(y: str, x: str) -> str:
    """``ETH/USDT``, ``BTC/USDT`` -> ``ETH-USDT__BTC-USDT``."""
    return f"{y.replace('/', '-')}{PAIR_ID_SEPARATOR}{x.replace('/', '-')}"


class PairCandidate(TypedDict):
    """A pair entering or leaving the candidates, at the event time of the re-test that decided it."""

    pair_id: str
    event: Literal["enter", "leave"]
    timestamp_ms: int
    y: str
    x: str
    hedge_ratio: float
    half_life: float
    hurst: float
    p_adjusted: float
    reasons: list[str]  # leave: why the last re-test did not accept it
