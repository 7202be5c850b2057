"""Backtest runs of the registered models: the model from the registry, decisions from the offline store, the
session through a paper venue, the result in MLflow.

A backtest defaults to the period the model's run held out for testing
(data it was neither fitted nor tuned on). The action model's decisions are
the book's 4 s feature rows of that period as the offline store holds them,
each at the time its sample was taken, against books from a snapshot file
on the paper venue. The threshold strategy's are the pair's candles: the
price model's prediction from the features known when each candle closed
(point in time, through the model's FeatureService), filled on the step
venue at that candle's close.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from coinflow.feature_store import feature_store, read_entity_rows, service_rows
from coinflow.quality import Rejects
from coinflow.settings import Settings
from feature_repo.names import BOOK_ENTITY, ENTITY, EVENT_TIMESTAMP, ORDERBOOK_VIEW, ohlcv_view, regression_service
from inference_pipeline.execution.backtest import (
    PRICES,
    BacktestResult,
    candle_events,
    feature_decisions,
    in_period,
    in_time_order,
    run_backtest,
    snapshot_events,
    utc_time,
)
from inference_pipeline.execution.models import (
    action_strategy,
    load_action_model,
    load_price_model,
    run_period,
    score_actions,
    score_returns,
    session_params,
    threshold_strategy,
)
from inference_pipeline.execution.strategies import ScoredDecisions
from inference_pipeline.execution.tracking import log_session


@dataclass(frozen=True)
class BacktestRun:
    result: BacktestResult
    run_id: str
    model: str
    start: pd.Timestamp
    end: pd.Timestamp
    db_url: str
    market_rejects: Rejects


def backtest_action(
    settings: Settings,
    tracking_uri: str,
    book: str,
    book_file: Path,
    start: str | None = None,
    end: str | None = None,
    alias: str | None = None,
    version: int | None = None,
    db_url: str | None = None,
) -> BacktestRun:
    """Paper-trade the action model of `book` over its test period (or `start`..`end`) and log the run."""
    model = load_action_model(tracking_uri, book, alias, version)
    held_out = run_period(model)
    start, end = start or (held_out[0] if held_out else None), end or (held_out[1] if held_out else None)
    store = feature_store(settings)
    rows = in_period(read_entity_rows(store, ORDERBOOK_VIEW, BOOK_ENTITY, book, model.features), start, end)
    if rows.empty:
        raise ValueError(f"no {ORDERBOOK_VIEW} rows of {book} between {start} and {end} in the offline store: "
                         "replay or record its books first")  # fmt: skip
    product = book.partition(":")[2]
    strategy = action_strategy(settings, model, ScoredDecisions(score_actions(model, book, rows)))
    first_ms, last_ms = (
        int(rows[EVENT_TIMESTAMP].iloc[0].value // 1_000_000),
        int(rows[EVENT_TIMESTAMP].iloc[-1].value // 1_000_000),
    )
    rejects = Rejects("backtest_books")
    until_ms = utc_time(end).value // 1_000_000 if end else last_ms  # books up to the period's end
    books = (
        e
        for e in snapshot_events(book_file, book, rejects)
        if first_ms - settings.trading.max_book_age_ms <= e.at_ms <= until_ms
    )
    decisions = feature_decisions(rows, product, model.features)
    url = db_url or _backtest_db(settings, book)
    result = run_backtest(settings, strategy, product, book.partition(":")[0], in_time_order(books, decisions), url)
    params = {
        **session_params(settings, model, {"book": book}, "paper"),
        "start": rows[EVENT_TIMESTAMP].iloc[0].isoformat(),
        "end": rows[EVENT_TIMESTAMP].iloc[-1].isoformat(),
        "book_file": str(book_file),
        "decisions": len(rows),
    }
    run_id = log_session(tracking_uri, book, params, {"session": "backtest", "database": url}, result)
    return BacktestRun(result, run_id, f"{model.name} v{model.version}", rows[EVENT_TIMESTAMP].iloc[0],
                       rows[EVENT_TIMESTAMP].iloc[-1], url, rejects)  # fmt: skip


def backtest_threshold(
    settings: Settings,
    tracking_uri: str,
    pair: str,
    horizon_minutes: int,
    exchange: str = "kraken",
    start: str | None = None,
    end: str | None = None,
    alias: str | None = None,
    version: int | None = None,
    db_url: str | None = None,
) -> BacktestRun:
    """Paper-trade the price model of `pair` and horizon with the threshold strategy, candle by candle, over its
    test period (or `start`..`end`), with `exchange`'s fees, and log the run."""
    model = load_price_model(tracking_uri, pair, horizon_minutes, alias, version)
    held_out = run_period(model)
    start, end = start or (held_out[0] if held_out else None), end or (held_out[1] if held_out else None)
    interval = model.params["interval"]
    store = feature_store(settings)
    candles = read_entity_rows(store, ohlcv_view(interval), ENTITY, pair, list(PRICES))
    period = in_period(candles, start, end)
    if period.empty:
        raise ValueError(f"no {ohlcv_view(interval)} rows of {pair} between {start} and {end} in the offline store: "
                         "backfill its candles first")  # fmt: skip
    rows, _ = service_rows(store, candles[[ENTITY, EVENT_TIMESTAMP]], regression_service(interval))
    scored = rows.dropna(subset=model.features)  # warm-up rows: their decisions are skipped as bad model output
    strategy = threshold_strategy(settings, ScoredDecisions(score_returns(model, scored)))
    rejects = Rejects("backtest_candles")
    events = in_time_order(
        candle_events(period, pair, rejects), feature_decisions(in_period(rows, start, end), pair, model.features)
    )
    url = db_url or _backtest_db(settings, pair)
    result = run_backtest(settings, strategy, pair, exchange, events, url, candles=True)
    first, last = period[EVENT_TIMESTAMP].iloc[0], period[EVENT_TIMESTAMP].iloc[-1]
    params = {
        **session_params(
            settings,
            model,
            {"pair": pair, "horizon_minutes": horizon_minutes, "exchange": exchange},
            "paper",
            strategy="threshold",
        ),  # fmt: skip
        "start": first.isoformat(),
        "end": last.isoformat(),
        "decisions": len(period),
    }
    run_id = log_session(tracking_uri, pair, params, {"session": "backtest", "database": url}, result)
    return BacktestRun(result, run_id, f"{model.name} v{model.version}", first, last, url, rejects)


def _backtest_db(settings: Settings, book: str) -> str:
    """A new SQLite database for one backtest under run_dir/backtests."""
    folder = (settings.services.run_dir / "backtests").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{book.replace(':', '-').replace('/', '')}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6}.db"
    return f"sqlite:///{folder / name}"
