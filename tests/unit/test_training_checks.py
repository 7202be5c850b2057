"""Data checks fail with messages naming the pair and the time range at fault."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from feature_repo.names import EVENT_TIMESTAMP
from tests.support.training_synthetic import FEATURES, ar1_returns, candles_from_returns, features_of
from training_pipeline.checks import DataCheckError, check_candles, check_features, check_history, drop_warmup

MINUTE = timedelta(minutes=1)


def test_complete_candles_pass():
    check_candles(candles_from_returns(ar1_returns(100, 0.0)), "BTC/USD", MINUTE, max_missing_fraction=0.0)


def test_no_candles_is_an_error_naming_the_pair():
    empty = candles_from_returns(ar1_returns(3, 0.0)).iloc[:0]
    with pytest.raises(DataCheckError, match="BTC/USD: no candles"):
        check_candles(empty, "BTC/USD", MINUTE, 0.5)


def test_duplicated_close_times_name_the_range():
    candles = candles_from_returns(ar1_returns(100, 0.0))
    candles = pd.concat([candles, candles.iloc[[40, 41]]], ignore_index=True)
    with pytest.raises(DataCheckError) as error:
        check_candles(candles, "ETH/USD", MINUTE, 0.5)
    assert (
        "ETH/USD: 2 candle close times occur more than once between 2024-01-01 00:41 UTC and 2024-01-01 00:42 UTC"
        in str(error.value)
    )


def test_too_many_missing_candles_name_the_longest_gap():
    candles = candles_from_returns(ar1_returns(100, 0.0))
    sparse = candles[(candles.index < 20) | (candles.index >= 90)]
    check_candles(sparse, "BTC/USD", MINUTE, max_missing_fraction=0.75)
    with pytest.raises(DataCheckError) as error:
        check_candles(sparse, "BTC/USD", MINUTE, max_missing_fraction=0.5)
    message = str(error.value)
    assert (
        "BTC/USD: 70% of the 0:01:00 candles between 2024-01-01 00:01 UTC and 2024-01-01 01:40 UTC are missing"
        in message
    )
    assert "2024-01-01 00:20 UTC to 2024-01-01 01:31 UTC" in message


def test_warmup_rows_are_dropped_but_later_gaps_are_errors():
    candles = candles_from_returns(ar1_returns(200, 0.0))
    features = features_of(candles)
    kept, dropped = drop_warmup(features, FEATURES)
    assert dropped == 33  # MACD's signal needs 34 candles
    check_features(kept, "BTC/USD", FEATURES)

    kept.loc[100:104, "rsi_14"] = np.nan
    kept.loc[102, "macd"] = np.inf
    with pytest.raises(DataCheckError) as error:
        check_features(kept, "BTC/USD", FEATURES)
    times = kept[EVENT_TIMESTAMP]
    assert f"BTC/USD: 5 rows between {times[100]:%Y-%m-%d %H:%M} UTC and {times[104]:%Y-%m-%d %H:%M} UTC" in str(
        error.value
    )
    assert "rsi_14, macd" in str(error.value)


def test_nonpositive_prices_are_errors():
    features = drop_warmup(features_of(candles_from_returns(ar1_returns(100, 0.0))), FEATURES)[0]
    features.loc[10, "close"] = 0.0
    with pytest.raises(DataCheckError, match="close price <= 0"):
        check_features(features, "BTC/USD", FEATURES)


def test_too_little_history_names_the_range_and_the_setting():
    frame = features_of(candles_from_returns(ar1_returns(50, 0.0)))
    check_history(frame, "BTC/USD", min_rows=50)
    with pytest.raises(
        DataCheckError,
        match=r"BTC/USD: only 50 labelled rows between 2024-01-01 00:01 UTC and .*COINFLOW_MIN_TRAINING_ROWS",
    ):
        check_history(frame, "BTC/USD", min_rows=51)
