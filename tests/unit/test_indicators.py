"""Streaming and batch indicators against TA-Lib and each other, on real Kraken candles."""

import json

import numpy as np
import pandas as pd
import pytest
import talib

from feature_pipeline.transforms.indicators import (
    INDICATOR_NAMES,
    compute_indicators,
    new_indicator_state,
    update_indicators,
)
from tests.support.paths import DATA

DATA_DIR = DATA / "kraken"
DATASETS = ("ohlcvt_XBTUSDC_1m_2023Q1.csv", "ohlcvt_XBTUSD_5m_2023Q1.csv")
CSV_COLUMNS = ("unix", "open", "high", "low", "close", "volume", "trades")
OHLCV = ["open", "high", "low", "close", "volume"]
ROWS = 4000
WARMUP = 300


def load_candles(name: str, rows: int = ROWS) -> pd.DataFrame:
    """The first `rows` candles of a Kraken OHLCVT export, indexed by unix time."""
    frame = pd.read_csv(DATA_DIR / name, header=None, names=CSV_COLUMNS, nrows=rows)
    return frame.set_index("unix")[OHLCV]


def stream(candles: pd.DataFrame, state: dict | None = None) -> pd.DataFrame:
    """Fold update_indicators over the candles; None becomes NaN."""
    state = new_indicator_state() if state is None else state
    rows = [update_indicators(state, candle) for candle in candles.to_dict("records")]
    return pd.DataFrame(rows, index=candles.index, columns=list(INDICATOR_NAMES), dtype=float)


def talib_reference(candles: pd.DataFrame) -> dict[str, np.ndarray]:
    """TA-Lib's batch values for every indicator it has."""
    high, low, close, volume = (candles[c].to_numpy(dtype=float) for c in ("high", "low", "close", "volume"))
    macd, macd_signal, macd_hist = talib.MACD(close, 12, 26, 9)
    bb_upper, bb_middle, bb_lower = talib.BBANDS(close, 20, 2, 2, matype=0)
    return {
        "sma_14": talib.SMA(close, 14),
        "ema_14": talib.EMA(close, 14),
        "rsi_14": talib.RSI(close, 14),
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd_hist,
        "bb_upper": bb_upper,
        "bb_middle": bb_middle,
        "bb_lower": bb_lower,
        "atr_14": talib.ATR(high, low, close, 14),
        "obv": talib.OBV(close, volume),
    }


def assert_matches(actual: pd.DataFrame, expected: dict[str, np.ndarray], rtol: float, start: int = 0) -> None:
    """Each expected column equals actual's from row `start` on, NaN where and only where expected has NaN."""
    for name, values in expected.items():
        np.testing.assert_allclose(
            actual[name].to_numpy()[start:], values[start:], rtol=rtol, atol=0, equal_nan=True, err_msg=name
        )


@pytest.fixture(scope="module", params=DATASETS)
def kraken(request) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(candles, streaming output, batch output) for one dataset."""
    candles = load_candles(request.param)
    return candles, stream(candles), compute_indicators(candles)


def test_talib_is_fully_defined_after_warmup(kraken):
    candles, _, _ = kraken
    for name, values in talib_reference(candles).items():
        assert not np.isnan(values[WARMUP:]).any(), name


def test_streaming_matches_talib_after_warmup(kraken):
    candles, streamed, _ = kraken
    assert_matches(streamed, talib_reference(candles), rtol=1e-6, start=WARMUP)


def test_batch_matches_talib_after_warmup(kraken):
    candles, _, batch = kraken
    assert_matches(batch, talib_reference(candles), rtol=1e-6, start=WARMUP)


def test_warmup_rows_and_seeds_match_talib(kraken):
    """Defined on exactly TA-Lib's rows, with TA-Lib's seeds (so equal from the first defined row)."""
    candles, streamed, batch = kraken
    reference = talib_reference(candles)
    assert_matches(streamed, reference, rtol=1e-9)
    assert_matches(batch, reference, rtol=1e-9)


def test_returns_match_independent_computation(kraken):
    candles, streamed, batch = kraken
    log_return = np.log(candles["close"] / candles["close"].shift(1))
    expected = {
        "log_return": log_return.to_numpy(),
        "realized_vol_30": np.sqrt((log_return**2).rolling(30).sum()).to_numpy(),
    }
    assert np.isnan(expected["realized_vol_30"][:30]).all()
    assert not np.isnan(expected["realized_vol_30"][30:]).any()
    assert_matches(streamed, expected, rtol=1e-9)
    assert_matches(batch, expected, rtol=1e-9)


def test_batch_equals_streaming_at_every_row(kraken):
    candles, streamed, batch = kraken
    assert list(batch.columns) == list(INDICATOR_NAMES)
    assert batch.index.equals(candles.index)
    assert_matches(batch, {name: streamed[name].to_numpy() for name in INDICATOR_NAMES}, rtol=1e-9)


def test_update_returns_every_indicator_in_order():
    state = new_indicator_state()
    first = update_indicators(state, {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0})
    assert list(first) == list(INDICATOR_NAMES)
    assert first["obv"] == 3.0
    assert all(first[name] is None for name in INDICATOR_NAMES if name != "obv")


def test_state_survives_json_round_trip_mid_stream():
    candles = load_candles(DATASETS[0], rows=1500)
    uninterrupted = stream(candles)

    state = new_indicator_state()
    before = stream(candles.iloc[:500], state)
    restored = json.loads(json.dumps(state, allow_nan=False))
    assert restored == state
    after = stream(candles.iloc[500:], restored)

    pd.testing.assert_frame_equal(pd.concat([before, after]), uninterrupted, check_exact=True)


def test_state_size_stays_bounded():
    candles = load_candles(DATASETS[1], rows=3000).to_dict("records")
    state = new_indicator_state()
    sizes = {}
    for i, candle in enumerate(candles, 1):
        update_indicators(state, candle)
        if i in (1000, 3000):
            sizes[i] = len(json.dumps(state, allow_nan=False))
    assert 0.8 < sizes[3000] / sizes[1000] < 1.25, sizes
    assert sizes[3000] < 4000, sizes


def synthetic(close: list[float], spread: float = 1.0, volume: list[float] | None = None) -> pd.DataFrame:
    """Candles with the given closes, high/low `spread` around the close."""
    close_array = np.asarray(close, dtype=float)
    return pd.DataFrame(
        {
            "open": close_array,
            "high": close_array + spread,
            "low": close_array - spread,
            "close": close_array,
            "volume": np.ones(len(close_array)) if volume is None else np.asarray(volume, dtype=float),
        }
    )


@pytest.mark.parametrize("step, expected_rsi", [(1.0, 100.0), (-1.0, 0.0)])
def test_rsi_is_extreme_on_a_monotonic_series(step, expected_rsi):
    candles = synthetic([1000.0 + step * i for i in range(60)])
    for output in (stream(candles), compute_indicators(candles)):
        assert output["rsi_14"].isna().sum() == 14
        assert (output["rsi_14"].iloc[14:] == expected_rsi).all()


def test_obv_adds_on_up_subtracts_on_down_and_holds_on_unchanged_close():
    candles = synthetic([10.0, 11.0, 11.0, 10.0, 10.0, 12.0], volume=[5.0, 2.0, 7.0, 3.0, 4.0, 1.0])
    expected = [5.0, 7.0, 7.0, 4.0, 4.0, 5.0]
    assert stream(candles)["obv"].tolist() == expected
    assert compute_indicators(candles)["obv"].tolist() == expected


def test_atr_uses_the_gap_from_the_previous_close():
    """Closes alternate 100/110 with a high-low range of 2, so every true range is the gap: 11."""
    candles = synthetic([100.0 if i % 2 == 0 else 110.0 for i in range(40)], spread=1.0)
    for output in (stream(candles), compute_indicators(candles)):
        assert output["atr_14"].isna().sum() == 14
        np.testing.assert_allclose(output["atr_14"].iloc[14:], 11.0, rtol=1e-12)


def test_flat_series_has_no_spread_momentum_or_volatility():
    candles = synthetic([20000.0] * 60)
    for output in (stream(candles), compute_indicators(candles)):
        tail = output.iloc[40:]
        assert (tail["bb_upper"] == tail["bb_middle"]).all()
        assert (tail["bb_lower"] == tail["bb_middle"]).all()
        assert (tail[["macd", "macd_signal", "macd_hist", "log_return", "realized_vol_30"]] == 0.0).all().all()
        assert (tail["rsi_14"] == 0.0).all()
        assert (tail["atr_14"] == 2.0).all()


def test_compute_indicators_on_no_candles():
    result = compute_indicators(pd.DataFrame(columns=OHLCV, dtype=float))
    assert list(result.columns) == list(INDICATOR_NAMES)
    assert result.empty
