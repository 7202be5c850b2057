"""The last N feature rows of a pair, as the input window of the sequence models served online.

The online store holds one row per pair, so a window is written as one row:
a list per feature (``<name>_window``), oldest first, NaN for a value still
warming up. The feature pipeline's sink builds it from the pair's offline
history (`window_row`); the streaming predictions keep one in state
(`push_row`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from feature_repo.names import CANDLE_FEATURES, CREATED_TIMESTAMP, ENTITY, EVENT_TIMESTAMP, window_feature


def window_row(history: pd.DataFrame, pair: str) -> dict:
    """The window row of `pair` from its last candle rows (time-ordered, all `CANDLE_FEATURES`), stamped at the
    latest one's time."""
    return {
        ENTITY: pair,
        EVENT_TIMESTAMP: history[EVENT_TIMESTAMP].iloc[-1],
        CREATED_TIMESTAMP: pd.Timestamp.now(tz="UTC"),
        **{window_feature(name): history[name].to_numpy(dtype=float).tolist() for name in CANDLE_FEATURES},
    }


def push_row(window: list[list[float | None]], row: Mapping, names: Sequence[str], length: int) -> None:
    """Append `row`'s values of `names` to `window` (mutated; JSON-serialisable state), keeping the last `length`."""
    window.append([None if row[name] is None else float(row[name]) for name in names])
    del window[:-length]
