"""Per-ticker universe features: the streaming step (Quix state per pair) equals the batch reference to the last
digit on real Binance candles, and gaps, late listings, constant prices and bad candles are handled as documented."""

import heapq
import json
import math

import numpy as np
import pandas as pd
import pytest

from coinflow.exchange_files import candle_frame, iter_candle_file
from coinflow.mean_reversion import hurst_dfa
from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from feature_pipeline.sources.file_sources import universe_candle
from feature_pipeline.transforms.universe_features import universe_features
from feature_pipeline.universe.dataflow import UNDEFINED_HURST, compute_universe_features, universe_params
from feature_repo.names import EVENT_TIMESTAMP, UNIVERSE_FEATURES
from tests.support.paths import BINANCE_1M

MINUTE = 60_000
T0 = 1_621_092_300_000
SETTINGS = Settings(_env_file=None, universe_volatility_window=30, universe_hurst_window=128)
PARAMS = universe_params(SETTINGS, "1m")


class JsonState:
    """Quix's State interface (get/set) over a dict, each value through JSON as Quix's store keeps it."""

    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key, default=None):
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key, value) -> None:
        self.values[key] = json.dumps(value)


def stream(records, settings=SETTINGS):
    """Run records through the dataflow's stateful step, a state per key (pair) as Quix keeps it."""
    rejects, hurst = Rejects("test"), Rejects("hurst")
    step = compute_universe_features(settings, rejects, hurst)
    states: dict[str, JsonState] = {}
    rows = []
    for record in records:
        out = step(
            record, record["pair"], record["window_end_ms"], None, states.setdefault(record["pair"], JsonState())
        )
        if "stage" not in out and "control" not in out:
            rows.append(out)
    return rows, rejects, hurst


def as_frame(rows) -> pd.DataFrame:
    """Streaming rows as the batch reference's frame (None as NaN), pair by pair in time order."""
    frame = pd.DataFrame(rows)
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame.pop("window_end_ms"), unit="ms", utc=True)
    frame = frame[["pair", EVENT_TIMESTAMP, *UNIVERSE_FEATURES]]
    frame[list(UNIVERSE_FEATURES)] = frame[list(UNIVERSE_FEATURES)].astype("float64")
    return frame.sort_values(["pair", EVENT_TIMESTAMP], kind="stable").reset_index(drop=True)


def candles(pair, closes, times=None):
    times = times if times is not None else [T0 + i * MINUTE for i in range(len(closes))]
    return [
        {"pair": pair, "interval": "1m", "window_end_ms": t, "open": c, "high": c, "low": c, "close": c, "volume": 1.0}
        for t, c in zip(times, closes, strict=True)
    ]


def frame_of(records) -> pd.DataFrame:
    return candle_frame(
        {
            "pair": r["pair"],
            "timestamp_ms": r["window_end_ms"],
            **{k: r[k] for k in ("open", "high", "low", "close", "volume")},
        }
        for r in records
    )


def random_closes(n, seed=0):
    return list(100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.001, n))))


@pytest.mark.skipif(not BINANCE_1M.is_dir(), reason="the shared Binance candles are not beside the checkout")
def test_streaming_equals_the_batch_reference_on_real_candles(tmp_path):
    for base in ("BTT", "ETH", "SOL"):
        pd.read_csv(BINANCE_1M / f"{base}USDT.csv.gz", nrows=1500).to_csv(tmp_path / f"{base}USDT.csv", index=False)
    files = [iter_candle_file(tmp_path / f"{b}USDT.csv", 60, Rejects("file")) for b in ("BTT", "ETH", "SOL")]
    records = [universe_candle(c, "1m") for c in heapq.merge(*files, key=lambda c: c["timestamp_ms"])]
    rows, rejects, hurst = stream(records)
    batch = universe_features(frame_of(records), PARAMS)
    pd.testing.assert_frame_equal(as_frame(rows), batch, check_exact=True)
    assert len(batch) == 4500 and not rejects.counts and not hurst.counts
    eth = batch[batch.pair == "ETH/USDT"].reset_index(drop=True)
    assert math.isnan(eth.log_return[0]) and eth.volatility[:30].isna().all() and eth.volatility[30:].notna().all()
    assert eth.hurst[:128].isna().all() and eth.hurst[128:].between(0.0, 1.0).all()
    returns = np.log(eth.close / eth.close.shift()).to_numpy()
    assert eth.volatility.iloc[-1] == pytest.approx(np.std(returns[-30:], ddof=1), rel=1e-12)
    assert eth.hurst.iloc[-1] == hurst_dfa(eth.log_return.to_numpy()[-128:]).h


def test_short_gaps_are_unchanged_prices_and_long_gaps_restart_the_ticker():
    closes = random_closes(400)
    times = [T0 + i * MINUTE for i in range(400)]
    times[200:] = [t + 3 * MINUTE for t in times[200:]]  # 3 minutes missing: zero returns
    times[300:] = [t + 6 * MINUTE for t in times[300:]]  # 6 missing, more than max_gap (5): a restart
    records = candles("ETH/USDT", closes, times)
    rows, _, _ = stream(records)
    batch = universe_features(frame_of(records), PARAMS)
    pd.testing.assert_frame_equal(as_frame(rows), batch, check_exact=True)
    assert batch.log_return[200] == math.log(closes[200] / closes[199])
    window = np.concatenate((batch.log_return[173:200], [0.0, 0.0, 0.0], batch.log_return[200:201]))
    assert batch.volatility[200] == np.std(window[-30:], ddof=1)
    assert math.isnan(batch.log_return[300]) and batch.volatility[300:330].isna().all()
    assert batch.volatility[330:].notna().all()


def test_a_ticker_listed_later_starts_later_and_leaves_the_others_alone():
    early = candles("BTC/USDT", random_closes(300, seed=1))
    late = candles("KITE/USDT", random_closes(100, seed=2), [T0 + (200 + i) * MINUTE for i in range(100)])
    alone, _, _ = stream(early)
    rows, _, _ = stream(sorted(early + late, key=lambda r: r["window_end_ms"]))
    frame = as_frame(rows)
    pd.testing.assert_frame_equal(frame[frame.pair == "BTC/USDT"].reset_index(drop=True), as_frame(alone))
    kite = frame[frame.pair == "KITE/USDT"].reset_index(drop=True)
    assert kite[EVENT_TIMESTAMP][0] == pd.Timestamp(T0 + 200 * MINUTE, unit="ms", tz="UTC")
    assert math.isnan(kite.log_return[0]) and kite.volatility[:30].isna().all() and kite.volatility[30:].notna().all()
    assert kite.hurst.isna().all()


def test_a_constant_price_has_zero_volatility_and_an_undefined_counted_hurst():
    records = candles("USD1/USDT", [1.0] * 200)
    rows, rejects, hurst = stream(records)
    frame = as_frame(rows)
    assert (frame.log_return[1:] == 0.0).all() and (frame.volatility[30:] == 0.0).all()
    assert frame.hurst.isna().all() and frame.hurst_se.isna().all()
    assert hurst.counts == {UNDEFINED_HURST: 200 - 128} and not rejects.counts
    pd.testing.assert_frame_equal(frame, universe_features(frame_of(records), PARAMS), check_exact=True)


def test_bad_and_stale_candles_are_rejected_and_leave_the_state_alone():
    good = candles("ETH/USDT", random_closes(50))
    bad = [
        {**good[10], "close": 0.0},
        {**good[10], "close": float("nan")},
        {**good[10], "window_end_ms": "soon"},
        {**good[10], "interval": "3m"},
        good[5],  # replayed: not after the last candle
        good[10],  # the same candle again
    ]
    records = [*good[:11], *bad, *good[11:]]
    rows, rejects, _ = stream(records)
    clean, _, _ = stream(good)
    assert rows == clean
    assert rejects.counts == {
        "non_positive_or_nan": 2,
        "bad_timestamp": 1,
        "missing_pair_or_interval": 1,
        "stale_candle": 2,
    }
    step = compute_universe_features(SETTINGS, Rejects("test"), Rejects("hurst"))
    assert step({**good[0], "pair": "BTC/USDT"}, "ETH/USDT", 0, None, JsonState())["reason"] == "key_mismatch"
    marker = {"control": CONTROL_END, "pair": "ETH/USDT", "timestamp_ms": 1, "run_id": "r"}
    assert step(marker, "ETH/USDT", 0, None, JsonState()) == marker
