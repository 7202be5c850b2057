"""The step venue: paper fills against a market known only step by step (candles, or 4 s book samples), as pure
code.

Where the full book is not known, a market is a series of steps, each with
the best bid and offer at its end (a candle has no spread: both are its
close) and the lowest and highest price it traded at. The fill model, shared
by the training pipeline's simulator and the execution service's candle
backtests:

- A market order (and a limit order that crosses) fills at once, all of it,
  at the current step's offer (a buy) or bid (a sell), as a taker: there is
  no depth to walk, so large orders are filled as if the top of the book
  were deep enough, moved against the order by ``slippage`` (a fraction of
  the price, 0 by default); a post-only order that would cross is rejected,
  and an ioc order that does not cross is cancelled.
- A resting limit order is tried against each later step: it fills
  completely when the step trades through its limit (a low under a bid, a
  high over an offer), fills ``touch_fill`` of what it has left when the step
  only touches the limit, and otherwise not; fills are at the limit, as a
  maker. A good-till-time order is tried against each step that starts
  before its expiry (a step starts where the one before it ended), and
  expires at the end of the first step that reaches its expiry.

Prices are exact ``Decimal`` values on the market's tick grid, so "touch" is
an equality, never a tolerance. There is no latency: a step is the clock, and
an order decided at a step's end trades at that step's prices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import (
    EventKind,
    Fill,
    Liquidity,
    OrderEvent,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)

VENUE = "paper"  # the name of the paper venues, this one and the book venue of the execution service


@dataclass(frozen=True)
class Step:
    """One step of a market: its end time, best bid and offer then, and the range it traded over."""

    at_ms: int
    bid: Decimal
    ask: Decimal
    low: Decimal
    high: Decimal


def printed(value: float) -> Decimal:
    """A float as the decimal it prints as (its shortest repr: 0.1, not 0.1000000000000000055...)."""
    return Decimal(repr(float(value)))


def on_grid(price: float, tick: Decimal) -> Decimal:
    """A float price as the exact multiple of `tick` nearest to it (so float noise never decides a fill)."""
    return (printed(price) / tick).to_integral_value(rounding=ROUND_HALF_EVEN) * tick


def passive_share(side: Side, limit: Decimal, step: Step, touch_fill: Decimal) -> Decimal:
    """Share of a resting order at `limit` that fills in `step`: all of it through the limit, `touch_fill` at it."""
    if side == Side.BUY:
        return Decimal(1) if step.low < limit else touch_fill if step.low == limit else Decimal(0)
    return Decimal(1) if step.high > limit else touch_fill if step.high == limit else Decimal(0)


def crosses(side: Side, limit: Decimal, step: Step) -> bool:
    """Whether a limit order would take at once: a bid at or above the offer, an offer at or below the bid."""
    return limit >= step.ask if side == Side.BUY else limit <= step.bid


@dataclass
class _Resting:
    request: OrderRequest
    remaining: Decimal
    fills: int = 0


@dataclass
class StepVenue:
    """Paper fills step by step (see the module docstring); `advance` hands over the reports so far."""

    fees: FeeSchedule
    touch_fill: Decimal = Decimal("0.5")
    slippage: Decimal = Decimal(0)
    name: str = VENUE
    steps: dict[str, Step] = field(default_factory=dict)
    resting: dict[str, _Resting] = field(default_factory=dict)
    _reports: list[OrderEvent] = field(default_factory=list)
    _known: set[str] = field(default_factory=set)

    # --- the trader's side -------------------------------------------------

    def submit(self, request: OrderRequest, now_ms: int) -> None:
        """Execute an order against its product's current step (the same client order id twice is one order)."""
        name = request.client_order_id
        if name in self._known:
            return
        self._known.add(name)
        step = self.steps.get(request.product)
        if step is None:
            self._reports.append(OrderEvent(name, EventKind.REJECTED, now_ms, reason=f"no step of {request.product}"))
            return
        limit = request.limit_price if request.type == OrderType.LIMIT else None
        taking = limit is None or crosses(request.side, limit, step)
        if taking and request.post_only:
            self._reports.append(
                OrderEvent(name, EventKind.REJECTED, now_ms, reason="post-only order would take liquidity")
            )
            return
        self._reports.append(OrderEvent(name, EventKind.ACCEPTED, now_ms, venue_order_id=name))
        order = _Resting(request, request.quantity)
        if taking:
            price = step.ask * (1 + self.slippage) if request.side == Side.BUY else step.bid * (1 - self.slippage)
            if limit is not None:  # slippage never past a crossing limit order's price
                price = min(price, limit) if request.side == Side.BUY else max(price, limit)
            self._fill(order, price, order.remaining, Liquidity.TAKER, now_ms)
            return
        if request.time_in_force == TimeInForce.IOC:
            self._reports.append(OrderEvent(name, EventKind.CANCELLED, now_ms, reason="ioc limit did not cross"))
            return
        self.resting[name] = order

    def cancel(self, client_order_id: str, now_ms: int) -> None:
        if self.resting.pop(client_order_id, None) is not None:
            self._reports.append(
                OrderEvent(client_order_id, EventKind.CANCELLED, now_ms, reason="cancelled on request")
            )

    def advance(self, now_ms: int) -> list[OrderEvent]:
        """The reports so far (everything happens at once on a step's clock)."""
        out, self._reports = self._reports, []
        return out

    def open_orders(self) -> list[str]:
        return sorted(self.resting)

    # --- the market's side -------------------------------------------------

    def on_step(self, product: str, step: Step) -> None:
        """A new step of `product`: the orders resting before it are tried against it, then those whose time is
        up expire; later orders trade at its prices."""
        self.steps[product] = step
        for name, order in list(self.resting.items()):
            request = order.request
            if request.product != product:
                continue
            assert request.limit_price is not None
            share = passive_share(request.side, request.limit_price, step, self.touch_fill)
            if share > 0:
                self._fill(order, request.limit_price, order.remaining * share, Liquidity.MAKER, step.at_ms)
            expiry = request.expire_ms
            if name in self.resting and expiry is not None and expiry <= step.at_ms:
                del self.resting[name]
                self._reports.append(OrderEvent(name, EventKind.EXPIRED, step.at_ms, reason="good-till-time passed"))

    def _fill(self, order: _Resting, price: Decimal, quantity: Decimal, liquidity: Liquidity, at_ms: int) -> None:
        request = order.request
        order.fills += 1
        order.remaining -= quantity
        fill = Fill(
            fill_id=f"{request.client_order_id}:{order.fills}",
            client_order_id=request.client_order_id,
            venue=request.venue,
            product=request.product,
            side=request.side,
            price=price,
            quantity=quantity,
            fee=self.fees.fee(price * quantity, liquidity),
            liquidity=liquidity,
            exchange_ms=at_ms,
            local_ms=at_ms,
        )
        self._reports.append(
            OrderEvent(
                request.client_order_id, EventKind.FILL, at_ms, venue_order_id=request.client_order_id, fill=fill
            )  # fmt: skip
        )
        if order.remaining <= 0:
            self.resting.pop(request.client_order_id, None)
