"""Strategies: market data, the account's position and open orders in; what to do (intents) out. No I/O.

A strategy never talks to a venue: the session hands it a `MarketView` and
a `PortfolioView` at each decision and sends what it returns through the
execution service (risk checks, database, venue), so the same object trades
a backtest and a live session.

- `ActionStrategy`: the order-book action model's decision every 4 s. Force
  buy and force sell are market orders for `trade_fraction` of what is
  available (quote to spend, coin to sell); close buy is a post-only bid one
  tick under the best offer, close sell a post-only offer one tick above the
  best bid, each replacing the previous close of its side (its reserve comes
  back to size the new one); no-op does nothing. A buy is never sized past the
  position limit.
- `ThresholdStrategy`: a price model's predicted log return against a
  threshold plus the round trip's taker fees: above it, buy with what is
  available; below minus the threshold, sell everything held.
- `PairsStrategy`: each pair's spread row (a multi-leg decision) through the
  registered pairs policy (`coinflow.trading.pairs`'s rule); a change of
  position is two market orders in one group, the legs sized by
  `leg_quantities` at the legs' prices; a group undone by the session (a leg
  did not fill) puts the pair back where it was before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from coinflow.trading.orders import Order, OrderType, Side, TimeInForce, buy_size, lot
from coinflow.trading.pairs import PairState, leg_orders, leg_quantities
from coinflow.trading.steps import printed
from inference_pipeline.execution.service import Quote


@dataclass(frozen=True)
class MarketView:
    """What a strategy sees of the market at a decision: the product's top of book and its features then (a
    multi-leg decision, a pair's: ``product`` names it, ``quote`` is its first leg's and ``quotes`` every leg's)."""

    product: str
    at_ms: int
    quote: Quote
    features: Mapping[str, float]
    quotes: Mapping[str, Quote] = field(default_factory=dict)


@dataclass(frozen=True)
class PortfolioView:
    """What a strategy sees of its account: the position, what is free to trade, and its live orders."""

    position: Decimal
    available_base: Decimal
    available_quote: Decimal
    open_orders: tuple[Order, ...]
    taker_fee: Decimal


@dataclass(frozen=True)
class Place:
    """Send an order; ``tag`` names what it is for (a close buy replaces the previous close buy). ``product``: the
    order's, when not the session's (a leg of a pair); ``group``: the legs that must all fill (else they are undone,
    `legs.py`)."""

    side: Side
    type: OrderType
    quantity: Decimal
    tag: str
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.IOC
    post_only: bool = False
    product: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Cancel:
    client_order_id: str


Intent = Place | Cancel


class Strategy(Protocol):
    name: str

    def decide(self, market: MarketView, portfolio: PortfolioView) -> list[Intent]: ...


def market_buy_size(quote: Quote, spend: Decimal, taker_fee: Decimal, increment: Decimal) -> Decimal:
    """The most coin a market buy for `spend` can be, valued as the risk checks value it: all of it at the worst
    price it walks to in the offers, with the taker fee (the best offer alone when the levels are not known)."""
    levels = quote.asks or ((quote.best_ask, Decimal("Infinity")),)
    depth, best = Decimal(0), Decimal(0)
    for price, quantity in levels:
        cap = spend / (price * (1 + taker_fee))  # everything at this level's price
        if cap <= depth:
            break
        depth += quantity
        best = min(cap, depth)
        if cap <= depth:
            break
    return lot(best, increment)


def held_quote(order: Order, taker_fee: Decimal) -> Decimal:
    """What a live buy holds of the quote (its remaining quantity at its limit, with the fee)."""
    price = order.request.limit_price or Decimal(0)
    return order.remaining * price * (1 + taker_fee)


@dataclass(frozen=True)
class ScoredDecisions:
    """A model's outputs scored ahead for every decision of a backtest (the same rows the session will see, in one
    call), looked up by the decision's time; a time without one is an error, never a guess."""

    by_time_ms: Mapping[int, Any]

    def __call__(self, market: MarketView) -> Any:
        if market.at_ms not in self.by_time_ms:
            raise ValueError(f"no model output for the decision at {market.at_ms}")
        return self.by_time_ms[market.at_ms]


@dataclass
class ActionStrategy:
    """The action model's decisions as orders (see the module docstring); `decide_action` gives one of the five
    actions' names for a decision (from the book sample's features)."""

    decide_action: Callable[[MarketView], str]
    tick: Decimal
    size_increment: Decimal
    trade_fraction: Decimal = Decimal(1)
    max_position: Decimal | None = None
    name: str = "action"

    def decide(self, market: MarketView, portfolio: PortfolioView) -> list[Intent]:
        action = self.decide_action(market)
        quote, fee = market.quote, portfolio.taker_fee
        room = None if self.max_position is None else max(self.max_position - portfolio.position, Decimal(0))
        if action == "force_buy":
            size = market_buy_size(quote, portfolio.available_quote * self.trade_fraction, fee, self.size_increment)
            size = size if room is None else min(size, lot(room, self.size_increment))
            return [Place(Side.BUY, OrderType.MARKET, size, "force_buy")] if size > 0 else []
        if action == "force_sell":
            size = lot(portfolio.available_base * self.trade_fraction, self.size_increment)
            return [Place(Side.SELL, OrderType.MARKET, size, "force_sell")] if size > 0 else []
        if action == "close_buy":
            previous = [o for o in portfolio.open_orders if o.request.side == Side.BUY and o.request.post_only]
            freed = sum((held_quote(o, fee) for o in previous), Decimal(0))
            price = quote.best_ask - self.tick
            size = buy_size((portfolio.available_quote + freed) * self.trade_fraction, price, fee, self.size_increment)
            size = size if room is None else min(size, lot(room, self.size_increment))
            return self._replace(previous, Place(Side.BUY, OrderType.LIMIT, size, "close_buy", price,
                                                 TimeInForce.GTC, post_only=True))  # fmt: skip
        if action == "close_sell":
            previous = [o for o in portfolio.open_orders if o.request.side == Side.SELL and o.request.post_only]
            freed = sum((o.remaining for o in previous), Decimal(0))
            size = lot((portfolio.available_base + freed) * self.trade_fraction, self.size_increment)
            price = quote.best_bid + self.tick
            return self._replace(previous, Place(Side.SELL, OrderType.LIMIT, size, "close_sell", price,
                                                 TimeInForce.GTC, post_only=True))  # fmt: skip
        if action != "noop":
            raise ValueError(f"unknown action {action!r}")
        return []

    @staticmethod
    def _replace(previous: list[Order], new: Place) -> list[Intent]:
        cancels: list[Intent] = [Cancel(o.client_order_id) for o in previous]
        return cancels + ([new] if new.quantity > 0 else [])


@dataclass
class ThresholdStrategy:
    """A price model's predicted log return against a threshold with the fees in it (see the module docstring)."""

    predict_return: Callable[[MarketView], float]
    threshold: float
    size_increment: Decimal
    name: str = "threshold"

    def decide(self, market: MarketView, portfolio: PortfolioView) -> list[Intent]:
        predicted = self.predict_return(market)
        if not math.isfinite(predicted):
            raise ValueError(f"the model predicted {predicted} at {market.at_ms}")
        # a round trip pays the taker fee twice: the move must beat that before the threshold counts
        hurdle = self.threshold + 2 * math.log1p(float(portfolio.taker_fee))
        if predicted > hurdle:
            size = market_buy_size(market.quote, portfolio.available_quote, portfolio.taker_fee, self.size_increment)
            return [Place(Side.BUY, OrderType.MARKET, size, "enter")] if size > 0 else []
        if predicted < -self.threshold:
            size = lot(portfolio.available_base, self.size_increment)
            return [Place(Side.SELL, OrderType.MARKET, size, "exit")] if size > 0 else []
        return []


PairPolicy = Callable[[str, Mapping[str, float], PairState], PairState]  # pair id, its row, its state -> next state


@dataclass
class PairsStrategy:
    """Every pair of a registered configuration on its spread rows (see the module docstring). `notional`: quote
    across both legs of a pair."""

    policy: PairPolicy
    notional: Decimal
    size_increment: Decimal
    dollar_neutral: bool = True
    name: str = "pairs"
    states: dict[str, PairState] = field(default_factory=dict)
    holdings: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # per pair, per leg (signed)
    pending: dict[str, tuple[str, PairState, dict[str, Decimal]]] = field(default_factory=dict)

    def decide(self, market: MarketView, portfolio: PortfolioView) -> list[Intent]:
        pair = market.product
        if any(p == pair for p, _, _ in self.pending.values()):
            return []  # its last intent is not settled yet
        before = self.states.get(pair, PairState())
        after = self.policy(pair, market.features, before)
        held = self.holdings.get(pair, {})
        self.states[pair] = after
        if after.position == before.position:
            return []
        (y, quote_y), (x, quote_x) = market.quotes.items()
        beta = printed(market.features["beta"])
        want_y, want_x = leg_quantities(after.position, self.notional, quote_y.mid, quote_x.mid, beta,
                                        self.dollar_neutral)  # fmt: skip
        group = f"{pair}@{market.at_ms}"
        tag = f"{pair}:{'enter' if after.position else 'exit'}"
        orders = leg_orders({y: want_y, x: want_x}, held, self.size_increment)
        if not orders:
            return []
        self.pending[group] = (pair, before, held)
        now = dict(held)
        for leg, side, size in orders:
            now[leg] = now.get(leg, Decimal(0)) + (size if side == Side.BUY else -size)
        self.holdings[pair] = {leg: q for leg, q in now.items() if q}
        return [Place(side, OrderType.MARKET, size, tag, product=leg, group=group) for leg, side, size in orders]

    def settled(self, group: str, filled: bool) -> None:
        """The session's word on a group: filled, or undone (the pair back to its state before it)."""
        pair, before, held = self.pending.pop(group)
        if not filled:
            self.states[pair], self.holdings[pair] = PairState(before.position, False), held
