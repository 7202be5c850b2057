"""A trading session: market events in time order -> venue, strategy, execution service; one loop for backtests
and live sessions.

The events are book frames (a snapshot replaces the book), trades, candles
(where no book is known: the close is both best bid and offer) and
decisions (a strategy's turn, with the features known at that time). The
session keeps the exchange's top of book for pricing and the risk checks,
passes frames and trades to the paper venue (candles to the step venue)
when it trades on paper, applies the venue's reports due by each event's
time, and at a decision asks the strategy for intents, sends them through
the service and applies what the venue reported by then before it marks the
account. Client order ids
are made of the strategy, the product, the decision's time and the intent's
place in it, so a decision replayed is the same order (idempotent), and two
runs over the same events give the same orders and fills. An order that
replaces others (a close buy replacing the previous one) is sent once the
venue has confirmed their cancels, so their reserves are free and never
promised twice; if the next decision comes first, it is dropped. A decision that
cannot be taken (no book, a stale book, a model output that is not a number)
is skipped, counted by reason and logged once with a sample.

A multi-leg decision (a pair's, `DecisionEvent.legs`) needs a fresh quote of
every leg; its intents name their products and a group, and a group whose
legs do not all fill within ``leg_timeout_ms`` of the decision is undone
(`legs.py`), counted in `SessionLog.unwound` and logged.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from coinflow.books import Level, OrderBook
from coinflow.trading.orders import OrderRequest, Side, split_product
from coinflow.trading.steps import Step, StepVenue
from inference_pipeline.execution.legs import LegGroup, Verdict, leg_verdict, unwind_requests
from inference_pipeline.execution.paper import PaperVenue
from inference_pipeline.execution.risk import Refusal
from inference_pipeline.execution.service import ExecutionService, Quote
from inference_pipeline.execution.store import VenueRequest
from inference_pipeline.execution.strategies import Cancel, MarketView, Place, PortfolioView, Strategy

logger = logging.getLogger(__name__)

QUOTE_LEVELS = 50  # levels a side strategies and the risk checks see (market orders are valued by walking them)


@dataclass(frozen=True)
class BookEvent:
    product: str
    snapshot: bool
    bids: Sequence[Level]
    asks: Sequence[Level]
    at_ms: int


@dataclass(frozen=True)
class TradeEvent:
    product: str
    price: Decimal
    quantity: Decimal
    aggressor: Side | None
    at_ms: int


@dataclass(frozen=True)
class CandleEvent:
    """A closed candle of `product` (its time: when it closed)."""

    product: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    at_ms: int


@dataclass(frozen=True)
class DecisionEvent:
    """A strategy's turn on `product`; a multi-leg decision (a pair's) names its `legs`, each needing a fresh quote."""

    product: str
    at_ms: int
    features: Mapping[str, float]
    legs: tuple[str, ...] = ()


MarketEvent = BookEvent | TradeEvent | CandleEvent | DecisionEvent


@dataclass(frozen=True)
class EquityPoint:
    at_ms: int
    mid: Decimal
    ask: Decimal
    equity: Decimal
    position: Decimal


@dataclass
class SessionLog:
    """What a session did: the equity at every decision, the skipped decisions by reason, refused orders."""

    equity: list[EquityPoint] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    unwound: Counter[str] = field(default_factory=Counter)  # multi-leg intents undone, by why (`legs.py`)
    sent: int = 0


class TradingSession:
    """Runs one strategy on one product through the execution service (see the module docstring)."""

    def __init__(
        self,
        service: ExecutionService,
        strategy: Strategy,
        product: str,
        max_book_age_ms: int,
        quote_asset: str | None = None,
        leg_timeout_ms: int = 0,
    ) -> None:
        self.service = service
        self.strategy = strategy
        self.product = product  # a product, or the name of a multi-leg strategy's decisions (with `quote_asset`)
        self.quote_asset = quote_asset or split_product(product)[1]
        self.max_book_age_ms = max_book_age_ms
        self.leg_timeout_ms = leg_timeout_ms
        self.groups: dict[str, LegGroup] = {}  # multi-leg intents not settled yet
        self.books: dict[str, OrderBook] = {}
        self.quotes: dict[str, Quote] = {}
        self.log = SessionLog()
        self._logged: set[str] = set()
        self._waiting: tuple[frozenset[str], list[str]] | None = None  # cancelled ids, held orders replacing them
        self._replay: deque[VenueRequest] | None = None
        self._recover_until: int | None = None
        venue = service.venue
        self.paper = venue if isinstance(venue, PaperVenue) else None
        self.steps = venue if isinstance(venue, StepVenue) else None

    def run(self, events: Iterable[MarketEvent]) -> SessionLog:
        """Every event in turn, then the reports still on their way."""
        last = None
        for event in events:
            self.on_event(event)
            last = event.at_ms
        if last is not None:
            self.drain(last)
        return self.log

    def recover(self, requests: Sequence[VenueRequest], until_ms: int) -> None:
        """After a restart, before trading again: the market up to `until_ms` (the last recorded request or report)
        goes to the paper venue with the recorded requests at their times and nothing is decided, so that the
        venue is where it was when the process stopped (its reports already recorded are passed over); then the
        orders that were waiting for cancels wait again."""
        self._replay = deque(r for r in requests if r.kind != "hold")
        self._recover_until = until_ms

    def _recovering(self, event: MarketEvent) -> bool:
        if self._recover_until is None:
            return False
        if event.at_ms <= self._recover_until:
            if isinstance(event, DecisionEvent):
                self.service.poll(event.at_ms)
                self._resend(event.at_ms, inclusive=True)
                return True
            self._resend(event.at_ms, inclusive=False)
            self._on_market(event)
            self.service.poll(event.at_ms)
            self._resend(event.at_ms, inclusive=True)
            return True
        self._resend(self._recover_until, inclusive=True)
        self._recover_until = self._replay = None
        held = self.service.held
        if held:
            holds = {r.at_ms for r in self.service.venue_requests if r.kind == "hold" and r.client_order_id in held}
            cancelled = {
                r.client_order_id for r in self.service.venue_requests if r.kind == "cancel" and r.at_ms in holds
            }
            self._waiting = (frozenset(cancelled), sorted(held))
        return False

    def _resend(self, limit_ms: int, inclusive: bool) -> None:
        while self._replay and (self._replay[0].at_ms < limit_ms or (inclusive and self._replay[0].at_ms == limit_ms)):
            self.service.replay_request(self._replay.popleft())

    def _on_market(self, event: MarketEvent) -> None:
        if isinstance(event, BookEvent):
            self._on_book(event)
        elif isinstance(event, TradeEvent) and self.paper is not None:
            self.paper.on_trade(event.product, event.price, event.quantity, event.aggressor, event.at_ms)
        elif isinstance(event, CandleEvent):
            if self.steps is not None:
                self.steps.on_step(event.product, Step(event.at_ms, event.close, event.close, event.low, event.high))
            # the step venue fills any size at the close: one level of unbounded depth, so orders are sized and
            # valued at the price they will fill at
            level = ((event.close, Decimal("Infinity")),)
            self.quotes[event.product] = Quote(event.product, event.close, event.close, event.at_ms, level, level)

    def on_event(self, event: MarketEvent) -> None:
        if self._recovering(event):
            return
        self._on_market(event)
        self.service.poll(event.at_ms)
        self._release(event.at_ms)
        self._settle(event.at_ms)
        if isinstance(event, DecisionEvent) and (event.product == self.product or event.legs):
            self._decide(event)

    def drain(self, after_ms: int) -> None:
        """Let the orders and reports on their way arrive (nothing else happens in the market meanwhile)."""
        due = self.paper.next_due_ms() if self.paper else None
        while due is not None:
            now = max(due, after_ms)
            self.service.poll(now)
            self._release(now)
            self._settle(now)
            due = self.paper.next_due_ms() if self.paper else None

    def _on_book(self, event: BookEvent) -> None:
        if self.paper is not None:
            self.paper.on_book(event.product, event.snapshot, event.bids, event.asks, event.at_ms)
        book = self.books.setdefault(event.product, OrderBook())
        if event.snapshot:
            book.clear()
        book.apply(event.bids, event.asks)
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None and bid[0] < ask[0]:
            self.quotes[event.product] = Quote(
                event.product,
                bid[0],
                ask[0],
                event.at_ms,
                tuple(book.top_bids(QUOTE_LEVELS)),
                tuple(book.top_asks(QUOTE_LEVELS)),
            )
        else:
            self.quotes.pop(event.product, None)  # one-sided or crossed: nothing to price against

    def _skip(self, reason: str, sample: object) -> None:
        self.log.skipped[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            logger.warning("decision skipped (%s); sample: %s (logged once; counted)", reason, sample)

    def _decide(self, event: DecisionEvent) -> None:
        legs = event.legs or (self.product,)
        for leg in legs:
            leg_quote = self.quotes.get(leg)
            if leg_quote is None:
                self._skip("no_book", event)
                return
            if event.at_ms - leg_quote.at_ms > self.max_book_age_ms:
                self._skip("stale_book", f"book of {leg} of {leg_quote.at_ms} at a decision of {event.at_ms}")
                return
        quote = self.quotes[legs[0]]
        if self._waiting is not None:
            self._skip("replace_superseded", f"orders replacing {sorted(self._waiting[0])} at {event.at_ms}")
            for name in self._waiting[1]:
                self.service.drop(name, event.at_ms, "superseded by the next decision before it could be sent")
            self._waiting = None
        portfolio = self.portfolio(legs[0])
        market = MarketView(event.product, event.at_ms, quote, event.features, {leg: self.quotes[leg] for leg in legs})
        try:
            intents = self.strategy.decide(market, portfolio)
        except (ValueError, ArithmeticError) as exc:
            self._skip("bad_model_output", f"{exc} at {event.at_ms}")
            return
        cancels = [i.client_order_id for i in intents if isinstance(i, Cancel)]
        places = [(n, i) for n, i in enumerate(intents) if isinstance(i, Place)]
        for name in cancels:
            self.service.cancel(name, event.at_ms)
        if cancels and places:
            held = [self._place(place, event, n, hold=True) for n, place in places]
            self._waiting = (frozenset(cancels), [name for name in held if name is not None])
        grouped: dict[str, list[str | None]] = {}
        for n, place in [] if cancels else places:
            placed = self._place(place, event, n)
            if place.group is not None:
                grouped.setdefault(place.group, []).append(placed)
        for group, names in grouped.items():
            self.groups[group] = LegGroup(group, tuple(names), event.at_ms + self.leg_timeout_ms)
        self.service.poll(event.at_ms)  # what a venue without latency already did
        self._release(event.at_ms)
        self._settle(event.at_ms)
        self._mark(event.at_ms, quote)

    def _settle(self, now_ms: int) -> None:
        """Settle the multi-leg intents whose legs all filled; undo those that cannot (`legs.py`): the legs still
        working cancelled, the filled ones unwound with market orders; the strategy is told either way."""
        for name, group in list(self.groups.items()):
            verdict, why = leg_verdict(group, self.service.orders, now_ms)
            if verdict == Verdict.PENDING:
                continue
            del self.groups[name]
            if verdict == Verdict.UNDO:
                legs = [self.service.orders[leg] for leg in group.legs if leg is not None]
                for order in legs:
                    if order.live:
                        self.service.cancel(order.client_order_id, now_ms)
                for request in unwind_requests(legs, now_ms, self.strategy.name):
                    result = self.service.submit(request, self.quotes, now_ms)
                    if isinstance(result, Refusal):
                        self.log.refused[result.limit] += 1
                        logger.error("the unwind %s was refused (%s): the leg stays open", request.client_order_id,
                                     result.detail)  # fmt: skip
                    else:
                        self.log.sent += 1
                self.service.poll(now_ms)
                self.log.unwound[why] += 1
                logger.warning("intent %s undone (%s): %d filled leg(s) unwound (counted)", name, why,
                               sum(1 for o in legs if o.filled > 0))  # fmt: skip
            settled = getattr(self.strategy, "settled", None)
            if settled is not None:
                settled(name, verdict == Verdict.FILLED)

    def _release(self, now_ms: int) -> None:
        """Send the orders waiting for their cancels once none of the cancelled orders is live any more."""
        if self._waiting is None:
            return
        names, held = self._waiting
        if any(self.service.orders[name].live for name in names if name in self.service.orders):
            return
        self._waiting = None
        for name in held:
            result = self.service.release(name, self.quotes, now_ms)
            if isinstance(result, Refusal):
                self.log.refused[result.limit] += 1
            else:
                self.log.sent += 1

    def _place(self, intent: Place, event: DecisionEvent, index: int, hold: bool = False) -> str | None:
        """Send one intent of `event`'s decision (its id), or hold it until `_release`; returns its id unless it was
        refused."""
        at_ms = event.at_ms
        request = OrderRequest(
            client_order_id=f"{self.strategy.name}-{event.product}-{at_ms}-{index}",
            venue=self.service.venue.name,
            product=intent.product or self.product,
            side=intent.side,
            type=intent.type,
            quantity=intent.quantity,
            limit_price=intent.limit_price,
            time_in_force=intent.time_in_force,
            post_only=intent.post_only,
            created_ms=at_ms,
            strategy=f"{self.strategy.name}:{intent.tag}",
        )
        result = self.service.hold(request, at_ms) if hold else self.service.submit(request, self.quotes, at_ms)
        if isinstance(result, Refusal):
            self.log.refused[result.limit] += 1
            return None
        if not hold:
            self.log.sent += 1
        return request.client_order_id

    def portfolio(self, product: str | None = None) -> PortfolioView:
        product = product or self.product
        base, quote_asset = split_product(product)
        venue = self.service.venue.name
        free = self.service.available(self.quotes)
        return PortfolioView(
            position=self.service.position(product).quantity,
            available_base=free.get((venue, base), Decimal(0)),
            available_quote=free.get((venue, quote_asset), Decimal(0)),
            open_orders=tuple(self.service.open_orders(product)),
            taker_fee=self.service.fees.taker,
        )

    def _mark(self, at_ms: int, quote: Quote) -> None:
        equity = self.service.mark(self.quotes, self.quote_asset).equity
        self.log.equity.append(
            EquityPoint(at_ms, quote.mid, quote.best_ask, equity, self.service.position(self.product).quantity)
        )
