"""Risk limits checked before every order, as pure code: each refusal names the limit it hit.

The checks, in order: the kill switch; a book to price against (present and
not stale); the price band around the mid; the order size; the order rate;
the reserves (available = balance minus what open orders hold; a market
order is valued at the worst price it walks to in the book; a margin account,
``allow_short``, may sell coin it does not hold); the position
and notional per product and in total, after the order; the daily loss
(after which only orders that reduce a position pass). A limit of None is
off. An order reduces a position when it trades against it and does not go
past zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from coinflow.books import Level
from coinflow.trading.orders import OrderRequest, OrderType, Side


@dataclass(frozen=True)
class RiskLimits:
    max_position: Decimal | None = None  # coin per product, either side
    max_notional: Decimal | None = None  # quote per product, at the mid
    max_total_notional: Decimal | None = None  # quote over every product of the account
    max_order_quantity: Decimal | None = None
    max_orders_per_second: int | None = None
    max_daily_loss: Decimal | None = None  # quote: realised + unrealised - fees since the day began
    price_band: Decimal | None = None  # fraction of the mid a limit (or a market order's worst fill) may stray
    max_book_age_ms: int | None = None
    allow_short: bool = False  # a margin account: a sell may exceed the coin held (a negative balance)


@dataclass(frozen=True)
class Refusal:
    """Why an order was not sent: the limit's name (a metric label) and the numbers."""

    limit: str
    detail: str


@dataclass(frozen=True)
class RiskContext:
    """What the checks read, at the time of the order."""

    now_ms: int
    kill_switch: bool
    mid: Decimal | None
    book_ms: int | None
    position: Decimal  # coin held of the order's product (negative: short)
    notionals: Mapping[str, Decimal]  # quote per product of the account, at the mids (magnitudes)
    available_base: Decimal
    available_quote: Decimal
    taker_fee: Decimal
    recent_orders_ms: Sequence[int]  # send times of the orders of the last second
    daily_pnl: Decimal
    levels: Sequence[Level] = ()  # the other side's book, best first (a market order is valued by walking it)


def reduces(request: OrderRequest, position: Decimal) -> bool:
    """Whether an order only shrinks the position: it trades against it and does not go past zero."""
    signed = request.quantity if request.side == Side.BUY else -request.quantity
    return position != 0 and (position > 0) != (signed > 0) and abs(signed) <= abs(position)


def worst_price(levels: Sequence[Level], quantity: Decimal) -> Decimal | None:
    """The last price a market order of `quantity` reaches walking `levels` (best first); None when they cannot
    fill it."""
    left = quantity
    for price, available in levels:
        left -= available
        if left <= 0:
            return price
    return None


def order_price(request: OrderRequest, mid: Decimal, band: Decimal | None, levels: Sequence[Level] = ()) -> Decimal:
    """The price an order is valued at: its limit; for a market order the worst price it walks to in the other
    side's `levels`, or, when they cannot fill it, the mid moved by the band (the mid when there is no band)."""
    if request.type == OrderType.LIMIT and request.limit_price is not None:
        return request.limit_price
    walked = worst_price(levels, request.quantity)
    if walked is not None:
        return walked
    move = band or Decimal(0)
    return mid * (1 + move) if request.side == Side.BUY else mid * (1 - move)


def check_order(request: OrderRequest, limits: RiskLimits, ctx: RiskContext) -> Refusal | None:
    """The first limit the order would break, or None when it may be sent."""
    if ctx.kill_switch:
        return Refusal("kill_switch", "the kill switch is on: no new orders")
    if ctx.mid is None or ctx.book_ms is None:
        return Refusal("no_book", f"no book of {request.product} to price the order against")
    age = ctx.now_ms - ctx.book_ms
    if limits.max_book_age_ms is not None and age > limits.max_book_age_ms:
        return Refusal("stale_book", f"the book of {request.product} is {age} ms old (limit {limits.max_book_age_ms})")
    mid = ctx.mid
    price = order_price(request, mid, limits.price_band, ctx.levels)
    if limits.price_band is not None:
        off = abs(price - mid) / mid
        if off > limits.price_band:
            what = "limit" if request.type == OrderType.LIMIT else "the market order's worst fill"
            return Refusal("price_band", f"{what} {price} is {off:.4%} from the mid {mid} (band {limits.price_band:%})")
    if limits.max_order_quantity is not None and request.quantity > limits.max_order_quantity:
        return Refusal("order_size", f"quantity {request.quantity} above the limit {limits.max_order_quantity}")
    if limits.max_orders_per_second is not None:
        recent = sum(1 for t in ctx.recent_orders_ms if ctx.now_ms - t < 1000)
        if recent >= limits.max_orders_per_second:
            return Refusal("order_rate", f"{recent} orders in the last second (limit {limits.max_orders_per_second})")
    if request.side == Side.SELL and not limits.allow_short and request.quantity > ctx.available_base:
        return Refusal("reserves", f"selling {request.quantity} with {ctx.available_base} available")
    if request.side == Side.BUY:
        cost = request.quantity * price * (1 + ctx.taker_fee)
        if cost > ctx.available_quote:
            return Refusal("reserves", f"buying for up to {cost} with {ctx.available_quote} available")
    shrinking = reduces(request, ctx.position)
    if not shrinking:
        signed = request.quantity if request.side == Side.BUY else -request.quantity
        after = ctx.position + signed
        if limits.max_position is not None and abs(after) > limits.max_position:
            return Refusal("position", f"position {after} after the order, above {limits.max_position}")
        product_notional = abs(after) * mid
        if limits.max_notional is not None and product_notional > limits.max_notional:
            return Refusal(
                "notional", f"{product_notional} in {request.product} after the order (limit {limits.max_notional})"
            )
        if limits.max_total_notional is not None:
            others = sum((v for p, v in ctx.notionals.items() if p != request.product), Decimal(0))
            total = others + product_notional
            if total > limits.max_total_notional:
                return Refusal("total_notional", f"{total} in all after the order (limit {limits.max_total_notional})")
        if limits.max_daily_loss is not None and -ctx.daily_pnl >= limits.max_daily_loss:
            return Refusal(
                "daily_loss", f"the day's loss {-ctx.daily_pnl} reached {limits.max_daily_loss}: only reducing orders"
            )
    return None
