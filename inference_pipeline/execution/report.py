"""What a trading session did, in numbers: PnL, fees, turnover, Sharpe, drawdown, passive fill ratio, against
buy-and-hold and no-op over the same decisions (pure).

Buy-and-hold spends the starting quote at the first decision's best offer,
paying the taker fee, and is marked to the mid at every decision; no-op keeps
the quote. The strategy's curve is the account's equity at each decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from coinflow.performance import max_drawdown, sharpe_ratio
from coinflow.trading.orders import Order
from inference_pipeline.execution.session import EquityPoint


@dataclass(frozen=True)
class Curve:
    """An account's equity at each decision, and what it started with (before the first decision's trades)."""

    name: str
    initial: float
    equity: np.ndarray

    @property
    def pnl(self) -> float:
        return float(self.equity[-1] - self.initial) if len(self.equity) else 0.0


def seconds_per_step(points: Sequence[EquityPoint]) -> float:
    """The median time between decisions."""
    if len(points) < 2:
        return float("nan")
    return float(np.median(np.diff([p.at_ms for p in points])) / 1000)


def benchmark_curves(points: Sequence[EquityPoint], initial: Decimal, taker_fee: Decimal) -> list[Curve]:
    """Buy-and-hold (bought at the first decision's best offer) and no-op over the strategy's decisions."""
    coin = initial / (points[0].ask * (1 + taker_fee))
    hold = np.array([float(coin * p.mid) for p in points])
    return [
        Curve("buy and hold", float(initial), hold),
        Curve("no-op", float(initial), np.full(len(points), float(initial))),
    ]


def passive_fill_ratio(orders: Iterable[Order]) -> float:
    """The share of the quantity of post-only orders that filled (NaN with none)."""
    passive = [o for o in orders if o.request.post_only]
    asked = sum((o.request.quantity for o in passive), Decimal(0))
    return float(sum((o.filled for o in passive), Decimal(0)) / asked) if asked else float("nan")


def curve_metrics(curve: Curve, step_s: float) -> dict[str, float]:
    equity = np.r_[curve.initial, curve.equity]
    return {
        "pnl": curve.pnl,
        "return": float(equity[-1] / equity[0] - 1),
        "sharpe": sharpe_ratio(equity, step_s),
        "max_drawdown": max_drawdown(equity),
    }


def session_metrics(points: Sequence[EquityPoint], orders: Sequence[Order], initial: Decimal) -> dict[str, float]:
    """The strategy's numbers: its curve's, and fees, turnover, orders, fills and the passive fill ratio."""
    curve = Curve("strategy", float(initial), np.array([float(p.equity) for p in points]))
    metrics = curve_metrics(curve, seconds_per_step(points))
    metrics.update(
        fees=float(sum((o.fees for o in orders), Decimal(0))),
        turnover=float(sum((o.filled_notional for o in orders), Decimal(0))),
        orders=float(len(orders)),
        filled_orders=float(sum(1 for o in orders if o.filled)),
        passive_fill_ratio=passive_fill_ratio(orders),
    )
    return metrics
