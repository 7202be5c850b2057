"""The pairs backtest: discovered pairs traded on their spread's z-score, walk-forward, on the shared trading core.
Pure code (frames in, results out).

Per pair, the hedge of log y on log x comes from the Kalman filter of
`coinflow.hedge` (noise variances estimated on the fold's training bars), its
z-score before each bar's own update drives `coinflow.trading.pairs`'s rule,
and each change of position is two market orders on the step venue
(`coinflow.trading.steps`: at the bar's close, moved by the slippage, taker
fee), booked in one in-memory account (`coinflow.trading.accounting`) that
may go short a leg (a margin account: a sold coin not held is a negative
balance). A run ends flat: positions still open at its last bar are closed
there, so their exit costs count. A position is entered only when the spread's deviation (a log
distance, about the return if it reverts) exceeds the round trip's costs:
four fills of fee and slippage.

Walk-forward: the bars are cut into ``folds + 1`` consecutive blocks. For
each fold k >= 1 the pairs are discovered, the filter's variances estimated
and the entry threshold chosen (the one of the grid with the best PnL there,
none if no threshold makes money) on the blocks before k only; block k is
then traded with them, the filter running on from the training bars so the
first z-scores are warm. Nothing of block k is seen before it is traded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd

from coinflow.hedge import NoiseVariances, estimate_noise, kalman_hedge
from coinflow.performance import max_drawdown, sharpe_ratio
from coinflow.trading.accounting import Account
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import OrderRequest, OrderType, Side, TimeInForce, split_product
from coinflow.trading.pairs import PairRule, PairState, common_quote, leg_orders, leg_quantities, next_state
from coinflow.trading.steps import Step, StepVenue, printed

SIZE_INCREMENT = Decimal("1e-8")


@dataclass(frozen=True)
class Costs:
    taker_fee: Decimal
    slippage: Decimal

    @property
    def hurdle(self) -> float:
        """The spread (a log distance) a position must start from to pay its costs: reverting by |s| earns about
        |s| on half the notional (one leg's worth), and the four fills of half the notional each cost
        fee + slippage, 2 (fee + slippage) of the notional: |s| must exceed 4 (fee + slippage)."""
        return float(4 * (self.taker_fee + self.slippage))


@dataclass(frozen=True)
class PairSignal:
    """One pair's spread per bar: y and x (columns of the price frame), the hedge and z known before each bar."""

    pair_id: str
    y: str
    x: str
    frame: pd.DataFrame  # index: bar times; columns beta, spread, variance, z


def pair_signal(pair_id: str, y: str, x: str, log_prices: pd.DataFrame, noise: NoiseVariances) -> PairSignal:
    """The Kalman hedge of log y on log x over the bars both are priced (other bars: no signal)."""
    both = log_prices[[y, x]].dropna()
    frame = kalman_hedge(both[x].to_numpy(), both[y].to_numpy(), noise)
    frame.index = both.index
    return PairSignal(pair_id, y, x, frame.reindex(log_prices.index))


@dataclass
class PairBook:
    """One pair's bookkeeping: its legs' holdings, its own cash flows and fees, its round trips."""

    state: PairState = field(default_factory=PairState)
    holdings: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    cash: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    turnover: Decimal = Decimal(0)
    trips: list[float] = field(default_factory=list)  # PnL of each closed round trip
    held_bars: list[int] = field(default_factory=list)
    rebalanced: list[int] = field(default_factory=list)  # the bars it traded at
    opened_value: Decimal | None = None
    opened_at: int = 0

    def value(self, closes: dict[str, Decimal]) -> Decimal:
        return self.cash + sum((q * closes[p] for p, q in self.holdings.items() if q), Decimal(0))


@dataclass(frozen=True)
class PortfolioRun:
    """A run over some bars: the portfolio's equity per bar, and each pair's book and equity."""

    times: pd.DatetimeIndex
    equity: np.ndarray
    pairs: dict[str, PairBook]
    pair_equity: dict[str, np.ndarray]
    initial: float
    reasons: dict[str, int]


def trade(
    closes: pd.DataFrame,
    signals: Sequence[PairSignal],
    rule: PairRule,
    costs: Costs,
    capital: Decimal,
    dollar_neutral: bool = True,
) -> PortfolioRun:
    """Trade every pair's signal over the bars of `closes` (wide: one column a ticker, NaN where not priced), each
    pair with an equal share of `capital`; see the module docstring."""
    quote = common_quote(closes.columns)
    venue = StepVenue(FeeSchedule(maker=costs.taker_fee, taker=costs.taker_fee), slippage=costs.slippage)
    account = Account(venue.name)
    account.deposit(quote, capital, 0)
    notional = capital / max(len(signals), 1)
    books = {s.pair_id: PairBook() for s in signals}
    arrays = {s.pair_id: s.frame[["z", "spread", "beta"]].to_numpy(dtype=float) for s in signals}
    current: dict[str, Decimal] = {}
    equity = np.empty(len(closes))
    pair_equity = {s.pair_id: np.empty(len(closes)) for s in signals}
    reasons: dict[str, int] = defaultdict(int)
    values = closes.to_numpy(dtype=float)
    columns = list(closes.columns)
    last = len(closes) - 1
    for t, at in enumerate(closes.index):
        at_ms = int(at.value // 1_000_000)
        priced = set()
        for j, ticker in enumerate(columns):
            price = values[t, j]
            if math.isfinite(price) and price > 0:
                current[ticker] = printed(price)
                priced.add(ticker)
                venue.on_step(ticker, Step(at_ms, current[ticker], current[ticker], current[ticker], current[ticker]))
        for signal in signals:
            book = books[signal.pair_id]
            z, spread, beta = arrays[signal.pair_id][t]
            fresh = signal.y in priced and signal.x in priced
            state, why = next_state(book.state, z, rule, fresh=fresh, can_enter=abs(spread) > costs.hurdle)
            reason = why.value
            if t == last and state.position and fresh:  # a run ends flat: the exit's costs count
                state, reason = PairState(0, state.stopped), "end"
            reasons[reason] += 1
            if state.position != book.state.position:
                _rebalance(account, venue, book, signal, state.position, notional, current, beta, dollar_neutral,
                           at_ms, t)  # fmt: skip
            book.state = state
        for signal in signals:
            pair_equity[signal.pair_id][t] = float(notional + books[signal.pair_id].value(current))
        coins = sum((account.balance(split_product(p)[0]) * current[p] for p in current), Decimal(0))
        equity[t] = float(account.balance(quote) + coins)
    return PortfolioRun(closes.index, equity, books, pair_equity, float(capital), dict(reasons))


def _rebalance(
    account: Account,
    venue: StepVenue,
    book: PairBook,
    signal: PairSignal,
    target: int,
    notional: Decimal,
    closes: dict[str, Decimal],
    beta: float,
    dollar_neutral: bool,
    at_ms: int,
    bar: int,
) -> None:
    """Move the pair's legs to `target` (+1, -1 or 0) with market orders; book its fills and round trips."""
    book.rebalanced.append(bar)
    price_y, price_x = closes[signal.y], closes[signal.x]
    want_y, want_x = leg_quantities(target, notional, price_y, price_x, printed(beta), dollar_neutral)
    before = book.value(closes)
    for leg, side, size in leg_orders({signal.y: want_y, signal.x: want_x}, book.holdings, SIZE_INCREMENT):
        name = f"{signal.pair_id}-{at_ms}-{leg}"
        request = OrderRequest(name, venue.name, leg, side, OrderType.MARKET, size, None, TimeInForce.IOC,
                               created_ms=at_ms)  # fmt: skip
        account.send(request)
        venue.submit(request, at_ms)
        for event in venue.advance(at_ms):
            account.apply([event])
            fill = event.fill
            if fill is None:
                continue
            signed = fill.quantity if fill.side == Side.BUY else -fill.quantity
            book.holdings[leg] += signed
            book.cash -= signed * fill.price + fill.fee
            book.fees += fill.fee
            book.turnover += fill.notional
    if target and book.opened_value is None:
        book.opened_value, book.opened_at = before, bar
    elif not target and book.opened_value is not None:
        book.trips.append(float(book.value(closes) - book.opened_value))
        book.held_bars.append(bar - book.opened_at)
        book.opened_value = None


def curve_summary(equity: np.ndarray, initial: float, seconds_per_bar: float) -> dict[str, float]:
    """PnL, return, Sharpe and maximum drawdown of an equity curve that started at `initial`."""
    return {
        "pnl": float(equity[-1] - initial) if len(equity) else 0.0,
        "return": float(equity[-1] / initial - 1) if len(equity) else 0.0,
        "sharpe": sharpe_ratio(np.r_[initial, equity], seconds_per_bar),
        "max_drawdown": max_drawdown(np.r_[initial, equity]),
    }


def pair_summary(book: PairBook, equity: np.ndarray, initial: float, seconds_per_bar: float) -> dict[str, float]:
    """A pair's numbers: its curve's, fees, turnover, round trips, hit rate and mean holding time (bars)."""
    trips = book.trips
    return {
        **curve_summary(equity, initial, seconds_per_bar),
        "fees": float(book.fees),
        "turnover": float(book.turnover),
        "round_trips": float(len(trips)),
        "hit_rate": float(np.mean([p > 0 for p in trips])) if trips else math.nan,
        "holding_bars": float(np.mean(book.held_bars)) if book.held_bars else math.nan,
    }


def equal_weight_hold(closes: pd.DataFrame, capital: float) -> np.ndarray:
    """The benchmark: the capital spread equally over the tickers priced at the first bar, bought and held."""
    first = closes.iloc[0]
    held = first[first.notna() & (first > 0)].index
    if not len(held):
        return np.full(len(closes), capital)
    units = capital / len(held) / first[held]
    return (closes[held].ffill() * units).sum(axis=1).to_numpy()


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: what was chosen on the bars before it, and how it traded."""

    start: pd.Timestamp
    end: pd.Timestamp
    pairs: tuple[tuple[str, str, str], ...]  # (pair id, y, x)
    noises: dict[str, NoiseVariances]
    entry: float | None  # None: no threshold made money before the fold, so it does nothing
    run: PortfolioRun | None
    rule: PairRule | None = None


Discover = Callable[[pd.DataFrame], Sequence[tuple[str, str, str]]]  # log prices -> (pair id, y, x) accepted


def fold_bounds(n: int, folds: int) -> list[tuple[int, int]]:
    """``folds + 1`` consecutive blocks of the bars, as (start, end) index pairs."""
    edges = np.linspace(0, n, folds + 2).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def walk_forward(
    closes: pd.DataFrame,
    discover: Discover,
    entries: Sequence[float],
    rule: PairRule,
    costs: Costs,
    capital: Decimal,
    folds: int,
    dollar_neutral: bool = True,
    noise_bars: int = 5000,
) -> list[Fold]:
    """The walk-forward backtest (see the module docstring)."""
    log_prices = np.log(closes.where(closes > 0))
    blocks = fold_bounds(len(closes), folds)
    out = []
    for k in range(1, len(blocks)):
        train_end, (start, end) = blocks[k][0], blocks[k]
        train = log_prices.iloc[:train_end]
        chosen = discover(train)
        if not chosen:  # no pair passed discovery before this fold: it does nothing
            out.append(Fold(closes.index[start], closes.index[end - 1], (), {}, None, None))
            continue
        noises = {pid: _noise(train[[y, x]].dropna().tail(noise_bars), y, x) for pid, y, x in chosen}
        signals = [pair_signal(pid, y, x, log_prices.iloc[:end], noises[pid]) for pid, y, x in chosen]
        legs = sorted({leg for _, y, x in chosen for leg in (y, x)})
        best, best_pnl = None, 0.0
        tune_start = blocks[k - 1][0]
        for entry in entries:
            candidate = PairRule(entry=entry, exit=rule.exit, stop=max(rule.stop, entry + 0.5))
            tuned = trade(closes[legs].iloc[tune_start:train_end], [_slice(s, tune_start, train_end) for s in signals],
                          candidate, costs, capital, dollar_neutral)  # fmt: skip
            pnl = float(tuned.equity[-1] - tuned.initial) if len(tuned.equity) else 0.0
            if signals and pnl > best_pnl:
                best, best_pnl = entry, pnl
        run: PortfolioRun | None = None
        traded_rule = None
        if best is not None:
            traded_rule = PairRule(entry=best, exit=rule.exit, stop=max(rule.stop, best + 0.5))
            run = trade(closes[legs].iloc[start:end], [_slice(s, start, end) for s in signals], traded_rule, costs,
                        capital, dollar_neutral)  # fmt: skip
        times = closes.index
        out.append(Fold(times[start], times[end - 1], tuple(chosen), noises, best, run, traded_rule))
    return out


def _noise(both: pd.DataFrame, y: str, x: str) -> NoiseVariances:
    return estimate_noise(both[x].to_numpy(), both[y].to_numpy())


def _slice(signal: PairSignal, start: int, end: int) -> PairSignal:
    return PairSignal(signal.pair_id, signal.y, signal.x, signal.frame.iloc[start:end])
