"""The universe features as a job file (`coinflow.jobs`): a candle of one ticker in, its feature row out.

State per pair (the message key), one entry per interval: the ticker's last close and window of log returns
(`transforms.universe_features`). Run by ``backfill-universe`` and equally by
``run-job feature_pipeline/universe/job.py --input universe-candles --view universe_1m`` (1-minute candles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from coinflow.jobs import KeyState, Reject
from coinflow.quality import Rejects
from coinflow.schemas import INTERVALS_SECONDS
from coinflow.settings import Settings
from feature_pipeline.transforms.universe_features import UniverseParams, new_ticker_state, update_ticker

UNDEFINED_HURST = "undefined_hurst"  # counted, not dead-lettered: the row is written with a NaN Hurst


def universe_params(settings: Settings, interval: str) -> UniverseParams:
    universe = settings.universe
    return UniverseParams(
        interval_ms=INTERVALS_SECONDS[interval] * 1000,
        volatility_window=universe.volatility_window,
        hurst_window=universe.hurst_window,
        max_gap=universe.max_gap_intervals,
    )


@dataclass(frozen=True)
class UniverseConfig:
    params: dict[str, UniverseParams]
    hurst: Rejects = field(default_factory=lambda: Rejects("universe_hurst"))  # undefined Hurst values


def universe_candle_reason(record: object, key: str | None) -> str | None:
    """Why a record of the universe candles topic cannot be used (what the features read: its pair, known
    interval, close time and a positive finite close), or None. Full candles of the candles topic pass too."""
    if not isinstance(record, dict):
        return "not_an_object"
    if not isinstance(record.get("pair"), str) or record.get("interval") not in INTERVALS_SECONDS:
        return "missing_pair_or_interval"
    if key is not None and record["pair"] != key:
        return "key_mismatch"
    end, close = record.get("window_end_ms"), record.get("close")
    if not isinstance(end, int) or isinstance(end, bool):
        return "bad_timestamp"
    if not isinstance(close, int | float) or isinstance(close, bool) or not (math.isfinite(close) and close > 0):
        return "non_positive_or_nan"
    return None


def setup(settings: Settings) -> UniverseConfig:
    return UniverseConfig({interval: universe_params(settings, interval) for interval in INTERVALS_SECONDS})


def process(record: dict, state: KeyState) -> dict:
    """A candle -> its ticker's feature row (pair, interval, window_end_ms, log_return, volatility, hurst,
    hurst_se)."""
    reason = universe_candle_reason(record, state.key)
    if reason is not None:
        raise Reject(reason)
    config: UniverseConfig = state.config
    name = f"universe:{record['interval']}"
    ticker = state.get(name) or new_ticker_state()
    out = update_ticker(ticker, record["window_end_ms"], float(record["close"]), config.params[record["interval"]])
    if isinstance(out, str):
        raise Reject(out)
    values, undefined = out
    if undefined:
        config.hurst.add({UNDEFINED_HURST: 1})
    state.set(name, ticker)
    return {"pair": record["pair"], "interval": record["interval"], "window_end_ms": record["window_end_ms"], **values}
