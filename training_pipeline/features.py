"""Raw FeatureService columns -> the stationary inputs the learned models see.

Price levels drift (BTC went from 16,500 to 28,000 USD in 2023 Q1): a model
fitted on levels cannot carry over to prices it has not seen, and trees cannot
extrapolate at all. Every price-valued feature is therefore expressed relative
to the current close, volumes on a log scale, and the two cumulative or level
columns (``close``, ``obv``) are not model inputs. Features the service may
gain later pass through unchanged. This runs inside every saved model, so
serving feeds the same raw columns that training read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRICE_LEVELS = ("open", "high", "low", "vwap", "sma_14", "ema_14", "bb_upper", "bb_middle", "bb_lower")
PRICE_DIFFERENCES = ("macd", "macd_signal", "macd_hist", "atr_14")
COUNTS = ("volume", "trade_count")
NOT_INPUTS = ("close", "obv")


def model_inputs(raw: pd.DataFrame) -> pd.DataFrame:
    """The model inputs for rows of raw features (which must include ``close``), in a fixed column order."""
    if "close" not in raw.columns:
        raise ValueError("the raw features must include 'close': every price feature is taken relative to it")
    close = raw["close"].astype(float)
    out = {}
    for name in raw.columns:
        if name in NOT_INPUTS:
            continue
        values = raw[name].astype(float)
        if name in PRICE_LEVELS:
            out[f"{name}_rel"] = np.log(values / close)
        elif name in PRICE_DIFFERENCES:
            out[f"{name}_rel"] = values / close
        elif name in COUNTS:
            out[f"log_{name}"] = np.log1p(values.clip(lower=0))
        else:
            out[name] = values
    return pd.DataFrame(out, index=raw.index)
