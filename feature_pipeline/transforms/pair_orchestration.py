"""The orchestrator's pure step: a universe's candles -> the re-test window in a store -> `pair_candidates` records.

The whole universe is one state (discovery needs every ticker together), laid out so that a candle costs one small
read and write: ``bar:<ms>`` holds one bar's closes {ticker: close}, ``bars`` the bar times buffered (the latest
``window_bars``, oldest first: the state stays bounded), ``meta`` the latest bar and the last re-test time, and
``alive`` the candidate tracker's pairs.

Re-tests as in `coinflow.pair_candidates.rolling_discovery`: an interval (``interval_s``, aligned to the epoch) is
over when the first bar of a later one arrives; then, once ``window_bars`` bars exist, discovery runs over them
(log closes, a column a ticker in ticker order) at the interval's last bar, and the tracker's enter and leave
records come out. Event time only: the same candles in the same order give the same records. A candle of an
interval already re-tested is too late to change it: counted ``late``, not used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from coinflow.pair_candidates import Candidate, CandidateTracker
from coinflow.pair_discovery import PairTest, discover
from coinflow.pairs import PairCandidate
from coinflow.settings import PairsTrading

LATE = "late"
META_KEY, BARS_KEY, ALIVE_KEY = "meta", "bars", "alive"


class Store(Protocol):
    """What the step needs of Quix's `State` (a dict-backed one in tests and the benchmark)."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def delete(self, key: str) -> None: ...


class DictStore(dict):
    """A `Store` in a dict."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


@dataclass(frozen=True)
class OrchestratorParams:
    interval_ms: int
    window_bars: int
    leave_after_s: float
    discovery: PairsTrading


def orchestrator_params(settings: PairsTrading) -> OrchestratorParams:
    return OrchestratorParams(
        settings.retest_interval_s * 1000, settings.retest_window_bars, settings.leave_after_s, settings
    )


def bar_key(ms: int) -> str:
    return f"bar:{ms}"


def _finite_or_nan(value: Any) -> Any:
    return math.nan if value is None else value


def tracker_to_state(tracker: CandidateTracker) -> list[dict]:
    """The tracker's alive pairs as JSON-able records (NaN is written as null, read back as NaN)."""
    return [
        {"entered": {**asdict(c.entered), "reasons": list(c.entered.reasons)}, "failing_since_ms": c.failing_since_ms}
        for c in tracker.alive.values()
    ]


def tracker_from_state(records: list[dict] | None, leave_after_s: float) -> CandidateTracker:
    tracker = CandidateTracker(leave_after_s)
    for record in records or []:
        fields = {k: _finite_or_nan(v) for k, v in record["entered"].items()}
        entered = PairTest(**{**fields, "reasons": tuple(record["entered"]["reasons"])})
        tracker.alive[frozenset((entered.y, entered.x))] = Candidate(entered, record["failing_since_ms"])
    return tracker


def window_log_prices(store: Store, bars: list[int]) -> pd.DataFrame:
    """The buffered bars as the frame discovery reads: log closes, a row a bar (its close time), a column a ticker."""
    rows = [store.get(bar_key(ms)) or {} for ms in bars]
    frame = pd.DataFrame.from_records(rows, index=pd.to_datetime(bars, unit="ms", utc=True))
    return np.log(frame[sorted(frame.columns)].astype(float))


def retest(store: Store, time_ms: int, bars: list[int], params: OrchestratorParams) -> list[PairCandidate]:
    """Discovery over the buffered window at `time_ms`; the tracker's records (its state updated in the store)."""
    tracker = tracker_from_state(store.get(ALIVE_KEY), params.leave_after_s)
    events = tracker.update(time_ms, discover(window_log_prices(store, bars), params.discovery))
    store.set(ALIVE_KEY, tracker_to_state(tracker))
    return events


def add_bar(store: Store, bars: list[int], ms: int, window_bars: int) -> bool:
    """Insert a new bar time in order and drop the oldest beyond the window (their closes with them); False when
    the new one is itself the oldest of a full window (dropped at once)."""
    bars.insert(int(np.searchsorted(bars, ms)), ms)
    while len(bars) > window_bars:
        store.delete(bar_key(bars.pop(0)))
    store.set(BARS_KEY, bars)
    return bool(bars) and bars[0] <= ms


def orchestrate(
    store: Store, ticker: str, ms: int, close: float, params: OrchestratorParams
) -> list[PairCandidate] | str:
    """One valid candle (its ticker, close time, positive close): the records of the re-test it triggers (mostly
    none), or `LATE` for a candle of an interval already re-tested."""
    meta = store.get(META_KEY) or {"last_ms": None, "retested_ms": None}
    last, retested = meta["last_ms"], meta["retested_ms"]
    if retested is not None and ms <= retested:
        return LATE
    events: list[PairCandidate] = []
    key = bar_key(ms)
    bar = store.get(key)
    if bar is None:
        bars = store.get(BARS_KEY) or []
        interval_over = last is not None and ms > last and ms // params.interval_ms != last // params.interval_ms
        if interval_over and len(bars) >= params.window_bars:
            events = retest(store, last, bars, params)
            meta["retested_ms"] = last
        kept = add_bar(store, bars, ms, params.window_bars)
        if last is None or ms > last:
            meta["last_ms"] = ms
        store.set(META_KEY, meta)
        if not kept:
            return events
        bar = {}
    bar[ticker] = close
    store.set(key, bar)
    return events
