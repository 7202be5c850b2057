"""Raw FeatureService columns -> the stationary inputs the learned models see.

Price levels drift (BTC went from 16,500 to 28,000 USD in 2023 Q1): a model
fitted on levels cannot carry over to prices it has not seen, and trees cannot
extrapolate at all. Every price-valued feature is therefore expressed relative
to the current close, volumes on a log scale, and the two cumulative or level
columns (``close``, ``obv``) are not model inputs. Features the service may
gain later pass through unchanged. This runs inside every saved model, so
serving feeds the same raw columns that training read.

The transformation works on a float array (`input_matrix`), so that serving
one row costs microseconds; `model_inputs` is the same code for frames, as
training uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

PRICE_LEVELS = ("open", "high", "low", "vwap", "sma_14", "ema_14", "bb_upper", "bb_middle", "bb_lower")
PRICE_DIFFERENCES = ("macd", "macd_signal", "macd_hist", "atr_14")
COUNTS = ("volume", "trade_count")
NOT_INPUTS = ("close", "obv")


@dataclass(frozen=True)
class _Layout:
    """Where each model input comes from, for one order of raw columns (positions index numpy arrays)."""

    names: tuple[str, ...]
    sources: np.ndarray
    close: int
    levels: np.ndarray
    differences: np.ndarray
    counts: np.ndarray


@lru_cache(maxsize=64)
def _layout(columns: tuple[str, ...]) -> _Layout:
    if "close" not in columns:
        raise ValueError("the raw features must include 'close': every price feature is taken relative to it")
    names: list[str] = []
    sources: list[int] = []
    levels: list[int] = []
    differences: list[int] = []
    counts: list[int] = []
    for position, name in enumerate(columns):
        if name in NOT_INPUTS:
            continue
        if name in PRICE_LEVELS:
            levels.append(len(names))
            names.append(f"{name}_rel")
        elif name in PRICE_DIFFERENCES:
            differences.append(len(names))
            names.append(f"{name}_rel")
        elif name in COUNTS:
            counts.append(len(names))
            names.append(f"log_{name}")
        else:
            names.append(name)
        sources.append(position)
    return _Layout(
        tuple(names), _index(sources), columns.index("close"), _index(levels), _index(differences), _index(counts)
    )


def _index(positions: list[int]) -> np.ndarray:
    return np.asarray(positions, dtype=np.intp)


def input_names(columns: Sequence[str]) -> tuple[str, ...]:
    """The names of the model inputs made from raw columns `columns`, in their order."""
    return _layout(tuple(columns)).names


def input_matrix(columns: Sequence[str], values: np.ndarray) -> np.ndarray:
    """The model inputs (2-D float64, columns as `input_names`) of raw feature rows `values` (2-D, one column per
    name in `columns`, which must include ``close``)."""
    layout = _layout(tuple(columns))
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(columns):
        raise ValueError(f"expected rows of {len(columns)} raw features, got an array of shape {values.shape}")
    close = values[:, layout.close, None]
    out = values[:, layout.sources]
    out[:, layout.levels] = np.log(out[:, layout.levels] / close)
    out[:, layout.differences] = out[:, layout.differences] / close
    out[:, layout.counts] = np.log1p(np.maximum(out[:, layout.counts], 0.0))
    return out


def model_inputs(raw: pd.DataFrame) -> pd.DataFrame:
    """The model inputs for rows of raw features (which must include ``close``), in a fixed column order."""
    columns = tuple(raw.columns)
    values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame(input_matrix(columns, values), columns=list(input_names(columns)), index=raw.index)


@lru_cache(maxsize=64)
def _positions(columns: tuple[str, ...], wanted: tuple[str, ...]) -> np.ndarray | None:
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise ValueError(f"the raw features lack {missing}")
    if columns == wanted:
        return None
    return np.asarray([columns.index(name) for name in wanted], dtype=np.intp)


def select_columns(columns: Sequence[str], values: np.ndarray, wanted: Sequence[str]) -> np.ndarray:
    """The columns named `wanted`, in that order, of rows `values` whose columns are named `columns`."""
    positions = _positions(tuple(columns), tuple(wanted))
    return values if positions is None else values[:, positions]
