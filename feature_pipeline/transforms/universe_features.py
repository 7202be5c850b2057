"""Per-ticker features of a universe: log return, rolling volatility and the Hurst exponent with its error.

`update_ticker` folds one candle of a ticker into a small JSON-serialisable
state (its last close and time, and the window of its latest log returns), for
the streaming pipeline's Quix state; `universe_features` computes the same
columns for a whole frame at once (the batch reference). Both give the same
value at every row, to the last digit: the window statistics of a row are
computed by the same two functions over the same numbers.

- log_return: ln(close / previous close); undefined for a ticker's first candle
  and the first after a long gap.
- volatility: the sample standard deviation (ddof 1) of the last
  ``volatility_window`` log returns, undefined until there are that many.
- hurst, hurst_se: `coinflow.mean_reversion.hurst_dfa` (DFA-1) over the last
  ``hurst_window`` log returns, undefined until there are that many, and when
  the window is constant (a price that does not move: no estimate, counted by
  the caller).

Missing candles (exchanges omit intervals without trades; files have outages):
up to ``max_gap`` missing intervals in a row are taken as unchanged prices,
a zero log return for each, so that a window always spans the same time; a
longer gap restarts the ticker (its windows fill again), since returns across
it would mix two regimes into one increment. A ticker listed mid-period simply
starts with its first candle. A value not defined is None in the streaming
output and NaN in the batch output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from coinflow.mean_reversion import hurst_dfa
from feature_repo.names import EVENT_TIMESTAMP, UNIVERSE_FEATURES


@dataclass(frozen=True)
class UniverseParams:
    """The windows and the gap rule (`coinflow.settings.Universe`) with the candles' interval."""

    interval_ms: int
    volatility_window: int
    hurst_window: int
    max_gap: int

    @property
    def kept(self) -> int:
        """Log returns a ticker's state keeps: the longer window."""
        return max(self.volatility_window, self.hurst_window)


def new_ticker_state() -> dict:
    return {"last_end_ms": None, "last_close": None, "returns": []}


def log_return(close: float, previous: float) -> float:
    return math.log(close / previous)


def volatility(returns: np.ndarray) -> float:
    """Sample standard deviation of a window of log returns."""
    return float(np.std(returns, ddof=1))


def missing_intervals(end_ms: int, last_end_ms: int, interval_ms: int) -> int:
    """Candles missing between two candles of a ticker."""
    return (end_ms - last_end_ms) // interval_ms - 1


def window_values(returns: np.ndarray, params: UniverseParams) -> tuple[dict[str, float | None], bool]:
    """Volatility and Hurst (with its error) of a ticker's latest log returns (oldest first), and whether the
    Hurst window was full but gave no estimate (a constant window)."""
    vol = volatility(returns[-params.volatility_window :]) if len(returns) >= params.volatility_window else None
    hurst = hurst_se = None
    undefined = False
    if len(returns) >= params.hurst_window:
        estimate = hurst_dfa(returns[-params.hurst_window :])
        if math.isfinite(estimate.h):
            hurst, hurst_se = estimate.h, estimate.se
        else:
            undefined = True
    return {"volatility": vol, "hurst": hurst, "hurst_se": hurst_se}, undefined


def update_ticker(
    state: dict, end_ms: int, close: float, params: UniverseParams
) -> tuple[dict[str, float | None], bool] | str:
    """Fold a candle (its close time and close) into a ticker's state; returns its features and whether its Hurst
    was undefined, or ``stale_candle`` for a candle not after the last one (the state is then unchanged)."""
    last_end_ms = state["last_end_ms"]
    if last_end_ms is not None and end_ms <= last_end_ms:
        return "stale_candle"
    returns: list[float] = state["returns"]
    value = None
    if last_end_ms is None or missing_intervals(end_ms, last_end_ms, params.interval_ms) > params.max_gap:
        returns.clear()
    else:
        returns.extend([0.0] * missing_intervals(end_ms, last_end_ms, params.interval_ms))
        value = log_return(close, state["last_close"])
        returns.append(value)
        del returns[: -params.kept]
    state["last_end_ms"], state["last_close"] = end_ms, close
    values, undefined = window_values(np.array(returns, dtype=float), params)
    return {"close": close, "log_return": value, **values}, undefined


def _ticker_features(times_ms: np.ndarray, closes: np.ndarray, params: UniverseParams) -> pd.DataFrame:
    """The features of one ticker's candles (in time order): gaps placed on a grid of intervals, each run of
    candles without a long gap a segment of its own, its missing intervals zero returns."""
    missing = np.diff(times_ms) // params.interval_ms - 1
    starts = np.concatenate(([True], missing > params.max_gap))
    rows = []
    grid: list[float] = []  # the current segment's log returns, one per interval
    for i, close in enumerate(closes):
        if starts[i]:
            grid, value = [], math.nan
        else:
            grid += [0.0] * int(missing[i - 1])
            value = log_return(float(close), float(closes[i - 1]))
            grid.append(value)
        values, _ = window_values(np.array(grid[-params.kept :], dtype=float), params)
        rows.append({"close": float(close), "log_return": value, **values})
    return pd.DataFrame(rows, columns=list(UNIVERSE_FEATURES)).astype("float64")


def universe_features(frame: pd.DataFrame, params: UniverseParams) -> pd.DataFrame:
    """The batch reference: per-ticker features of a frame of candles (`coinflow.exchange_files.read_candle_file`'s
    columns pair, event_timestamp, close, ...), one row per candle: pair, event_timestamp and `UNIVERSE_FEATURES`,
    pair by pair in time order (NaN where a value is undefined)."""
    parts = []
    for pair, group in frame.sort_values(["pair", EVENT_TIMESTAMP], kind="stable").groupby("pair", sort=True):
        times = group[EVENT_TIMESTAMP].astype("int64").to_numpy() // 1_000_000
        features = _ticker_features(times, group["close"].to_numpy(dtype=float), params)
        features.insert(0, EVENT_TIMESTAMP, group[EVENT_TIMESTAMP].to_numpy())
        features.insert(0, "pair", pair)
        parts.append(features)
    if not parts:
        return pd.DataFrame(columns=["pair", EVENT_TIMESTAMP, *UNIVERSE_FEATURES])
    return pd.concat(parts, ignore_index=True)
