"""A trading simulator over a test period: one account, fees, market and passive orders, partial fills.

The account holds quote currency (USD) and coin. At every step (a candle,
or a 4-second book sample) a policy picks one of five actions:

- force buy: take the best offer now, spending ``trade_fraction`` of the quote (taker fee);
- close buy: bid one tick under the best offer (maker fee);
- force sell: hit the best bid now, selling ``trade_fraction`` of the coin (taker fee);
- close sell: offer one tick above the best bid (maker fee);
- no-op.

Fill model for passive orders: an order lives for one step. It fills
completely when the next step trades through its limit (its low below a
bid's limit, its high above an offer's), fills ``touch_fill`` of its size when
the price only touches the limit, and otherwise lapses unfilled; fills happen
at the limit price. Prices are compared on the market's tick grid. A candle
market has no spread, so its best bid and offer are both the close.

The result is marked to the mid at every step: PnL, return, annualised
Sharpe ratio of the step returns, maximum drawdown, fills and fees. Buy and
hold (a force buy at the first step) and no-op are the yardsticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coinflow.performance import max_drawdown, sharpe_ratio


class Action(IntEnum):
    FORCE_BUY = 0
    CLOSE_BUY = 1
    FORCE_SELL = 2
    CLOSE_SELL = 3
    NOOP = 4


def best_quotes(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Best bid and offer of each book sample, from its mid and spread."""
    mid, spread = samples["mid"].to_numpy(dtype=float), samples["spread"].to_numpy(dtype=float)
    return mid - spread / 2, mid + spread / 2


@dataclass(frozen=True)
class Market:
    """Per step: time, best bid and offer when deciding, and the low and high of the step (for passive fills)."""

    times: pd.Series
    bid: np.ndarray
    ask: np.ndarray
    low: np.ndarray
    high: np.ndarray
    tick: float

    @classmethod
    def from_candles(cls, candles: pd.DataFrame, tick: float | None = None) -> Market:
        """A market of time-ordered candles (event_timestamp, low, high, close); the tick is inferred when not given."""
        close = candles["close"].to_numpy(dtype=float)
        return cls(
            times=candles["event_timestamp"].reset_index(drop=True),
            bid=close,
            ask=close,
            low=candles["low"].to_numpy(dtype=float),
            high=candles["high"].to_numpy(dtype=float),
            tick=tick if tick is not None else infer_tick(close),
        )

    @classmethod
    def from_book(cls, samples: pd.DataFrame, tick: float) -> Market:
        """A market of time-ordered book samples (event_timestamp, mid, spread).

        A passive buy resting at a limit fills when a later sample's best offer
        comes down to it, a passive sell when the best bid comes up to it: the
        step's low is its best offer and its high its best bid.
        """
        bid, ask = best_quotes(samples)
        return cls(
            times=samples["event_timestamp"].reset_index(drop=True), bid=bid, ask=ask, low=ask, high=bid, tick=tick
        )

    def __len__(self) -> int:
        return len(self.bid)


@dataclass(frozen=True)
class Costs:
    taker_fee: float
    maker_fee: float
    touch_fill: float


@dataclass(frozen=True)
class Outcome:
    """One simulated account over the period."""

    name: str
    equity: np.ndarray
    fills: int
    fees: float
    seconds_per_step: float

    @property
    def pnl(self) -> float:
        return float(self.equity[-1] - self.equity[0])

    @property
    def total_return(self) -> float:
        return float(self.equity[-1] / self.equity[0] - 1.0)

    @property
    def sharpe(self) -> float:
        return sharpe_ratio(self.equity, self.seconds_per_step)

    @property
    def max_drawdown(self) -> float:
        return max_drawdown(self.equity)

    def metrics(self) -> dict[str, float]:
        return {
            "pnl": self.pnl,
            "return": self.total_return,
            "sharpe": self.sharpe,
            "max_drawdown": self.max_drawdown,
            "trades": float(self.fills),
            "fees": self.fees,
        }


def infer_tick(prices: np.ndarray) -> float:
    """The price grid's step: the smallest gap between distinct prices (rounded to 10 significant digits)."""
    distinct = np.unique(np.round(prices[np.isfinite(prices)], 10))
    gaps = np.diff(distinct)
    gaps = gaps[gaps > 0]
    if not len(gaps):
        raise ValueError("cannot infer the tick: fewer than two distinct prices")
    return float(np.round(gaps.min(), 10))


def regression_actions(predicted_log_return: np.ndarray, threshold: float, passive: bool = False) -> np.ndarray:
    """Buy above `threshold`, sell below ``-threshold``, else hold; passive orders instead of market ones if asked."""
    buy, sell = (Action.CLOSE_BUY, Action.CLOSE_SELL) if passive else (Action.FORCE_BUY, Action.FORCE_SELL)
    actions = np.full(len(predicted_log_return), Action.NOOP, dtype=np.int64)
    actions[predicted_log_return > threshold] = buy
    actions[predicted_log_return < -threshold] = sell
    return actions


def passive_fill(side: Action, limit: float, low: float, high: float, tick: float, touch_fill: float) -> float:
    """Share of a passive order at `limit` that fills in a step trading between `low` and `high`."""
    tolerance = tick * 1e-6
    if side == Action.CLOSE_BUY:
        through, touched = low < limit - tolerance, low <= limit + tolerance
    else:
        through, touched = high > limit + tolerance, high >= limit - tolerance
    return 1.0 if through else touch_fill if touched else 0.0


def simulate(
    market: Market,
    actions: np.ndarray,
    costs: Costs,
    initial_quote: float,
    trade_fraction: float = 1.0,
    name: str = "strategy",
) -> Outcome:
    """Run the account through the market, taking `actions[t]` at step ``t``; see the module docstring."""
    if len(actions) != len(market):
        raise ValueError(f"{len(actions)} actions for {len(market)} market steps")
    quote, coin, fills, fees = float(initial_quote), 0.0, 0, 0.0
    pending: tuple[Action, float, float] | None = None
    equity = np.empty(len(market))
    for t in range(len(market)):
        if pending is not None:
            side, limit, size = pending
            share = passive_fill(side, limit, market.low[t], market.high[t], market.tick, costs.touch_fill)
            if share > 0:
                fills += 1
                if side == Action.CLOSE_BUY:
                    spent = size * share
                    quote -= spent
                    coin += spent * (1 - costs.maker_fee) / limit
                    fees += spent * costs.maker_fee
                else:
                    sold = size * share
                    coin -= sold
                    quote += sold * limit * (1 - costs.maker_fee)
                    fees += sold * limit * costs.maker_fee
            pending = None
        action = Action(int(actions[t]))
        bid, ask = market.bid[t], market.ask[t]
        if action == Action.FORCE_BUY and quote > 0:
            spent = quote * trade_fraction
            quote -= spent
            coin += spent * (1 - costs.taker_fee) / ask
            fees += spent * costs.taker_fee
            fills += 1
        elif action == Action.FORCE_SELL and coin > 0:
            sold = coin * trade_fraction
            coin -= sold
            quote += sold * bid * (1 - costs.taker_fee)
            fees += sold * bid * costs.taker_fee
            fills += 1
        elif action == Action.CLOSE_BUY and quote > 0:
            pending = (action, ask - market.tick, quote * trade_fraction)
        elif action == Action.CLOSE_SELL and coin > 0:
            pending = (action, bid + market.tick, coin * trade_fraction)
        equity[t] = quote + coin * (bid + ask) / 2
    return Outcome(name, equity, fills, fees, _seconds_per_step(market.times))


def _seconds_per_step(times: pd.Series) -> float:
    if len(times) < 2:
        return float("nan")
    return float(pd.Series(times).diff().dt.total_seconds().median())


def benchmarks(market: Market, costs: Costs, initial_quote: float) -> tuple[Outcome, Outcome]:
    """Buy and hold (everything bought at the first step) and no-op (stay in cash)."""
    hold = np.full(len(market), Action.NOOP, dtype=np.int64)
    hold[0] = Action.FORCE_BUY
    noop = np.full(len(market), Action.NOOP, dtype=np.int64)
    return (
        simulate(market, hold, costs, initial_quote, name="buy and hold"),
        simulate(market, noop, costs, initial_quote, name="no-op"),
    )


def equity_curves(times: pd.Series, outcomes: list[Outcome], title: str) -> Figure:
    """Equity of each account over the period, and the strategy's drawdown."""
    figure = Figure(figsize=(11, 6), layout="constrained")
    FigureCanvasAgg(figure)
    curves, drawdown = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for outcome in outcomes:
        curves.plot(times, outcome.equity, linewidth=1, label=f"{outcome.name} (PnL {outcome.pnl:,.0f})")
    curves.set_ylabel("equity (quote)")
    curves.set_title(title)
    curves.legend()
    peaks = np.maximum.accumulate(outcomes[0].equity)
    drawdown.fill_between(times, -(peaks - outcomes[0].equity) / peaks, 0, step="post", alpha=0.5)
    drawdown.set_ylabel(f"{outcomes[0].name} drawdown")
    return figure
