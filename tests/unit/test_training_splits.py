"""Splits are by time, never shuffled, and purge training rows whose label reaches into the next period."""

import numpy as np
import pandas as pd
import pytest

from training_pipeline.splits import time_split, walk_forward


def _times(n: int, horizon_minutes: int = 1, seed: int = 0) -> tuple[pd.Series, pd.Series]:
    """Irregular one-minute close times (some minutes missing) and their label times."""
    minutes = np.sort(np.random.default_rng(seed).choice(np.arange(3 * n), size=n, replace=False))
    times = pd.Series(pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(minutes, unit="min"))
    return times, times + pd.Timedelta(minutes=horizon_minutes)


@pytest.mark.parametrize("horizon", [1, 15])
def test_train_validation_test_are_consecutive_in_time_and_purged(horizon):
    times, labels = _times(1000, horizon)
    split = time_split(times, labels, validation_fraction=0.2, test_fraction=0.1)
    assert len(split.test) == 100
    assert split.test[-1] == 999
    for earlier, later in ((split.train, split.validation), (split.validation, split.test)):
        assert times.iloc[earlier].max() < times.iloc[later].min()
        # Every label of the earlier period is known when the later one starts.
        assert labels.iloc[earlier].max() <= times.iloc[later[0]]
    assert np.all(np.diff(np.concatenate([split.train, split.validation, split.test])) > 0)
    purged = 1000 - len(split.train) - len(split.validation) - len(split.test)
    assert (purged > 0) == (horizon > 1)


def test_walk_forward_windows_expand_and_each_validates_on_later_rows():
    times, labels = _times(900, horizon_minutes=5)
    folds = walk_forward(times, labels, folds=3)
    assert len(folds) == 3
    starts = [train[0] for train, _ in folds]
    sizes = [len(train) for train, _ in folds]
    assert starts == [0, 0, 0] and sizes == sorted(sizes) and sizes[0] < sizes[-1]
    for train, block in folds:
        assert labels.iloc[train].max() <= times.iloc[block[0]]
        assert train.max() < block.min()
    assert folds[-1][1][-1] == 899


def test_unordered_rows_are_refused():
    times, labels = _times(100)
    with pytest.raises(ValueError, match="ordered"):
        time_split(times.iloc[::-1].reset_index(drop=True), labels, 0.1, 0.1)
    with pytest.raises(ValueError, match="too few"):
        time_split(times.iloc[:3], labels.iloc[:3], 0.4, 0.4)
