"""The orchestrator's pure step: candle by candle, it gives exactly the records of batch rolling discovery over the
same closes; its state is bounded and survives serialisation; late candles are counted, not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
from quixstreams.utils.json import dumps, loads

from coinflow.pair_candidates import candidate_events, rolling_discovery
from coinflow.settings import PairsTrading
from feature_pipeline.transforms.pair_orchestration import (
    BARS_KEY,
    LATE,
    DictStore,
    orchestrate,
    orchestrator_params,
)
from tests.support.pairs_synthetic import random_walk, universe

SETTINGS = PairsTrading(min_history_bars=500, retest_window_bars=1000, retest_interval_s=500 * 60,
                        leave_after_s=1000 * 60)  # fmt: skip


class StateLike(DictStore):
    """A store whose values go through Quix's state serialisation (orjson), as they would in RocksDB."""

    def set(self, key, value) -> None:
        self[key] = dumps(value)

    def get(self, key, default=None):
        return loads(self[key]) if key in self else default


def breaking_universe() -> pd.DataFrame:
    """Closes of 6 random walks and a cointegrated pair that breaks at bar 2000 (index: close time in ms)."""
    prices, _ = universe(11, n_bars=4000, n_independent=6)
    rng = np.random.default_rng(11)
    q = prices["Q0/USDT"].to_numpy().copy()
    q[2000:] = 1.5 * prices["P0/USDT"].to_numpy()[2000:] + 1.0 + 3 * random_walk(rng, 2000)
    prices["Q0/USDT"] = q
    closes = np.exp(prices[sorted(prices.columns)])
    closes.index = closes.index.asi8 // 1_000_000
    return closes


def stream(store, closes: pd.DataFrame) -> tuple[list, int]:
    params = orchestrator_params(SETTINGS)
    records, late = [], 0
    for ms, row in closes.iterrows():
        for ticker, close in row.items():
            if np.isfinite(close):
                out = orchestrate(store, str(ticker), int(ms), float(close), params)
                late += out == LATE
                records += [] if out == LATE else out
    return records, late


def batch(closes: pd.DataFrame) -> list:
    log_prices = np.log(closes.set_axis(pd.to_datetime(closes.index, unit="ms", utc=True)))
    return candidate_events(rolling_discovery(log_prices, SETTINGS), SETTINGS.leave_after_s)


def test_the_stream_gives_the_batch_records_over_the_same_closes() -> None:
    closes = breaking_universe()
    store = StateLike()
    records, late = stream(store, closes)
    expected = batch(closes)
    assert [(r["event"], r["pair_id"]) for r in expected] == [
        ("enter", "Q0-USDT__P0-USDT"),
        ("leave", "Q0-USDT__P0-USDT"),
    ]
    assert loads(dumps(records)) == loads(dumps(expected)) and late == 0
    assert len(loads(store[BARS_KEY])) == SETTINGS.retest_window_bars  # bounded: one window of bars
    assert sum(k.startswith("bar:") for k in store) == SETTINGS.retest_window_bars


def test_gaps_and_a_listing_mid_period_match_the_batch_too() -> None:
    closes = breaking_universe()
    closes.iloc[:1500, closes.columns.get_loc("R0/USDT")] = np.nan  # listed mid-period
    closes.iloc[2500:2600, closes.columns.get_loc("R1/USDT")] = np.nan  # a gap
    records, _ = stream(DictStore(), closes)
    assert records == batch(closes)


def test_a_candle_of_an_interval_already_retested_is_late() -> None:
    closes = breaking_universe().iloc[:1300]
    store = DictStore()
    stream(store, closes)
    params = orchestrator_params(SETTINGS)
    assert orchestrate(store, "R0/USDT", int(closes.index[1000]), 1.0, params) == LATE
    assert orchestrate(store, "R0/USDT", int(closes.index[-1]), 1.0, params) == []
