"""The execution service: one account's orders, fills, balances and positions, kept in the trading database.

Strategies hand it order requests; it refuses malformed ones and those a
risk limit forbids (each refusal counted by limit), records an order before
sending it, and folds every report of the venue into the order's state,
appending each to the database, so that a restart rebuilds exactly the same
orders, balances and positions (`ExecutionService.restore`). Reports that
cannot apply (a fill of an unknown order, a fill seen before, a fill past the
order's quantity, an event after the order is done) are refused: counted by
reason, logged once with a sample, never recorded; a report already recorded
(the venue saying it again after a restart) is passed over. Every order sent
and cancel asked for is recorded first, in order, so that a restart can hand
the paper venue the same requests at the same times again. An order whose sending
failed (a timeout) stays ``new``: its state is unknown until the venue is
asked (`reconcile`), never assumed.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from coinflow.books import Level
from coinflow.trading.accounting import (
    EntryKind,
    LedgerEntry,
    Mark,
    Position,
    apply_fill,
    available,
    balances,
    fill_entries,
    mark_to_market,
)
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import (
    EventKind,
    IllegalTransition,
    Order,
    OrderEvent,
    OrderRequest,
    Side,
    apply_event,
    request_problem,
    split_product,
)
from inference_pipeline.execution.risk import Refusal, RiskContext, RiskLimits, check_order
from inference_pipeline.execution.store import Control, Recorded, TradingStore, VenueRequest

logger = logging.getLogger(__name__)

KILL_SWITCH = "kill_switch"
DAY_OPEN = "day_open_equity"


class Venue(Protocol):
    """Where orders go: the paper venue, or an exchange's gateway."""

    name: str

    def submit(self, request: OrderRequest, now_ms: int) -> None: ...

    def cancel(self, client_order_id: str, now_ms: int) -> None: ...

    def advance(self, now_ms: int) -> list[OrderEvent]: ...

    def open_orders(self) -> list[str]: ...


@dataclass(frozen=True)
class Quote:
    """The top of a product's book when an order is decided."""

    product: str
    best_bid: Decimal
    best_ask: Decimal
    at_ms: int
    bids: tuple[Level, ...] = ()  # the top levels, best first, where the book is known
    asks: tuple[Level, ...] = ()

    @property
    def mid(self) -> Decimal:
        return (self.best_bid + self.best_ask) / 2


Listener = Callable[[OrderEvent, Order], None]


def report_key(event: OrderEvent) -> tuple:
    """What makes a report the same report: its order, kind, time and fill."""
    return (event.client_order_id, str(event.kind), event.at_ms, event.fill.fill_id if event.fill else None)


def fold_orders(recorded: Recorded) -> dict[str, Order]:
    """Every recorded order in its state after its recorded events (which were checked before they were written)."""
    orders = {r.client_order_id: Order(r) for r in recorded.requests}
    for event in recorded.events:
        orders[event.client_order_id] = apply_event(orders[event.client_order_id], event)
    return orders


class ExecutionService:
    """Orders, fills, balances and positions of one account on one venue (see the module docstring)."""

    def __init__(
        self,
        store: TradingStore,
        venue: Venue,
        limits: RiskLimits,
        fees: FeeSchedule,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.store = store
        self.venue = venue
        self.limits = limits
        self.fees = fees
        self.listeners = list(listeners)
        self.orders: dict[str, Order] = {}
        self.positions: dict[tuple[str, str], Position] = {}
        self.balances: dict[tuple[str, str], Decimal] = {}
        self.kill_switch = False
        self.day_open: dict[str, Decimal] = {}  # UTC day -> equity then
        self.refusals: Counter[str] = Counter()
        self.bad_reports: Counter[str] = Counter()
        self._fill_ids: set[tuple[str, str]] = set()
        self._fill_counts: Counter[str] = Counter()
        self._recorded_reports: set[tuple] = set()
        self.replayed_reports = 0
        self.venue_requests: list[VenueRequest] = []
        self.held: set[str] = set()  # orders recorded but not sent yet (`hold`)
        self._live: dict[str, None] = {}  # ids of the live orders, in the order they came
        self._sent_ms: deque[int] = deque(maxlen=1000)
        self._logged: set[str] = set()
        self._controls_seen = 0

    # --- state ---------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        store: TradingStore,
        venue: Venue,
        limits: RiskLimits,
        fees: FeeSchedule,
        listeners: Iterable[Listener] = (),
    ) -> ExecutionService:
        """The service with every order, balance, position and control folded from the database."""
        service = cls(store, venue, limits, fees, listeners)
        service._fold(store.load())
        return service

    def _fold(self, recorded: Recorded) -> None:
        self.orders = fold_orders(recorded)
        self._live = {name: None for name, order in self.orders.items() if order.live}
        self._recorded_reports = {report_key(e) for e in recorded.events}
        self.venue_requests = list(recorded.venue_requests)
        sent = {r.client_order_id for r in recorded.venue_requests if r.kind == "send"}
        self.held = {
            r.client_order_id
            for r in recorded.venue_requests
            if r.kind == "hold" and r.client_order_id not in sent and self.orders[r.client_order_id].live
        }
        for fill in recorded.fills:
            key = (fill.venue, fill.product)
            self.positions[key] = apply_fill(self.positions.get(key) or Position(fill.venue, fill.product), fill)
            self._fill_ids.add((fill.venue, fill.fill_id))
            self._fill_counts[fill.client_order_id] += 1
        self.balances = balances(recorded.ledger)
        for control in recorded.controls:
            self._apply_control(control)
        self._controls_seen = len(recorded.controls)

    def sync_controls(self, now_ms: int) -> None:
        """Apply the controls another process set since (the `kill-switch` command): turned on, the kill switch
        cancels every live order here."""
        controls = self.store.controls()
        was_on = self.kill_switch
        for control in controls[self._controls_seen :]:
            self._apply_control(control)
        self._controls_seen = len(controls)
        if self.kill_switch and not was_on:
            logger.warning(
                "the kill switch is on: cancelling %d live order(s), refusing new ones", len(self.open_orders())
            )
            for order in self.open_orders():
                self.cancel(order.client_order_id, now_ms)

    def _apply_control(self, control: Control) -> None:
        if control.name == KILL_SWITCH:
            self.kill_switch = control.value == "on"
        elif control.name.startswith(DAY_OPEN):
            self.day_open[control.name.removeprefix(f"{DAY_OPEN}:")] = Decimal(control.value)

    def deposit(self, asset: str, amount: Decimal, at_ms: int, ref: str = "deposit") -> None:
        entry = LedgerEntry(self.venue.name, asset, amount, EntryKind.DEPOSIT, ref, at_ms)
        self.store.deposit([entry])
        self.balances[(entry.venue, asset)] = self.balances.get((entry.venue, asset), Decimal(0)) + amount

    def open_orders(self, product: str | None = None) -> list[Order]:
        """The live orders (new, open, partially filled), oldest first."""
        live = (self.orders[name] for name in self._live)
        return [o for o in live if product is None or o.request.product == product]

    def _keep(self, order: Order) -> None:
        """Store an order's state, keeping the index of live ones (so a long session does not scan them all)."""
        self.orders[order.client_order_id] = order
        if order.live:
            self._live[order.client_order_id] = None
        else:
            self._live.pop(order.client_order_id, None)

    def fill_count(self, client_order_id: str) -> int:
        """How many fills of an order are recorded."""
        return self._fill_counts[client_order_id]

    def position(self, product: str) -> Position:
        return self.positions.get((self.venue.name, product)) or Position(self.venue.name, product)

    def available(self, quotes: Mapping[str, Quote] | None = None) -> dict[tuple[str, str], Decimal]:
        """Balances minus what live orders hold (market buys at the ask plus the price band)."""
        band = self.limits.price_band or Decimal(0)
        prices = {p: q.best_ask * (1 + band) for p, q in (quotes or {}).items()}
        working = [o for o in self.open_orders() if o.client_order_id not in self.held]
        return available(self.balances, working, {self.venue.name: self.fees.taker}, prices)

    def mark(self, quotes: Mapping[str, Quote], quote_asset: str) -> Mark:
        """The account's equity and PnL at the quotes' mids."""
        return mark_to_market(
            self.balances, self.positions, {p: q.mid for p, q in quotes.items()}, self.venue.name, quote_asset
        )

    def daily_pnl(self, quotes: Mapping[str, Quote], quote_asset: str, now_ms: int) -> Decimal:
        """Equity now minus the equity of the first mark of this UTC day (recorded, so a restart keeps it)."""
        equity = self.mark(quotes, quote_asset).equity
        day = datetime.fromtimestamp(now_ms / 1000, UTC).date().isoformat()
        if day not in self.day_open:
            control = Control(f"{DAY_OPEN}:{day}", format(equity, "f"), None, now_ms)
            self.store.set_control(control)
            self._apply_control(control)
            self._controls_seen += 1
        return equity - self.day_open[day]

    # --- orders --------------------------------------------------------------

    def submit(self, request: OrderRequest, quotes: Mapping[str, Quote], now_ms: int) -> Order | Refusal:
        """Send an order after the checks; an id already known returns that order (the same id is one order)."""
        known = self.orders.get(request.client_order_id)
        if known is not None:
            return known
        problem = request_problem(request)
        if problem is not None:
            return self._refuse(Refusal("malformed", problem), request)
        if request.venue != self.venue.name:
            return self._refuse(Refusal("malformed", f"order for {request.venue} sent to {self.venue.name}"), request)
        refusal = check_order(request, self.limits, self._context(request, quotes, now_ms))
        if refusal is not None:
            return self._refuse(refusal, request)
        self.store.add_order(request, now_ms)
        order = Order(request, updated_ms=now_ms)
        self._keep(order)
        self._sent_ms.append(now_ms)
        self.venue.submit(request, now_ms)
        return order

    def hold(self, request: OrderRequest, now_ms: int) -> Order | Refusal:
        """Record an order that waits to be sent (`release`) until the cancels of the orders it replaces are
        confirmed; it holds no reserve meanwhile."""
        known = self.orders.get(request.client_order_id)
        if known is not None:
            return known
        problem = request_problem(request) or (
            None if request.venue == self.venue.name else f"order for {request.venue} sent to {self.venue.name}"
        )
        if problem is not None:
            return self._refuse(Refusal("malformed", problem), request)
        self.store.add_order(request, now_ms, kind="hold")
        self.held.add(request.client_order_id)
        order = Order(request, updated_ms=now_ms)
        self._keep(order)
        return order

    def release(self, client_order_id: str, quotes: Mapping[str, Quote], now_ms: int) -> Order | Refusal:
        """Send a held order after the risk checks; refused, it is recorded rejected with the limit's name."""
        self.held.discard(client_order_id)
        order = self.orders[client_order_id]
        refusal = check_order(order.request, self.limits, self._context(order.request, quotes, now_ms))
        if refusal is not None:
            self._refuse(refusal, order.request)
            reason = f"refused by the risk check {refusal.limit}: {refusal.detail}"
            self.handle([OrderEvent(client_order_id, EventKind.REJECTED, now_ms, reason=reason)])
            return refusal
        self.store.add_request("send", client_order_id, now_ms)
        self._sent_ms.append(now_ms)
        self.venue.submit(order.request, now_ms)
        return order

    def replay_request(self, request: VenueRequest) -> None:
        """Make a recorded request to the venue again (after a restart, at its recorded time); nothing is recorded."""
        if request.kind == "send":
            self._sent_ms.append(request.at_ms)
            self.venue.submit(self.orders[request.client_order_id].request, request.at_ms)
        elif request.kind == "cancel":
            self.venue.cancel(request.client_order_id, request.at_ms)

    def drop(self, client_order_id: str, now_ms: int, reason: str) -> None:
        """Settle a held order that will not be sent (recorded cancelled)."""
        self.held.discard(client_order_id)
        self.handle([OrderEvent(client_order_id, EventKind.CANCELLED, now_ms, reason=reason)])

    def _context(self, request: OrderRequest, quotes: Mapping[str, Quote], now_ms: int) -> RiskContext:
        base, quote_asset = split_product(request.product)
        quote = quotes.get(request.product)
        free = self.available(quotes)
        venue = self.venue.name
        marks = {p: q.mid for p, q in quotes.items()}
        notionals = {
            p.product: p.notional(marks[p.product]) for (v, _), p in self.positions.items() if v == venue and p.quantity
        }
        try:
            daily = self.daily_pnl(quotes, quote_asset, now_ms)
        except ValueError:  # a coin without a quote: the day's loss cannot be known, so it cannot pass the limit
            daily = Decimal("-Infinity") if self.limits.max_daily_loss is not None else Decimal(0)
        return RiskContext(
            now_ms=now_ms,
            kill_switch=self.kill_switch,
            mid=quote.mid if quote else None,
            book_ms=quote.at_ms if quote else None,
            position=self.position(request.product).quantity,
            notionals=notionals,
            available_base=free.get((venue, base), Decimal(0)),
            available_quote=free.get((venue, quote_asset), Decimal(0)),
            taker_fee=self.fees.taker,
            recent_orders_ms=[t for t in self._sent_ms if now_ms - t < 1000],
            daily_pnl=daily,
            levels=(quote.asks if request.side == Side.BUY else quote.bids) if quote else (),
        )

    def _refuse(self, refusal: Refusal, request: OrderRequest) -> Refusal:
        self.refusals[refusal.limit] += 1
        self._log_once(f"refused:{refusal.limit}", "order %s refused by %s: %s", request.client_order_id,
                       refusal.limit, refusal.detail)  # fmt: skip
        return refusal

    def cancel(self, client_order_id: str, now_ms: int) -> None:
        """Ask the venue to cancel a live order (recorded first)."""
        order = self.orders.get(client_order_id)
        if order is not None and order.live:
            self.store.add_request("cancel", client_order_id, now_ms)
            self.venue.cancel(client_order_id, now_ms)

    def set_kill_switch(self, on: bool, now_ms: int, reason: str = "") -> None:
        """On: cancel every live order and refuse new ones until it is off again (recorded)."""
        control = Control(KILL_SWITCH, "on" if on else "off", reason or None, now_ms)
        self.store.set_control(control)
        self._apply_control(control)
        self._controls_seen += 1
        if on:
            for order in self.open_orders():
                self.cancel(order.client_order_id, now_ms)

    # --- reports -------------------------------------------------------------

    def poll(self, now_ms: int) -> list[OrderEvent]:
        """Take the venue's reports due by `now_ms` and apply them."""
        return self.handle(self.venue.advance(now_ms))

    def handle(self, events: Iterable[OrderEvent]) -> list[OrderEvent]:
        """Apply reports to the orders; the ones that apply are recorded in one transaction and returned."""
        applied: list[tuple[OrderEvent, Order]] = []
        pending: dict[str, Order] = {}
        for event in events:
            if report_key(event) in self._recorded_reports:
                self.replayed_reports += 1  # the venue said it again (a replay after a restart): already applied
                continue
            order = pending.get(event.client_order_id) or self.orders.get(event.client_order_id)
            if order is None:
                self._bad("unknown_order", event, "a report of an order this account never sent")
                continue
            fill = event.fill
            if fill is not None and (fill.venue, fill.fill_id) in self._fill_ids:
                self._bad("duplicate_fill", event, f"fill {fill.fill_id} was already recorded")
                continue
            try:
                after = apply_event(order, event)
            except IllegalTransition as exc:
                self._bad(exc.reason, event, str(exc))
                continue
            pending[event.client_order_id] = after
            if fill is not None:
                self._fill_ids.add((fill.venue, fill.fill_id))
            applied.append((event, after))
        if not applied:
            return []
        self.store.record([event for event, _ in applied])
        for event, after in applied:
            self._keep(after)
            if event.fill is not None:
                self._book_fill(event)
            for listener in self.listeners:
                listener(event, after)
        return [event for event, _ in applied]

    def _book_fill(self, event: OrderEvent) -> None:
        fill = event.fill
        assert fill is not None
        key = (fill.venue, fill.product)
        self.positions[key] = apply_fill(self.positions.get(key) or Position(fill.venue, fill.product), fill)
        self._fill_counts[fill.client_order_id] += 1
        for entry in fill_entries(fill):
            asset_key = (entry.venue, entry.asset)
            self.balances[asset_key] = self.balances.get(asset_key, Decimal(0)) + entry.amount

    def _bad(self, reason: str, event: OrderEvent, detail: str) -> None:
        self.bad_reports[reason] += 1
        self._log_once(f"bad:{reason}", "report refused (%s): %s; sample: %s", reason, detail, event)

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message + " (logged once; counted in the metrics)", *args)

    def reconcile(self, now_ms: int) -> list[OrderEvent]:
        """Settle orders the venue does not hold: a live order the venue no longer knows is cancelled (recorded
        with the reason), so nothing is assumed filled or still working."""
        held = set(self.venue.open_orders())
        lost = [
            OrderEvent(o.client_order_id, EventKind.CANCELLED, now_ms, reason="not held by the venue at reconciliation")
            for o in self.open_orders()
            if o.client_order_id not in held
        ]
        return self.handle(lost)
