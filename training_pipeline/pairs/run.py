"""`pairs-discover` and `pairs-backtest` over what the offline store holds, each an MLflow run.

The universe's closes come from the ``universe_<interval>`` view (every
ticker it holds, or ``COINFLOW_UNIVERSE`` when set). The backtest is the
walk-forward of `backtest.py`; its portfolio chains the folds (each fold
starts from the equity the one before ended with; a fold that does nothing
stays flat), against holding the universe equally weighted over the same
bars. The configuration chosen for the last fold (its pairs, filters and
threshold, all chosen on earlier bars) is registered as a version of
``pairs-<interval>``; it becomes champion only if its PnL on that fold, after
fees and slippage, beats doing nothing (0) and the current champion's
configuration traded over the same fold.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from coinflow.contracts import CHAMPION, pairs_model_name
from coinflow.feature_store import feature_store, read_view_rows
from coinflow.pair_discovery import Discovery, discover
from coinflow.settings import Settings
from coinflow.trading.pairs import PairRule
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, universe_view
from training_pipeline.pairs.backtest import (
    Costs,
    Fold,
    curve_summary,
    equal_weight_hold,
    pair_signal,
    pair_summary,
    trade,
    walk_forward,
)
from training_pipeline.pairs.serving import CONFIG, ChosenPair, PairsConfig, log_pairs_pyfunc
from training_pipeline.tracking import champion_version, decide_pnl_promotion, register_challenger

INTERVAL_SECONDS = {"1m": 60, "5m": 300}


def model_name(interval: str) -> str:
    return pairs_model_name(interval)


def load_closes(settings: Settings, interval: str, start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """The universe's closes, wide (a column a ticker, NaN where it has no candle), from the offline store."""
    rows = read_view_rows(feature_store(settings), universe_view(interval), ENTITY, ["close"])
    if settings.universe.pairs:
        rows = rows[rows[ENTITY].isin(settings.universe.pairs)]
    closes = rows.pivot_table(index=EVENT_TIMESTAMP, columns=ENTITY, values="close", aggfunc="last").sort_index()
    if start:
        closes = closes[closes.index >= pd.Timestamp(start, tz="UTC")]
    if end:
        closes = closes[closes.index <= pd.Timestamp(end, tz="UTC")]
    if closes.shape[1] < 2 or closes.empty:
        raise ValueError(f"the offline store holds {closes.shape[1]} ticker(s) of {universe_view(interval)} in the "
                         "period: run backfill-universe first")  # fmt: skip
    closes.columns.name = None
    return closes


def accepted(settings: Settings, log_prices: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The pairs discovery accepts, the `max_pairs` with the lowest adjusted p first, as (pair id, y, x)."""
    found = sorted(discover(log_prices, settings.pairs_trading).accepted, key=lambda p: p.p_adjusted)
    return [(p.pair_id, p.y, p.x) for p in found[: settings.pairs_trading.max_pairs]]


def costs_of(settings: Settings) -> Costs:
    return Costs(settings.pairs_trading.taker_fee, settings.pairs_trading.slippage)


@dataclass(frozen=True)
class PairsBacktestResult:
    folds: list[Fold]
    pairs: pd.DataFrame
    portfolio: dict[str, float]
    benchmark: dict[str, float]
    run_id: str
    version: str | None
    promoted: bool
    reason: str


def chained_equity(folds: list[Fold], closes: pd.DataFrame, capital: float) -> pd.Series:
    """The portfolio over the traded folds: each fold's curve scaled to the equity the previous one ended with."""
    parts, level = [], capital
    for fold in folds:
        span = closes.index[(closes.index >= fold.start) & (closes.index <= fold.end)]
        if fold.run is None:
            parts.append(pd.Series(level, index=span))
            continue
        curve = fold.run.equity / fold.run.initial * level
        parts.append(pd.Series(curve, index=fold.run.times))
        level = float(curve[-1])
    return pd.concat(parts)


def pair_table(folds: list[Fold], seconds: float) -> pd.DataFrame:
    """Per pair and fold traded: PnL after fees, Sharpe, drawdown, fees, turnover, round trips, hit rate, holding."""
    rows = []
    for number, fold in enumerate(folds, start=1):
        if fold.run is None:
            continue
        notional = fold.run.initial / max(len(fold.pairs), 1)
        for pair, book in fold.run.pairs.items():
            summary = pair_summary(book, fold.run.pair_equity[pair], notional, seconds)
            rows.append({"fold": number, "pair_id": pair, "entry_z": fold.entry, **summary})
    return pd.DataFrame(rows)


def pairs_backtest(
    settings: Settings, tracking_uri: str, interval: str, start: str | None = None, end: str | None = None
) -> PairsBacktestResult:
    """The walk-forward pairs backtest over the offline store's universe, logged and its configuration registered."""
    p = settings.pairs_trading
    closes = load_closes(settings, interval, start, end)
    seconds = INTERVAL_SECONDS[interval]
    rule = PairRule(entry=p.entries[0], exit=p.exit_z, stop=p.stop_z)
    folds = walk_forward(closes, lambda lp: accepted(settings, lp), p.entries, rule, costs_of(settings), p.capital,
                         p.folds, p.dollar_neutral, p.noise_bars)  # fmt: skip
    capital = float(p.capital)
    equity = chained_equity(folds, closes, capital)
    traded = closes[closes.index >= folds[0].start]
    portfolio = {
        **curve_summary(equity.to_numpy(), capital, seconds),
        "fees": sum(float(b.fees) for f in folds if f.run for b in f.run.pairs.values()),
        "turnover": sum(float(b.turnover) for f in folds if f.run for b in f.run.pairs.values()),
        "round_trips": float(sum(len(b.trips) for f in folds if f.run for b in f.run.pairs.values())),
        "folds_traded": float(sum(f.run is not None for f in folds)),
    }
    trips = [t for f in folds if f.run for b in f.run.pairs.values() for t in b.trips]
    portfolio["hit_rate"] = float(np.mean([t > 0 for t in trips])) if trips else math.nan
    benchmark = curve_summary(equal_weight_hold(traded, capital), capital, seconds)
    table = pair_table(folds, seconds)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(model_name(interval))
    last = folds[-1]
    config = PairsConfig(interval, tuple(ChosenPair(pid, y, x, last.noises[pid]) for pid, y, x in last.pairs),
                         last.rule or rule, p.taker_fee, p.slippage, p.dollar_neutral)  # fmt: skip
    with mlflow.start_run(run_name="pairs backtest") as run:
        mlflow.log_params({
            "interval": interval, "tickers": closes.shape[1], "bars": len(closes),
            "start": closes.index[0].isoformat(), "end": closes.index[-1].isoformat(),
            **{f"pairs_{k}": v for k, v in p.model_dump().items()},
        })  # fmt: skip
        mlflow.log_metrics({k: v for k, v in portfolio.items() if math.isfinite(v)})
        mlflow.log_metrics({f"equal_weight_{k}": v for k, v in benchmark.items() if math.isfinite(v)})
        last_pnl = float(last.run.equity[-1] - last.run.initial) if last.run is not None else 0.0
        mlflow.log_metric("last_fold_pnl", last_pnl)
        with tempfile.TemporaryDirectory() as tmp:
            table.to_csv(Path(tmp) / "pairs.csv", index=False)
            equity.rename("equity").to_csv(Path(tmp) / "equity.csv")
            pd.DataFrame([{"fold": n, "start": f.start, "end": f.end, "entry_z": f.entry,
                           "pairs": ",".join(pid for pid, _, _ in f.pairs)}
                          for n, f in enumerate(folds, start=1)]).to_csv(Path(tmp) / "folds.csv", index=False)  # fmt: skip
            mlflow.log_artifacts(tmp)
        info = log_pairs_pyfunc(config, model_name(interval)) if config.pairs and last.run is not None else None
    version, promoted, reason = None, False, "nothing registered: the last fold had no pairs or no threshold"
    if info is not None:
        version = register_challenger(client, model_name(interval), info, run.info.run_id)
        champion = champion_version(client, model_name(interval))
        champion_pnl = None
        if champion is not None:
            champion_pnl = champion_fold_pnl(client, champion.run_id, closes, last, settings)
        promoted, reason = decide_pnl_promotion(last_pnl, champion_pnl)
        if promoted:
            client.set_registered_model_alias(model_name(interval), CHAMPION, version)
        client.set_model_version_tag(model_name(interval), version, "promotion", reason)
    return PairsBacktestResult(folds, table, portfolio, benchmark, run.info.run_id, version, promoted, reason)


def champion_fold_pnl(client: MlflowClient, run_id: str | None, closes: pd.DataFrame, fold: Fold,
                      settings: Settings) -> float | None:  # fmt: skip
    """The champion configuration's PnL traded over `fold` (None when one of its tickers is not in the data)."""
    if run_id is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, f"model/artifacts/model/{CONFIG}", tmp)
        config = PairsConfig.from_json(Path(path).read_text())
    legs = sorted({leg for pair in config.pairs for leg in (pair.y, pair.x)})
    if not config.pairs or not set(legs) <= set(closes.columns):
        return None
    log_prices = np.log(closes.where(closes > 0))
    upto = closes.index <= fold.end
    signals = [pair_signal(c.pair_id, c.y, c.x, log_prices[upto], c.noise) for c in config.pairs]
    inside = closes.index[upto] >= fold.start
    sliced = [type(s)(s.pair_id, s.y, s.x, s.frame[inside]) for s in signals]
    run = trade(closes.loc[upto, legs][inside], sliced, config.rule, Costs(config.taker_fee, config.slippage),
                settings.pairs_trading.capital, config.dollar_neutral)  # fmt: skip
    return float(run.equity[-1] - run.initial)


def pairs_discover(settings: Settings, tracking_uri: str, interval: str, start: str | None = None,
                   end: str | None = None) -> tuple[Discovery, str]:  # fmt: skip
    """Discovery over the offline store's universe, logged as an MLflow run (the tested pairs as pairs.csv)."""
    closes = load_closes(settings, interval, start, end)
    found = discover(np.log(closes.where(closes > 0)), settings.pairs_trading)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(model_name(interval))
    with mlflow.start_run(run_name="pairs discovery") as run:
        mlflow.log_params({"interval": interval, "tickers": closes.shape[1], "bars": len(closes)})
        mlflow.log_metrics({"tested": found.tests, "accepted": len(found.accepted), "clusters": len(found.clusters),
                            "skipped": len(found.skipped)})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            found.frame().to_csv(Path(tmp) / "pairs.csv", index=False)
            mlflow.log_artifacts(tmp)
    return found, run.info.run_id
