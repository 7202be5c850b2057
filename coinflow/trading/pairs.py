"""The pairs rule: when to hold a pair's spread long, short or not at all, and the two legs' sizes. Pure, shared by
the pairs backtest (training) and the live pair strategy (inference), so both decide alike.

The spread is ``y - (alpha + beta x)`` and ``z`` its z-score (see
`coinflow.hedge`). Long the spread (+1: buy y, sell x) when z falls below
``-entry``, short it (-1) above ``entry``; out when z comes back within
``exit`` of zero, or at a stop when |z| reaches ``stop`` (the relation may
have broken), or when the pair is no longer a candidate. While a leg has no
current price nothing changes (a position cannot be priced, so it is held).
After a stop the pair is not entered again until |z| has come back below
``entry`` (else a broken pair is re-entered at once at the stop's level).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from coinflow.trading.orders import Side, lot, split_product


@dataclass(frozen=True)
class PairRule:
    entry: float = 2.0
    exit: float = 0.5
    stop: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.exit < self.entry < self.stop:
            raise ValueError(f"need 0 <= exit < entry < stop, not {self.exit}, {self.entry}, {self.stop}")


class Why(StrEnum):
    """Why a position changed (or stays out)."""

    ENTRY = "entry"
    EXIT = "exit"
    STOP = "stop"
    LEFT = "left_candidates"
    STALE = "stale_leg"
    HOLD = "hold"


@dataclass(frozen=True)
class PairState:
    position: int = 0  # +1 long the spread, -1 short, 0 out
    stopped: bool = False  # out after a stop, until |z| is back within the entry band


def next_state(
    state: PairState, z: float, rule: PairRule, candidate: bool = True, fresh: bool = True, can_enter: bool = True
) -> tuple[PairState, Why]:
    """The position after seeing `z`, and why. `fresh`: both legs are priced now (if not, or z is not a number,
    nothing can be priced: the position stays as it is); `candidate`: the pair is still one (if not, out);
    `can_enter`: the spread is wide enough to pay the round trip's costs."""
    if not fresh or not math.isfinite(z):
        return state, Why.STALE
    if not candidate:
        return PairState(0, False), Why.LEFT if state.position else Why.HOLD
    if state.position:
        if abs(z) >= rule.stop:
            return PairState(0, True), Why.STOP
        if abs(z) <= rule.exit or (state.position > 0 and z > rule.exit) or (state.position < 0 and z < -rule.exit):
            return PairState(0, False), Why.EXIT
        return state, Why.HOLD
    stopped = state.stopped and abs(z) >= rule.entry
    if can_enter and not stopped and rule.entry < abs(z) < rule.stop:
        return PairState(-1 if z > 0 else 1, False), Why.ENTRY
    return PairState(0, stopped), Why.HOLD


def leg_quantities(
    direction: int, notional: Decimal, price_y: Decimal, price_x: Decimal, beta: Decimal, dollar_neutral: bool = True
) -> tuple[Decimal, Decimal]:
    """Signed quantities of y and x for a position of `direction` with `notional` of quote across both legs:
    dollar-neutral (half the notional a leg) by default, else x in the hedge ratio (beta units of x per y)."""
    if direction == 0:
        return Decimal(0), Decimal(0)
    if dollar_neutral:
        half = notional / 2
        return direction * half / price_y, -direction * half / price_x
    per_unit = price_y + abs(beta) * price_x
    y = direction * notional / per_unit
    return y, -beta * y


def leg_orders(
    want: dict[str, Decimal], held: dict[str, Decimal], increment: Decimal
) -> list[tuple[str, Side, Decimal]]:
    """The market orders moving each leg from `held` to `want` (signed quantities): (leg, side, size), each size
    rounded down to `increment`; a leg with nothing to trade is left out."""
    out = []
    for leg, quantity in want.items():
        change = quantity - held.get(leg, Decimal(0))
        size = lot(abs(change), increment)
        if size > 0:
            out.append((leg, Side.BUY if change > 0 else Side.SELL, size))
    return out


def common_quote(tickers: Iterable[str]) -> str:
    """The one quote asset of the tickers (ETH/USDT, BTC/USDT -> USDT): the account holds a single currency."""
    quotes = {split_product(t)[1] for t in tickers}
    if len(quotes) != 1:
        raise ValueError(f"the tickers are quoted in {sorted(quotes)}: a pairs account holds one quote currency")
    return quotes.pop()
