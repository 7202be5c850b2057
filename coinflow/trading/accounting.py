"""Cash, coins, positions and PnL, all derived from an append-only ledger and the fills, as pure code.

The ledger holds signed amounts per (venue, asset): deposits, and for every
fill the coin bought or sold, the quote paid or received, and the fee. A
balance is the sum of its entries, so it is exact and a restart that reads
the same entries gets the same balances. A position per (venue, product)
folds the fills in order: its quantity, average cost (of the open quantity),
realised PnL (price moves on the quantity closed, fees not included) and the
fees paid, kept apart. Unrealised PnL is the open quantity marked to a price
(the book's mid).

What open orders hold back: a buy holds its remaining quantity at its limit
(a market buy at the reference price given, plus its price band) plus the
taker fee on it, in quote; a sell holds its remaining coin. What is
available is the balance minus what is held.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum

from coinflow.trading.orders import Fill, Order, OrderEvent, OrderRequest, OrderType, Side, apply_event, split_product

ZERO = Decimal(0)


class EntryKind(StrEnum):
    DEPOSIT = "deposit"
    TRADE = "trade"
    FEE = "fee"


@dataclass(frozen=True)
class LedgerEntry:
    """One signed change of one asset's balance on one venue; ``ref`` names what caused it (a fill id)."""

    venue: str
    asset: str
    amount: Decimal
    kind: EntryKind
    ref: str
    at_ms: int


def fill_entries(fill: Fill) -> list[LedgerEntry]:
    """The ledger entries of a fill: coin in (out), quote out (in), and the fee out of the quote."""
    base, quote = split_product(fill.product)
    sign = 1 if fill.side == Side.BUY else -1
    at, ref = fill.exchange_ms, fill.fill_id
    entries = [
        LedgerEntry(fill.venue, base, sign * fill.quantity, EntryKind.TRADE, ref, at),
        LedgerEntry(fill.venue, quote, -sign * fill.notional, EntryKind.TRADE, ref, at),
    ]
    if fill.fee:
        entries.append(LedgerEntry(fill.venue, quote, -fill.fee, EntryKind.FEE, ref, at))
    return entries


Balances = dict[tuple[str, str], Decimal]


def balances(entries: Iterable[LedgerEntry]) -> Balances:
    """Balance per (venue, asset): the sum of its entries."""
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for entry in entries:
        out[(entry.venue, entry.asset)] += entry.amount
    return dict(out)


@dataclass(frozen=True)
class Position:
    """The open quantity of one product on one venue (negative: short), what it cost on average, the PnL realised by
    closing and the fees paid."""

    venue: str
    product: str
    quantity: Decimal = ZERO
    average_cost: Decimal = ZERO
    realised_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    bought: Decimal = ZERO
    sold: Decimal = ZERO

    def unrealised_pnl(self, mark: Decimal) -> Decimal:
        """The open quantity's PnL at `mark` (the mid)."""
        return self.quantity * (mark - self.average_cost)

    def notional(self, mark: Decimal) -> Decimal:
        """What the open quantity is worth at `mark`, as a magnitude."""
        return abs(self.quantity) * mark


def apply_fill(position: Position, fill: Fill) -> Position:
    """The position after one fill: the average cost moves with quantity added; closing realises
    (price - average cost) per unit closed; a fill that crosses zero opens the rest at its price."""
    signed = fill.quantity if fill.side == Side.BUY else -fill.quantity
    held = position.quantity
    traded = replace(
        position,
        fees=position.fees + fill.fee,
        bought=position.bought + (fill.quantity if signed > 0 else ZERO),
        sold=position.sold + (ZERO if signed > 0 else fill.quantity),
    )
    if held == 0 or (held > 0) == (signed > 0):
        total = held + signed
        cost = (abs(held) * position.average_cost + fill.quantity * fill.price) / abs(total)
        return replace(traded, quantity=total, average_cost=cost)
    closed = min(abs(held), fill.quantity)
    direction = 1 if held > 0 else -1
    realised = position.realised_pnl + direction * closed * (fill.price - position.average_cost)
    total = held + signed
    cost = ZERO if total == 0 else position.average_cost if abs(signed) <= abs(held) else fill.price
    return replace(traded, quantity=total, average_cost=cost, realised_pnl=realised)


def positions(fills: Iterable[Fill]) -> dict[tuple[str, str], Position]:
    """Position per (venue, product), from the fills in the order they happened."""
    out: dict[tuple[str, str], Position] = {}
    for fill in fills:
        key = (fill.venue, fill.product)
        out[key] = apply_fill(out.get(key) or Position(fill.venue, fill.product), fill)
    return out


def held_by(order: Order, taker_fee: Decimal, reference_price: Decimal | None = None) -> tuple[str, Decimal]:
    """(asset, amount) a live order holds back: a buy its remaining quantity at its limit (a market buy at
    `reference_price`) plus the taker fee, in quote; a sell its remaining coin."""
    request = order.request
    base, quote = split_product(request.product)
    if not order.live:
        return (base if request.side == Side.SELL else quote), ZERO
    if request.side == Side.SELL:
        return base, order.remaining
    price = request.limit_price if request.type == OrderType.LIMIT else reference_price
    if price is None:
        raise ValueError(f"{order.client_order_id}: a market buy needs a reference price to know what it holds")
    return quote, order.remaining * price * (1 + taker_fee)


def available(
    balance: Mapping[tuple[str, str], Decimal],
    open_orders: Iterable[Order],
    taker_fee: Mapping[str, Decimal],
    reference_prices: Mapping[str, Decimal] | None = None,
) -> Balances:
    """Balance per (venue, asset) minus what the live orders hold (`held_by`); prices per product for market buys."""
    out = dict(balance)
    prices = reference_prices or {}
    for order in open_orders:
        venue = order.request.venue
        asset, amount = held_by(order, taker_fee.get(venue, ZERO), prices.get(order.request.product))
        out[(venue, asset)] = out.get((venue, asset), ZERO) - amount
    return out


@dataclass(frozen=True)
class Mark:
    """An account's value at marks (mids) per product: cash and coin at the marks, and the PnL parts."""

    equity: Decimal
    realised_pnl: Decimal
    unrealised_pnl: Decimal
    fees: Decimal


def mark_to_market(
    balance: Mapping[tuple[str, str], Decimal],
    held: Mapping[tuple[str, str], Position],
    marks: Mapping[str, Decimal],
    venue: str,
    quote: str,
) -> Mark:
    """The equity of a venue's account in `quote` (quote balance plus every coin position at its product's mark),
    with realised and unrealised PnL and fees over its positions. A coin without a mark is an error: its value
    would be a guess."""
    equity = balance.get((venue, quote), ZERO)
    for (v, asset), amount in balance.items():
        if v != venue or asset == quote or not amount:
            continue
        product = next((p for p in marks if split_product(p) == (asset, quote)), None)
        if product is None:
            raise ValueError(f"{venue}: no mark for {asset} in {quote}")
        equity += amount * marks[product]
    mine = [p for (v, _), p in held.items() if v == venue]
    return Mark(
        equity=equity,
        realised_pnl=sum((p.realised_pnl for p in mine), ZERO),
        unrealised_pnl=sum((p.unrealised_pnl(marks[p.product]) for p in mine if p.quantity), ZERO),
        fees=sum((p.fees for p in mine), ZERO),
    )


@dataclass
class Account:
    """One venue's account kept in memory: orders folded from their events, and the ledger of deposits and fills
    with its running balances. The execution service folds the same way and persists every row; a simulation
    needs only this. An event that cannot apply raises (in a simulation it is a bug, not an exchange's word)."""

    venue: str
    orders: dict[str, Order] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)  # balance per asset

    def deposit(self, asset: str, amount: Decimal, at_ms: int) -> None:
        self._enter(LedgerEntry(self.venue, asset, amount, EntryKind.DEPOSIT, "deposit", at_ms))

    def send(self, request: OrderRequest) -> None:
        self.orders[request.client_order_id] = Order(request, updated_ms=request.created_ms)

    def apply(self, events: Iterable[OrderEvent]) -> None:
        for event in events:
            self.orders[event.client_order_id] = apply_event(self.orders[event.client_order_id], event)
            if event.fill is not None:
                self.fills.append(event.fill)
                for entry in fill_entries(event.fill):
                    self._enter(entry)

    def balance(self, asset: str) -> Decimal:
        return self.totals.get(asset, ZERO)

    def _enter(self, entry: LedgerEntry) -> None:
        self.entries.append(entry)
        self.totals[entry.asset] = self.balance(entry.asset) + entry.amount
