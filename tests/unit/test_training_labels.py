"""Labels and dataset assembly: the target is the close exactly H ahead, and nothing of the future leaks into the past."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from feature_repo.names import EVENT_TIMESTAMP
from tests.support.training_synthetic import FEATURES, ar1_returns, candles_from_returns, features_of
from training_pipeline.dataset import assemble, horizon_delta
from training_pipeline.labels import (
    LABEL_TIMESTAMP,
    TARGET_CLOSE,
    TARGET_LOG_RETURN,
    make_labels,
    recent_mean_close,
)


def test_label_is_the_close_exactly_horizon_ahead_and_rows_without_one_are_dropped():
    candles = candles_from_returns(ar1_returns(20, 0.0))
    # Minutes without trades have no candle: drop the candles closing at minutes 6 and 7.
    candles = candles[~candles[EVENT_TIMESTAMP].dt.minute.isin([6, 7])].reset_index(drop=True)
    labels = make_labels(candles, timedelta(minutes=2))
    by_time = candles.set_index(EVENT_TIMESTAMP)["close"]
    for row in labels.itertuples():
        assert row.label_timestamp - row.event_timestamp == pd.Timedelta(minutes=2)
        assert row.target_close == by_time[row.label_timestamp]
        assert row.target_log_return == pytest.approx(np.log(row.target_close / by_time[row.event_timestamp]))
    minutes = set(labels[EVENT_TIMESTAMP].dt.minute)
    # 4 and 5 would need 6 and 7; the last two minutes have no future at all; 6 and 7 are not candles.
    assert minutes == set(range(1, 21)) - {4, 5, 6, 7, 19, 20}


def test_recent_mean_is_the_mean_of_the_last_n_closes_including_now():
    candles = candles_from_returns(ar1_returns(30, 0.0))
    means = recent_mean_close(candles, 10)
    assert means["close_mean_10"].iloc[:9].isna().all()
    assert means["close_mean_10"].iloc[15] == pytest.approx(candles["close"].iloc[6:16].mean())


def test_changing_the_future_changes_no_feature_or_label_of_the_past():
    candles = candles_from_returns(ar1_returns(400, 0.3, seed=3))
    horizon = timedelta(minutes=5)
    cutoff = candles[EVENT_TIMESTAMP].iloc[250]
    changed = candles.copy()
    future = changed[EVENT_TIMESTAMP] > cutoff
    changed.loc[future, ["open", "high", "low", "close", "vwap"]] *= 1.07
    changed.loc[future, "volume"] *= 3
    changed = changed[~(future & (changed.index % 7 == 0))]  # and some future candles vanish

    before = assemble(features_of(candles), candles, horizon)
    after = assemble(features_of(changed), changed, horizon)

    known = before[before[LABEL_TIMESTAMP] <= cutoff]
    assert len(known) > 200
    pd.testing.assert_frame_equal(known, after[after[LABEL_TIMESTAMP] <= cutoff])
    # Rows before the cutoff whose label lies after it keep their features; only the label moves.
    pending_before = before[(before[EVENT_TIMESTAMP] <= cutoff) & (before[LABEL_TIMESTAMP] > cutoff)]
    pending_after = after[(after[EVENT_TIMESTAMP] <= cutoff) & (after[LABEL_TIMESTAMP] > cutoff)]
    common = pending_before.merge(pending_after, on=EVENT_TIMESTAMP, suffixes=("_b", "_a"))
    assert len(common) >= 3
    for name in FEATURES:
        np.testing.assert_array_equal(common[f"{name}_b"], common[f"{name}_a"])
    assert (common[f"{TARGET_CLOSE}_b"] != common[f"{TARGET_CLOSE}_a"]).all()


def test_assemble_orders_by_time_and_keeps_targets_out_of_the_features():
    candles = candles_from_returns(ar1_returns(100, 0.0))
    shuffled = features_of(candles).sample(frac=1.0, random_state=0)
    frame = assemble(shuffled, candles, timedelta(minutes=1))
    assert frame[EVENT_TIMESTAMP].is_monotonic_increasing
    assert len(frame) == 99
    assert not {TARGET_CLOSE, TARGET_LOG_RETURN, LABEL_TIMESTAMP} & set(FEATURES)


def test_horizon_must_be_whole_candles():
    assert horizon_delta(10, "5m") == timedelta(minutes=10)
    with pytest.raises(ValueError, match="multiple of the candle interval"):
        horizon_delta(3, "5m")
