"""Leg risk, as pure code: a multi-leg intent (a pair's two legs) fills on every leg or is undone.

The legs of one decision that belong together share a group. The group is
settled once every leg has filled; it is undone when a leg was refused by a
risk check, ended without filling all of it (rejected, cancelled, expired),
or is still not filled ``leg_timeout_ms`` after the decision's event time:
the legs still working are cancelled and every filled quantity is unwound
with a market order the other way, so the account is back where it was
before the intent (for an entry: flat, apart from fees).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from coinflow.trading.orders import Order, OrderRequest, OrderType, Side, Status, TimeInForce


class Verdict(StrEnum):
    PENDING = "pending"
    FILLED = "filled"
    UNDO = "undo"


@dataclass(frozen=True)
class LegGroup:
    """The legs of one intent: their client order ids (None: refused before it was sent) and its deadline."""

    name: str
    legs: tuple[str | None, ...]
    deadline_ms: int


def leg_verdict(group: LegGroup, orders: Mapping[str, Order], now_ms: int) -> tuple[Verdict, str]:
    """Whether the group is filled, still pending, or to be undone (and why: refused, the status a leg ended in,
    or timeout)."""
    legs = [orders.get(name) if name is not None else None for name in group.legs]
    if any(order is None for order in legs):
        return Verdict.UNDO, "refused"
    ended = [o for o in legs if o is not None and not o.live and o.status != Status.FILLED]
    if ended:
        return Verdict.UNDO, str(ended[0].status)
    if all(o is not None and o.status == Status.FILLED for o in legs):
        return Verdict.FILLED, "filled"
    return (Verdict.UNDO, "timeout") if now_ms >= group.deadline_ms else (Verdict.PENDING, "pending")


def unwind_requests(legs: Sequence[Order], at_ms: int, strategy: str) -> list[OrderRequest]:
    """A market order reversing each leg's filled quantity (named after the leg, so it is sent once)."""
    out = []
    for order in legs:
        if order.filled <= 0:
            continue
        r = order.request
        side = Side.SELL if r.side == Side.BUY else Side.BUY
        out.append(OrderRequest(f"{r.client_order_id}-unwind", r.venue, r.product, side, OrderType.MARKET,
                                order.filled, None, TimeInForce.IOC, created_ms=at_ms,
                                strategy=f"{strategy}:unwind"))  # fmt: skip
    return out
