"""Backtests: one strategy over recorded market events, through the same session, service and paper venue as live.

Over books (snapshot files) orders go to the paper venue; over candles (the
offline store's OHLCV rows, where no book is known) to the step venue, the
fill model the training pipeline's simulator also runs on.

The account is a fresh paper account in a database of its own (a file per
backtest, kept for `positions` and `orders` to read), funded with the
settings' starting quote. Decisions are merged with the book events in time
order, a decision after the books of its own millisecond, so a strategy only
sees what was known at its time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd

from coinflow.books import frame_sides
from coinflow.exchange_files import iter_snapshot_csv
from coinflow.feature_store import times_ms
from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.trading.fees import COINBASE_FEES, KRAKEN_FEES, FeeSchedule
from coinflow.trading.orders import split_product
from coinflow.trading.steps import StepVenue, printed
from feature_repo.names import EVENT_TIMESTAMP
from inference_pipeline.execution.paper import Latency, PaperVenue
from inference_pipeline.execution.report import benchmark_curves, curve_metrics, seconds_per_step, session_metrics
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import (
    BookEvent,
    CandleEvent,
    DecisionEvent,
    MarketEvent,
    SessionLog,
    TradingSession,
)
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.strategies import Strategy


def exchange_fees(settings: Settings, exchange: str) -> FeeSchedule:
    """The account's fees on `exchange` (the settings'; their defaults are the published lowest tiers)."""
    t = settings.trading
    if exchange == "coinbase":
        return FeeSchedule(t.coinbase_maker_fee, t.coinbase_taker_fee)
    if exchange == "kraken":
        return FeeSchedule(t.kraken_maker_fee, t.kraken_taker_fee)
    raise ValueError(f"no fees known for exchange {exchange!r} (known: coinbase {COINBASE_FEES}, kraken {KRAKEN_FEES})")


def risk_limits(settings: Settings) -> RiskLimits:
    t = settings.trading
    return RiskLimits(
        max_position=t.max_position,
        max_notional=t.max_notional,
        max_total_notional=t.max_total_notional,
        max_order_quantity=t.max_order_quantity,
        max_orders_per_second=t.max_orders_per_second,
        max_daily_loss=t.max_daily_loss,
        price_band=t.price_band,
        max_book_age_ms=t.max_book_age_ms,
    )


def paper_service(settings: Settings, db_url: str, exchange: str, candles: bool = False) -> ExecutionService:
    """The paper account in `db_url`, restored from it: on the paper venue over books, on the step venue over
    candles (its touch fill is the simulation's, COINFLOW_SIMULATION_TOUCH_FILL)."""
    fees = exchange_fees(settings, exchange)
    venue: PaperVenue | StepVenue = (
        StepVenue(fees, printed(settings.simulation.touch_fill))
        if candles
        else PaperVenue(fees, Latency(settings.trading.order_latency_ms, settings.trading.report_latency_ms))
    )
    return ExecutionService.restore(TradingStore(connect(db_url)), venue, risk_limits(settings), fees)


def snapshot_events(path: Path, book: str, rejects: Rejects) -> Iterator[BookEvent]:
    """The book events of an L2 snapshots file (the `replay-snapshots` layout) of `book` (``coinbase:BTC-USD``),
    read by the same parser as the feature pipeline's replay; unusable rows are counted in `rejects`."""
    exchange, _, product = book.partition(":")
    for frame in iter_snapshot_csv(path, exchange, product, rejects):
        sides = frame_sides(frame["bids"], frame["asks"])
        assert not isinstance(sides, str), "the parser passes only usable levels"
        yield BookEvent(product, True, sides[0], sides[1], frame["timestamp_ms"])


PRICES = ("open", "high", "low", "close")


def candle_events(rows: pd.DataFrame, product: str, rejects: Rejects) -> Iterator[CandleEvent]:
    """A candle event at each OHLCV row's time (when the candle closed), prices exactly as the floats print; a row
    whose prices are not positive numbers is counted in `rejects` and skipped."""
    times = times_ms(rows[EVENT_TIMESTAMP])
    for at_ms, values in zip(times.tolist(), rows[list(PRICES)].itertuples(index=False, name=None), strict=True):
        prices = [printed(v) for v in values]
        if not all(p.is_finite() and p > 0 for p in prices):
            rejects.reject("bad_price", {"at_ms": at_ms, **dict(zip(PRICES, values, strict=True))})
            continue
        yield CandleEvent(product, prices[0], prices[1], prices[2], prices[3], at_ms)


def feature_decisions(rows: pd.DataFrame, product: str, features: Sequence[str]) -> Iterator[DecisionEvent]:
    """A decision at each feature row's time (when its sample was taken), with the row's features."""
    times = times_ms(rows[EVENT_TIMESTAMP])
    values = rows[list(features)].to_dict("records")
    for at_ms, row in zip(times.tolist(), values, strict=True):
        yield DecisionEvent(product, at_ms, row)


def utc_time(text: str) -> pd.Timestamp:
    """An ISO time; one without an offset is UTC."""
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def in_period(rows: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    """The rows from `start` to `end` (ISO times, UTC unless they say otherwise, bounds included; None: open)."""
    times = rows[EVENT_TIMESTAMP]
    keep = pd.Series(True, index=rows.index)
    if start:
        keep &= times >= utc_time(start)
    if end:
        keep &= times <= utc_time(end)
    return rows[keep].reset_index(drop=True)


def in_time_order(books: Iterable[MarketEvent], decisions: Iterable[DecisionEvent]) -> Iterator[MarketEvent]:
    """Market events (books, trades, candles) and decisions merged by time; at the same millisecond the market
    comes first."""
    keyed_books = ((e.at_ms, 0, e) for e in books)
    keyed_decisions = ((e.at_ms, 1, e) for e in decisions)
    for _, _, event in heapq.merge(keyed_books, keyed_decisions, key=lambda k: (k[0], k[1])):
        yield event


@dataclass(frozen=True)
class BacktestResult:
    log: SessionLog
    service: ExecutionService
    metrics: dict[str, float]
    benchmarks: dict[str, dict[str, float]]


def run_backtest(
    settings: Settings,
    strategy: Strategy,
    product: str,
    exchange: str,
    events: Iterable[MarketEvent],
    db_url: str,
    candles: bool = False,
) -> BacktestResult:
    """Trade `strategy` on `product` over `events` (book events, or candle events with `candles`) from a new paper
    account in `db_url`."""
    service = paper_service(settings, db_url, exchange, candles)
    if service.orders or service.balances:
        raise ValueError(f"{db_url} already holds an account: a backtest starts from an empty database")
    initial = settings.trading.initial_quote
    quote_asset = split_product(product)[1]
    service.deposit(quote_asset, initial, 0, ref="backtest start")
    session = TradingSession(service, strategy, product, settings.trading.max_book_age_ms)
    log = session.run(events)
    if not log.equity:
        raise ValueError(
            f"no decision of {product} could be taken over the events given (skipped: {dict(log.skipped)})"
        )
    return BacktestResult(log, service, *summarise(log, service, initial))


def summarise(
    log: SessionLog, service: ExecutionService, initial: Decimal
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The strategy's metrics and each benchmark's over the same decisions."""
    orders = list(service.orders.values())
    metrics = session_metrics(log.equity, orders, initial)
    metrics.update({f"skipped_{k}": float(v) for k, v in log.skipped.items()})
    metrics.update({f"refused_{k}": float(v) for k, v in log.refused.items()})
    step = seconds_per_step(log.equity)
    curves = benchmark_curves(log.equity, initial, service.fees.taker)
    return metrics, {c.name: curve_metrics(c, step) for c in curves}


def metrics_table(result: BacktestResult) -> Mapping[str, Mapping[str, float]]:
    """Rows for printing: the strategy, then the benchmarks."""
    return {"strategy": result.metrics, **result.benchmarks}
