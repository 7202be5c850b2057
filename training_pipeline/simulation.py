"""A trading simulator over a test period: one account, fees, market and passive orders, partial fills.

It runs on the shared trading core (`coinflow.trading`): the step venue's
fill model, the orders' state machine and the ledger, the same pieces the
execution service's candle backtests use, so a simulated and a paper-traded
decision give the same fills. The account holds quote currency (USD) and
coin. At every step (a candle, or a 4-second book sample) a policy picks one
of five actions:

- force buy: a market order at the best offer for ``trade_fraction`` of the quote, the taker fee on top;
- close buy: a post-only bid one tick under the best offer (maker fee);
- force sell: a market order at the best bid for ``trade_fraction`` of the coin (taker fee);
- close sell: a post-only offer one tick above the best bid (maker fee);
- no-op.

A passive order lives for one step (good till just after its own step): it
fills completely when the next step trades through its limit (its low
below a bid's limit, its high above an offer's), fills ``touch_fill`` of its
size when the price only touches the limit, and otherwise expires unfilled;
fills happen at the limit price. Prices are put on the market's tick grid
and sizes rounded down to 1e-8 coin. A candle market has no spread, so its
best bid and offer are both the close.

The result is marked to the mid at every step: PnL, return, annualised
Sharpe ratio of the step returns, maximum drawdown, fills and fees. Buy and
hold (a force buy at the first step) and no-op are the yardsticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coinflow.feature_store import times_ms
from coinflow.performance import max_drawdown, sharpe_ratio
from coinflow.trading.accounting import Account
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import OrderRequest, OrderType, Side, TimeInForce, buy_size, lot
from coinflow.trading.steps import Step, StepVenue, on_grid, printed

BASE, QUOTE = "COIN", "QUOTE"
PRODUCT = f"{BASE}-{QUOTE}"  # the simulator's one product: the assets are named only for the ledger
SIZE_INCREMENT = Decimal("1e-8")


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

    def steps(self) -> list[Step]:
        """The market as the step venue sees it: exact prices on the tick grid, times in Unix ms."""
        tick = printed(self.tick)
        times = times_ms(self.times).tolist()
        return [
            Step(at, on_grid(b, tick), on_grid(a, tick), on_grid(lo, tick), on_grid(hi, tick))
            for at, b, a, lo, hi in zip(
                times, self.bid.tolist(), self.ask.tolist(), self.low.tolist(), self.high.tolist(), strict=True
            )
        ]


@dataclass(frozen=True)
class Costs:
    taker_fee: float
    maker_fee: float
    touch_fill: float


@dataclass(frozen=True)
class Outcome:
    """One simulated account over the period; PnL and return are against what it started with (so the fees of a
    trade at the first step count)."""

    name: str
    equity: np.ndarray
    fills: int
    fees: float
    seconds_per_step: float
    initial: float

    @property
    def pnl(self) -> float:
        return float(self.equity[-1] - self.initial)

    @property
    def total_return(self) -> float:
        return float(self.equity[-1] / self.initial - 1.0)

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


def action_order(
    action: Action, step: Step, account: Account, fraction: Decimal, tick: Decimal, fees: FeeSchedule, name: str
) -> OrderRequest | None:
    """The order an action asks for at `step` (None: no-op, or nothing to trade with)."""
    quote, coin = account.balance(QUOTE) * fraction, account.balance(BASE) * fraction
    side, price, tif, expire = Side.BUY, None, TimeInForce.IOC, None
    if action == Action.FORCE_BUY:
        size = buy_size(quote, step.ask, fees.taker, SIZE_INCREMENT)
    elif action == Action.FORCE_SELL:
        side, size = Side.SELL, lot(coin, SIZE_INCREMENT)
    elif action == Action.CLOSE_BUY:
        price = step.ask - tick
        size = buy_size(quote, price, fees.maker, SIZE_INCREMENT)
    elif action == Action.CLOSE_SELL:
        side, price, size = Side.SELL, step.bid + tick, lot(coin, SIZE_INCREMENT)
    else:
        return None
    if price is not None:
        tif, expire = TimeInForce.GTT, step.at_ms + 1  # tried against the next step only
    if size <= 0:
        return None
    return OrderRequest(
        client_order_id=name,
        venue=account.venue,
        product=PRODUCT,
        side=side,
        type=OrderType.MARKET if price is None else OrderType.LIMIT,
        quantity=size,
        limit_price=price,
        time_in_force=tif,
        post_only=price is not None,
        expire_ms=expire,
        created_ms=step.at_ms,
    )


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
    fees = FeeSchedule(maker=printed(costs.maker_fee), taker=printed(costs.taker_fee))
    venue = StepVenue(fees, printed(costs.touch_fill))
    account = Account(venue.name)
    account.deposit(QUOTE, printed(initial_quote), 0)
    fraction, tick = printed(trade_fraction), printed(market.tick)
    equity = np.empty(len(market))
    for t, step in enumerate(market.steps()):
        venue.on_step(PRODUCT, step)
        account.apply(venue.advance(step.at_ms))
        request = action_order(Action(int(actions[t])), step, account, fraction, tick, fees, f"{name}-{t}")
        if request is not None:
            account.send(request)
            venue.submit(request, step.at_ms)
            account.apply(venue.advance(step.at_ms))
        equity[t] = float(account.balance(QUOTE) + account.balance(BASE) * (step.bid + step.ask) / 2)
    fee_total = sum((f.fee for f in account.fills), Decimal(0))
    return Outcome(
        name, equity, len(account.fills), float(fee_total), _seconds_per_step(market.times), float(initial_quote)
    )


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
