"""Orders, their fills and the order state machine, as pure code.

An order is the request a strategy made (`OrderRequest`, immutable, named by
its client order id) plus what the venue has said about it since, folded from
its events: ``new -> open -> partially_filled -> filled``, or ``cancelled``,
``rejected``, ``expired``. Every change is an `OrderEvent`; `apply_event`
returns the order after an event, or raises `IllegalTransition` naming why
the event cannot apply (an order that is already done, a fill past the
order's quantity, a fill of another order): such an event is refused and
counted by its caller, never applied. Venues may report a fill before the
acknowledgement (the ack can be lost, or come late), so a new order may fill.

Quantities and prices are exact ``Decimal`` values: money never goes through
a float.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    GTC = "gtc"  # good till cancelled
    IOC = "ioc"  # immediate or cancel: what does not fill at once is cancelled
    GTT = "gtt"  # good till `expire_ms`


class Status(StrEnum):
    NEW = "new"
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


TERMINAL = frozenset({Status.FILLED, Status.CANCELLED, Status.REJECTED, Status.EXPIRED})
LIVE = frozenset({Status.NEW, Status.OPEN, Status.PARTIALLY_FILLED})


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


class EventKind(StrEnum):
    ACCEPTED = "accepted"  # the venue holds the order (it rests, or is being executed)
    FILL = "fill"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


def split_product(product: str) -> tuple[str, str]:
    """The base and quote assets of a product: ``BTC-USD`` (Coinbase) and ``BTC/USD`` (Kraken) -> (BTC, USD)."""
    for separator in ("-", "/"):
        base, found, quote = product.partition(separator)
        if found and base and quote and separator not in quote:
            return base, quote
    raise ValueError(f"product {product!r} is not BASE-QUOTE or BASE/QUOTE")


@dataclass(frozen=True)
class OrderRequest:
    """What a strategy asks a venue for; the client order id makes it idempotent (the same id is one order)."""

    client_order_id: str
    venue: str
    product: str
    side: Side
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    expire_ms: int | None = None
    created_ms: int = 0
    strategy: str = ""

    @property
    def assets(self) -> tuple[str, str]:
        return split_product(self.product)


def request_problem(request: OrderRequest) -> str | None:
    """Why a request is not a well-formed order (None when it is)."""
    if not request.client_order_id:
        return "an order needs a client order id"
    if not request.quantity.is_finite() or request.quantity <= 0:
        return f"quantity {request.quantity} is not a positive number"
    try:
        split_product(request.product)
    except ValueError as exc:
        return str(exc)
    price = request.limit_price
    if request.type == OrderType.LIMIT:
        if price is None or not price.is_finite() or price <= 0:
            return f"a limit order needs a positive limit price, not {price}"
    elif price is not None:
        return "a market order has no limit price"
    if request.type == OrderType.MARKET and request.time_in_force != TimeInForce.IOC:
        return "a market order is immediate or cancel (time in force ioc)"
    if request.post_only and (request.type != OrderType.LIMIT or request.time_in_force == TimeInForce.IOC):
        return "post-only is for limit orders that rest (gtc or gtt)"
    if (request.time_in_force == TimeInForce.GTT) != (request.expire_ms is not None):
        return "an expiry time goes with time in force gtt, and only with it"
    return None


@dataclass(frozen=True)
class Fill:
    """One execution of (part of) an order. ``fee`` is in the quote asset; times are Unix ms (the venue's when it
    happened, ours when we learnt it)."""

    fill_id: str
    client_order_id: str
    venue: str
    product: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    liquidity: Liquidity
    exchange_ms: int
    local_ms: int

    @property
    def notional(self) -> Decimal:
        return self.price * self.quantity


@dataclass(frozen=True)
class OrderEvent:
    """One thing the venue (or the service) said about an order."""

    client_order_id: str
    kind: EventKind
    at_ms: int
    venue_order_id: str | None = None
    reason: str | None = None
    fill: Fill | None = None


@dataclass(frozen=True)
class Order:
    """An order's request and its state after the events so far."""

    request: OrderRequest
    status: Status = Status.NEW
    filled: Decimal = Decimal(0)
    filled_notional: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    venue_order_id: str | None = None
    reason: str | None = None
    updated_ms: int = 0

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id

    @property
    def remaining(self) -> Decimal:
        return self.request.quantity - self.filled

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def average_price(self) -> Decimal | None:
        return self.filled_notional / self.filled if self.filled else None


class IllegalTransition(ValueError):
    """An event that cannot apply to an order in its state; ``reason`` is a short label for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# The events each state accepts (a fill then goes to partially_filled or filled by quantity).
ACCEPTS: dict[Status, frozenset[EventKind]] = {
    Status.NEW: frozenset(EventKind),
    Status.OPEN: frozenset({EventKind.FILL, EventKind.CANCELLED, EventKind.EXPIRED}),
    Status.PARTIALLY_FILLED: frozenset({EventKind.FILL, EventKind.CANCELLED, EventKind.EXPIRED}),
    **{status: frozenset() for status in TERMINAL},
}
_AFTER = {
    EventKind.ACCEPTED: Status.OPEN,
    EventKind.CANCELLED: Status.CANCELLED,
    EventKind.REJECTED: Status.REJECTED,
    EventKind.EXPIRED: Status.EXPIRED,
}


def apply_event(order: Order, event: OrderEvent) -> Order:
    """The order after `event`; raises IllegalTransition when the event cannot apply in the order's state."""
    if event.client_order_id != order.client_order_id:
        raise IllegalTransition("other_order", f"event of {event.client_order_id} given to {order.client_order_id}")
    if event.kind not in ACCEPTS[order.status]:
        raise IllegalTransition(
            f"{event.kind}_when_{order.status}",
            f"{order.client_order_id}: {event.kind} when the order is {order.status}",
        )
    venue_order_id = event.venue_order_id or order.venue_order_id
    if event.kind != EventKind.FILL:
        return replace(
            order, status=_AFTER[event.kind], venue_order_id=venue_order_id, reason=event.reason, updated_ms=event.at_ms
        )
    fill = event.fill
    if fill is None:
        raise IllegalTransition("fill_without_fill", f"{order.client_order_id}: a fill event without its fill")
    problem = fill_problem(order, fill)
    if problem is not None:
        raise IllegalTransition(*problem)
    filled = order.filled + fill.quantity
    return replace(
        order,
        status=Status.FILLED if filled == order.request.quantity else Status.PARTIALLY_FILLED,
        filled=filled,
        filled_notional=order.filled_notional + fill.notional,
        fees=order.fees + fill.fee,
        venue_order_id=venue_order_id,
        updated_ms=event.at_ms,
    )


def fill_problem(order: Order, fill: Fill) -> tuple[str, str] | None:
    """(reason, detail) when `fill` cannot belong to `order`: another order's, the wrong side or product, a
    non-positive quantity or price, a negative fee, or more than the order has left."""
    name = order.client_order_id
    request = order.request
    if fill.client_order_id != name:
        return "other_order", f"fill {fill.fill_id} of {fill.client_order_id} given to {name}"
    if (fill.side, fill.product, fill.venue) != (request.side, request.product, request.venue):
        return "mismatched_fill", f"fill {fill.fill_id} is {fill.side} {fill.product} on {fill.venue}; {name} is not"
    if not (fill.quantity.is_finite() and fill.quantity > 0 and fill.price.is_finite() and fill.price > 0):
        return "bad_fill", f"fill {fill.fill_id}: quantity {fill.quantity} at {fill.price}"
    if not fill.fee.is_finite() or fill.fee < 0:
        return "bad_fill", f"fill {fill.fill_id}: fee {fill.fee}"
    if fill.quantity > order.remaining:
        return "overfill", f"fill {fill.fill_id} of {fill.quantity} but {name} has {order.remaining} left"
    if request.type == OrderType.LIMIT and request.limit_price is not None:
        worse = fill.price > request.limit_price if request.side == Side.BUY else fill.price < request.limit_price
        if worse:
            return "through_limit", f"fill {fill.fill_id} at {fill.price}, beyond {name}'s limit {request.limit_price}"
    return None


def lot(quantity: Decimal, increment: Decimal) -> Decimal:
    """`quantity` rounded down to the product's size increment (never more than was asked)."""
    return (quantity / increment).to_integral_value(rounding=ROUND_DOWN) * increment


def buy_size(spend: Decimal, price: Decimal, taker_fee: Decimal, increment: Decimal) -> Decimal:
    """How much coin `spend` of quote buys at `price` with the taker fee on top (what a buy's reserve holds)."""
    return lot(spend / (price * (1 + taker_fee)), increment)
