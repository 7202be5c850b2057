"""The paper venue: fills orders against real books and trades, in event time, with latency and fees, as pure code.

It keeps its own copy of each product's L2 book, built from the same frames
the order-book pipeline reads (a snapshot replaces the book, an update
changes it), and hears the product's trades. Everything happens on the
clock of the market data, so a backtest and a live session over the same
data get the same fills:

- An order reaches the book ``order_latency_ms`` after it was sent, and sees
  the book as it is then (an order due at the time of a market event arrives
  before that event).
- A market order (and the marketable part of a limit order) walks the other
  side level by level at each level's price, as a taker, and takes that
  quantity out of the venue's copy of the book until the exchange's next
  frame rewrites the level. What depth cannot fill is cancelled (market and
  ioc orders); a post-only order that would take is rejected.
- A resting limit order fills as a maker, at its limit, only when the market
  reaches it past the queue in front of it: the quantity at its price on its
  side when it arrived (never more than that level holds later, since
  cancellations may come from ahead of it), reduced by trades at its price.
  A trade through its price (a sell below a bid, a buy above an offer) or the
  other side of the book crossing its price fills it, as far as the trade or
  the crossing quantity goes; a trade only at its price fills what is left
  after the queue. Touching the price fills nothing.
- Every report (accepted, fill, cancelled, rejected, expired) reaches the
  trader ``report_latency_ms`` after it happened; a fill carries both times
  and is named by its order and its number there (``<client id>:<n>``), so
  the same fill computed again (a replayed market event) is the same fill.
- A good-till-time order expires at its time; a cancel takes effect when it
  reaches the venue, if the order is still there.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from coinflow.books import Level, OrderBook
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
from coinflow.trading.steps import VENUE  # both paper venues answer to the same name


@dataclass(frozen=True)
class Latency:
    order_ms: int = 0  # decision -> the order reaches the book
    report_ms: int = 0  # the venue's event -> the trader hears of it


@dataclass
class Resting:
    """A limit order in the paper book: what is left of it and the quantity ahead of it at its price."""

    request: OrderRequest
    remaining: Decimal
    queue_ahead: Decimal
    fills: int = 0  # fills so far: the next fill's id is the order's id and its number


@dataclass(order=True)
class _Due:
    at_ms: int
    seq: int
    item: object = field(compare=False)


def walk(levels: Iterable[Level], quantity: Decimal, limit: Decimal | None, side: Side) -> list[Level]:
    """The (price, quantity) taken from the other side's levels (best first) by an order of `quantity`, up to
    `limit` (None: any price)."""
    taken: list[Level] = []
    left = quantity
    for price, available in levels:
        if left <= 0:
            break
        if limit is not None and (price > limit if side == Side.BUY else price < limit):
            break
        take = min(left, available)
        if take > 0:
            taken.append((price, take))
            left -= take
    return taken


def crosses(side: Side, limit: Decimal, book: OrderBook) -> bool:
    """Whether a limit order would trade on arrival: a buy at or above the best offer, a sell at or below the bid."""
    best = book.best_ask() if side == Side.BUY else book.best_bid()
    return best is not None and (best[0] <= limit if side == Side.BUY else best[0] >= limit)


def queue_at(book: OrderBook, side: Side, price: Decimal) -> Decimal:
    """The quantity resting at `price` on an order's own side (ahead of a new order there)."""
    levels = book.bids if side == Side.BUY else book.asks
    return levels.get(price, Decimal(0))


def take(book: OrderBook, side: Side, taken: list[Level]) -> list[Level]:
    """Take the levels an order of `side` traded with out of the other side of the venue's copy of the book."""
    levels = book.asks if side == Side.BUY else book.bids
    for price, quantity in taken:
        book.set_level("ask" if side == Side.BUY else "bid", price, levels.get(price, Decimal(0)) - quantity)
    return taken


def trade_fill(resting: Resting, price: Decimal, quantity: Decimal, aggressor: Side | None) -> Decimal:
    """How much of a resting order a trade fills, updating its queue: a trade through its price fills up to the
    trade's quantity; one at its price first works through the queue ahead. Only trades of the other side's
    aggressors count (None: unknown, both)."""
    request = resting.request
    if aggressor is not None and aggressor == request.side:
        return Decimal(0)
    limit = request.limit_price
    assert limit is not None, "only limit orders rest"
    through = price < limit if request.side == Side.BUY else price > limit
    if through:
        return min(resting.remaining, quantity)
    if price != limit:
        return Decimal(0)
    past_queue = quantity - resting.queue_ahead
    resting.queue_ahead = max(resting.queue_ahead - quantity, Decimal(0))
    return min(resting.remaining, past_queue) if past_queue > 0 else Decimal(0)


class PaperVenue:
    """Paper fills against books and trades (see the module docstring); `advance` hands over the due reports."""

    def __init__(self, fees: FeeSchedule, latency: Latency | None = None, name: str = VENUE) -> None:
        self.fees = fees
        self.latency = latency or Latency()
        self.name = name
        self.books: dict[str, OrderBook] = {}
        self.book_ms: dict[str, int] = {}
        self.resting: dict[str, Resting] = {}
        self._pending: list[_Due] = []  # orders and cancels on their way to the book
        self._reports: list[_Due] = []
        self._seq = itertools.count()
        self._known: set[str] = set()

    # --- the trader's side -------------------------------------------------

    def submit(self, request: OrderRequest, now_ms: int) -> None:
        """Send an order; it reaches the book after the order latency."""
        heapq.heappush(self._pending, _Due(now_ms + self.latency.order_ms, next(self._seq), request))

    def cancel(self, client_order_id: str, now_ms: int) -> None:
        """Ask for a cancel; it takes effect when it reaches the venue."""
        heapq.heappush(self._pending, _Due(now_ms + self.latency.order_ms, next(self._seq), client_order_id))

    def advance(self, now_ms: int) -> list[OrderEvent]:
        """Let everything due by `now_ms` happen (arrivals, expiries) and return the reports due by then."""
        self._arrive(now_ms)
        self._expire(now_ms)
        out = []
        while self._reports and self._reports[0].at_ms <= now_ms:
            report = heapq.heappop(self._reports).item
            assert isinstance(report, OrderEvent)
            out.append(report)
        return out

    def next_due_ms(self) -> int | None:
        """When the next arrival or report falls due (None: nothing is on its way)."""
        times = [q[0].at_ms for q in (self._pending, self._reports) if q]
        return min(times) if times else None

    def open_orders(self) -> list[str]:
        """Client order ids of the orders resting here."""
        return sorted(self.resting)

    # --- the market's side -------------------------------------------------

    def on_book(self, product: str, snapshot: bool, bids: Iterable[Level], asks: Iterable[Level], at_ms: int) -> None:
        """A book frame of `product` at `at_ms` (a snapshot replaces the book): orders due first arrive, then the
        frame applies, then resting orders the other side now crosses fill."""
        self._arrive(at_ms)
        self._expire(at_ms)
        book = self.books.setdefault(product, OrderBook())
        if snapshot:
            book.clear()
        book.apply(bids, asks)
        self.book_ms[product] = at_ms
        for resting in self._resting_of(product):
            self._queue_shrinks(resting, book)
            self._crossed(resting, book, at_ms)

    def on_trade(self, product: str, price: Decimal, quantity: Decimal, aggressor: Side | None, at_ms: int) -> None:
        """A trade of `product` printed at `at_ms`: orders due first arrive, then resting orders it reaches fill."""
        self._arrive(at_ms)
        self._expire(at_ms)
        for resting in self._resting_of(product):
            share = trade_fill(resting, price, quantity, aggressor)
            if share > 0:
                assert resting.request.limit_price is not None
                self._fill(resting, resting.request.limit_price, share, Liquidity.MAKER, at_ms)

    # --- inside ------------------------------------------------------------

    def _resting_of(self, product: str) -> Iterator[Resting]:
        return (r for r in list(self.resting.values()) if r.request.product == product)

    def _report(self, event: OrderEvent) -> None:
        heapq.heappush(self._reports, _Due(event.at_ms + self.latency.report_ms, next(self._seq), event))

    def _arrive(self, now_ms: int) -> None:
        while self._pending and self._pending[0].at_ms <= now_ms:
            due = heapq.heappop(self._pending)
            if isinstance(due.item, OrderRequest):
                self._execute(due.item, due.at_ms)
            else:
                assert isinstance(due.item, str)
                resting = self.resting.pop(due.item, None)
                if resting is not None:
                    self._report(OrderEvent(due.item, EventKind.CANCELLED, due.at_ms, reason="cancelled on request"))

    def _expire(self, now_ms: int) -> None:
        for name, resting in list(self.resting.items()):
            expiry = resting.request.expire_ms
            if expiry is not None and expiry <= now_ms:
                del self.resting[name]
                self._report(OrderEvent(name, EventKind.EXPIRED, expiry, reason="good-till-time passed"))

    def _execute(self, request: OrderRequest, at_ms: int) -> None:
        name = request.client_order_id
        if name in self._known:
            return  # the same client order id twice is one order
        self._known.add(name)
        book = self.books.get(request.product)
        if book is None or book.best_bid() is None or book.best_ask() is None:
            self._report(OrderEvent(name, EventKind.REJECTED, at_ms, reason=f"no book of {request.product}"))
            return
        limit = request.limit_price if request.type == OrderType.LIMIT else None
        if request.post_only and limit is not None and crosses(request.side, limit, book):
            self._report(OrderEvent(name, EventKind.REJECTED, at_ms, reason="post-only order would take liquidity"))
            return
        self._report(OrderEvent(name, EventKind.ACCEPTED, at_ms, venue_order_id=name))
        order = Resting(request, request.quantity, Decimal(0))
        other = book.top_asks(len(book.asks)) if request.side == Side.BUY else book.top_bids(len(book.bids))
        for price, quantity in take(book, request.side, walk(other, request.quantity, limit, request.side)):
            self._fill(order, price, quantity, Liquidity.TAKER, at_ms, rests=False)
        if order.remaining <= 0:
            return
        if limit is None or request.time_in_force == TimeInForce.IOC:
            self._report(OrderEvent(name, EventKind.CANCELLED, at_ms, reason="no more liquidity within the order"))
            return
        order.queue_ahead = queue_at(book, request.side, limit)
        self.resting[name] = order

    def _queue_shrinks(self, resting: Resting, book: OrderBook) -> None:
        limit = resting.request.limit_price
        assert limit is not None
        resting.queue_ahead = min(resting.queue_ahead, queue_at(book, resting.request.side, limit))

    def _crossed(self, resting: Resting, book: OrderBook, at_ms: int) -> None:
        request = resting.request
        limit = request.limit_price
        assert limit is not None
        other = book.asks_up_to(limit) if request.side == Side.BUY else book.bids_down_to(limit)
        taken = take(book, request.side, walk(other, resting.remaining, limit, request.side))
        crossing = sum((quantity for _, quantity in taken), Decimal(0))
        if crossing > 0:
            self._fill(resting, limit, crossing, Liquidity.MAKER, at_ms)

    def _fill(
        self, order: Resting, price: Decimal, quantity: Decimal, liquidity: Liquidity, at_ms: int, rests: bool = True
    ) -> None:
        request = order.request
        fill = Fill(
            fill_id=f"{request.client_order_id}:{order.fills + 1}",
            client_order_id=request.client_order_id,
            venue=request.venue,
            product=request.product,
            side=request.side,
            price=price,
            quantity=quantity,
            fee=self.fees.fee(price * quantity, liquidity),
            liquidity=liquidity,
            exchange_ms=at_ms,
            local_ms=at_ms + self.latency.report_ms,
        )
        order.remaining -= quantity
        order.fills += 1
        self._report(
            OrderEvent(
                request.client_order_id, EventKind.FILL, at_ms, venue_order_id=request.client_order_id, fill=fill
            )
        )
        if rests and order.remaining <= 0:
            self.resting.pop(request.client_order_id, None)
