"""Technical indicators over OHLCV candles: one streaming and one batch implementation.

`update_indicators` folds one candle at a time into a small JSON-serialisable state,
so the streaming pipeline can keep it in Quix Streams' state store and resume after a
restart; each update costs O(1) whatever the number of candles seen. `compute_indicators`
computes the same columns for a whole DataFrame at once (training, backfills). Both
give the same value at every row, and the same undefined (warm-up) rows.

The indicators, and the TA-Lib call each one matches (default compatibility mode,
unstable period 0, every series starting at the first candle given):

- sma_14: talib.SMA(close, 14).
- ema_14: talib.EMA(close, 14), seeded with the mean of the first 14 closes.
- rsi_14: talib.RSI(close, 14), Wilder smoothing of gains and losses seeded with their
  mean over the first 14 changes; 0 when no change at all is left in the averages.
- macd, macd_signal, macd_hist: talib.MACD(close, 12, 26, 9). As in TA-Lib, the fast
  EMA is seeded on closes 14..25 so that both EMAs start at candle 25, and all three
  outputs start at candle 33, once the signal EMA is seeded.
- bb_upper, bb_middle, bb_lower: talib.BBANDS(close, 20, 2, 2, matype=0), i.e. the
  20-candle SMA plus and minus twice the population standard deviation.
- atr_14: talib.ATR(high, low, close, 14), Wilder smoothing of the true range, which
  starts at the second candle.
- obv: talib.OBV(close, volume), which starts at the first candle's volume (not 0).
- log_return: ln(close_t / close_{t-1}); undefined for the first candle.
- realized_vol_30: sqrt of the sum of the squares of the last 30 log returns (neither
  demeaned nor annualised); undefined until 30 log returns exist, i.e. before candle 30.

A value not defined yet is None in the streaming output and NaN in the batch output,
on exactly the rows where TA-Lib outputs NaN.

The recursive averages (EMA, Wilder) repeat TA-Lib's floating-point operations in
TA-Lib's order, and the batch version runs them through the same scalar step as the
streaming one (a recursion cannot be vectorised without changing its rounding). Window
statistics are recomputed from the buffered window on every candle, never kept as
running sums, so they cannot drift over a long stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from feature_repo.names import INDICATOR_FEATURES

INDICATOR_NAMES: tuple[str, ...] = INDICATOR_FEATURES

SMA_PERIOD = 14
EMA_PERIOD = 14
RSI_PERIOD = 14
MACD_FAST = 12
MACD_SLOW = 26
MACD_SIGNAL = 9
BB_PERIOD = 20
BB_DEVIATIONS = 2.0
ATR_PERIOD = 14
VOL_WINDOW = 30


def _new_average() -> dict:
    """State of a recursive average that is seeded with the mean of its first inputs."""
    return {"n": 0, "sum": 0.0, "value": None}


def _feed_average(average: dict, x: float, period: int, wilder: bool) -> float | None:
    """Feed one input to a TA-Lib style EMA (k = 2/(period+1)) or Wilder average.

    The first `period` inputs are summed in order and their mean is the first value;
    afterwards the update is TA-Lib's, operation for operation. Returns None until seeded.
    """
    value = average["value"]
    if value is None:
        average["sum"] += x
        average["n"] += 1
        if average["n"] == period:
            average["value"] = average["sum"] / period
    elif wilder:
        average["value"] = (value * (period - 1) + x) / period
    else:
        average["value"] = (x - value) * (2.0 / (period + 1)) + value
    return average["value"]


def _push(window: list, x: float, size: int) -> None:
    """Append to a ring buffer kept as a list, oldest first, of at most `size` values."""
    window.append(x)
    if len(window) > size:
        del window[0]


def new_indicator_state() -> dict:
    """Return the state of a stream that has seen no candle yet (JSON-serialisable)."""
    return {
        "count": 0,
        "closes": [],
        "log_returns": [],
        "ema_14": _new_average(),
        "macd_fast": _new_average(),
        "macd_slow": _new_average(),
        "macd_signal": _new_average(),
        "rsi_gain": _new_average(),
        "rsi_loss": _new_average(),
        "atr_14": _new_average(),
        "obv": None,
    }


def update_indicators(state: dict, candle: Mapping[str, float]) -> dict[str, float | None]:
    """Fold one candle into `state` (mutated in place) and return its 13 indicator values.

    `candle` needs the keys high, low, close and volume (open is accepted and unused).
    Values still in warm-up are None.
    """
    high = float(candle["high"])
    low = float(candle["low"])
    close = float(candle["close"])
    volume = float(candle["volume"])
    out: dict[str, float | None] = dict.fromkeys(INDICATOR_NAMES)

    closes = state["closes"]
    prev_close = closes[-1] if closes else None
    _push(closes, close, BB_PERIOD)

    if len(closes) >= SMA_PERIOD:
        out["sma_14"] = sum(closes[-SMA_PERIOD:]) / SMA_PERIOD
    if len(closes) == BB_PERIOD:
        middle = sum(closes) / BB_PERIOD
        std = math.sqrt(sum((x - middle) * (x - middle) for x in closes) / BB_PERIOD)
        out["bb_upper"] = middle + BB_DEVIATIONS * std
        out["bb_middle"] = middle
        out["bb_lower"] = middle - BB_DEVIATIONS * std

    out["ema_14"] = _feed_average(state["ema_14"], close, EMA_PERIOD, wilder=False)

    slow = _feed_average(state["macd_slow"], close, MACD_SLOW, wilder=False)
    if state["count"] >= MACD_SLOW - MACD_FAST:
        fast = _feed_average(state["macd_fast"], close, MACD_FAST, wilder=False)
        if fast is not None and slow is not None:
            line = fast - slow
            signal = _feed_average(state["macd_signal"], line, MACD_SIGNAL, wilder=False)
            if signal is not None:
                out["macd"] = line
                out["macd_signal"] = signal
                out["macd_hist"] = line - signal

    if prev_close is None:
        state["obv"] = volume
    else:
        change = close - prev_close
        gain = _feed_average(state["rsi_gain"], change if change > 0 else 0.0, RSI_PERIOD, wilder=True)
        loss = _feed_average(state["rsi_loss"], -change if change < 0 else 0.0, RSI_PERIOD, wilder=True)
        if gain is not None and loss is not None:
            total = gain + loss
            out["rsi_14"] = 100.0 * (gain / total) if total != 0.0 else 0.0

        true_range = max(high - low, abs(high - prev_close), abs(low - prev_close))
        out["atr_14"] = _feed_average(state["atr_14"], true_range, ATR_PERIOD, wilder=True)

        if change > 0:
            state["obv"] += volume
        elif change < 0:
            state["obv"] -= volume

        log_return = math.log(close / prev_close)
        returns = state["log_returns"]
        _push(returns, log_return, VOL_WINDOW)
        out["log_return"] = log_return
        if len(returns) == VOL_WINDOW:
            out["realized_vol_30"] = math.sqrt(sum(r * r for r in returns))

    out["obv"] = state["obv"]
    state["count"] += 1
    return out


def _average_series(values: np.ndarray, period: int, wilder: bool, start: int) -> np.ndarray:
    """Run `_feed_average` over values[start:]; NaN where the average is not seeded yet."""
    out = np.full(len(values), np.nan)
    average = _new_average()
    for i, x in enumerate(values[start:].tolist(), start):
        value = _feed_average(average, x, period, wilder)
        if value is not None:
            out[i] = value
    return out


def _windows(values: np.ndarray, size: int) -> np.ndarray:
    """Trailing windows as rows (one per input row); rows before the first full window hold NaN."""
    return sliding_window_view(np.concatenate((np.full(size - 1, np.nan), values)), size)


def _row_sums(windows: np.ndarray) -> np.ndarray:
    """Sum each row oldest first, the order of the streaming `sum(buffer)`, so both round alike."""
    total = windows[:, 0].copy()
    for column in range(1, windows.shape[1]):
        total += windows[:, column]
    return total


def compute_indicators(candles: pd.DataFrame) -> pd.DataFrame:
    """Compute the 13 indicators for candles in time order (columns open, high, low, close, volume).

    Returns a frame with the same index and one column per name in INDICATOR_NAMES,
    NaN where `update_indicators` would return None.
    """
    if candles.empty:
        return pd.DataFrame(index=candles.index, columns=list(INDICATOR_NAMES), dtype=float)
    high = candles["high"].to_numpy(dtype=float)
    low = candles["low"].to_numpy(dtype=float)
    close = candles["close"].to_numpy(dtype=float)
    volume = candles["volume"].to_numpy(dtype=float)
    prev_close = np.concatenate(([np.nan], close[:-1]))
    change = close - prev_close

    sma = _row_sums(_windows(close, SMA_PERIOD)) / SMA_PERIOD

    bb_windows = _windows(close, BB_PERIOD)
    bb_middle = _row_sums(bb_windows) / BB_PERIOD
    deviations = bb_windows - bb_middle[:, None]
    bb_std = np.sqrt(_row_sums(deviations * deviations) / BB_PERIOD)

    ema = _average_series(close, EMA_PERIOD, wilder=False, start=0)

    slow = _average_series(close, MACD_SLOW, wilder=False, start=0)
    fast = _average_series(close, MACD_FAST, wilder=False, start=MACD_SLOW - MACD_FAST)
    signal = _average_series(fast - slow, MACD_SIGNAL, wilder=False, start=MACD_SLOW - 1)
    macd = np.where(np.isnan(signal), np.nan, fast - slow)

    gain = _average_series(np.where(change > 0, change, 0.0), RSI_PERIOD, wilder=True, start=1)
    loss = _average_series(np.where(change < 0, -change, 0.0), RSI_PERIOD, wilder=True, start=1)
    total = gain + loss
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = np.where(total != 0.0, 100.0 * (gain / total), 0.0)

    true_range = np.maximum(np.maximum(high - low, np.abs(high - prev_close)), np.abs(low - prev_close))
    atr = _average_series(true_range, ATR_PERIOD, wilder=True, start=1)

    obv = np.cumsum(np.concatenate((volume[:1], np.sign(change[1:]) * volume[1:])))

    log_return = np.log(close / prev_close)
    realized_vol = np.sqrt(_row_sums(_windows(log_return * log_return, VOL_WINDOW)))

    columns = {
        "sma_14": sma,
        "ema_14": ema,
        "rsi_14": rsi,
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": macd - signal,
        "bb_upper": bb_middle + BB_DEVIATIONS * bb_std,
        "bb_middle": bb_middle,
        "bb_lower": bb_middle - BB_DEVIATIONS * bb_std,
        "atr_14": atr,
        "obv": obv,
        "log_return": log_return,
        "realized_vol_30": realized_vol,
    }
    return pd.DataFrame(columns, index=candles.index, columns=list(INDICATOR_NAMES))
