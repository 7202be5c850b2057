"""backfill-universe on real Binance 1-minute candles (four tickers cut short, one listed later, one with missing
minutes): the command runs the files through the streaming universe features on the real broker into Feast, and
the offline store's rows equal the batch reference."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pandas as pd
import pytest

from coinflow import parquet_writer
from coinflow.exchange_files import read_candle_folder
from coinflow.feature_store import feature_store
from feature_pipeline.transforms.universe_features import universe_features
from feature_pipeline.universe.dataflow import universe_params
from feature_repo.names import EVENT_TIMESTAMP, UNIVERSE_FEATURES, universe_view
from tests.support.feature_runs import env_for
from tests.support.paths import BINANCE_1M

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not BINANCE_1M.is_dir(), reason="the shared Binance candles are not beside the checkout"),
]


def cut_files(folder):
    """Four real tickers, 600 minutes each: SOL listed 200 minutes later, ETH missing 3 minutes and then 10."""
    for base in ("BTT", "DOGE", "ETH", "SOL"):
        raw = pd.read_csv(BINANCE_1M / f"{base}USDT.csv.gz", nrows=600)
        if base == "SOL":
            raw = raw.iloc[200:]
        if base == "ETH":
            raw = raw.drop(index=[*range(300, 303), *range(400, 410)])
        raw.to_csv(folder / f"{base}USDT.csv.gz", index=False)


def test_backfill_universe_writes_the_batch_reference_to_the_offline_store(settings, tmp_path):
    settings = settings.override(
        universe_candles_topic=f"universe-candles-{uuid.uuid4().hex[:8]}",
        universe_consumer_group=f"it-universe-{uuid.uuid4().hex[:8]}",
        universe_volatility_window=30,
        universe_hurst_window=128,
    )
    folder = tmp_path / "universe"
    folder.mkdir()
    cut_files(folder)
    result = subprocess.run(
        [sys.executable, "-m", "feature_pipeline", "backfill-universe", str(folder), "--interval", "1m"],
        env={**env_for(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "universe_1m" in result.stdout and "universe_hurst: nothing rejected" in result.stdout, result.stdout

    view = feature_store(settings).get_feature_view(universe_view("1m"))
    stored = parquet_writer.read_rows(parquet_writer.dataset_root(view.batch_source.path))
    stored = stored[["pair", EVENT_TIMESTAMP, *UNIVERSE_FEATURES]].sort_values(["pair", EVENT_TIMESTAMP])
    stored[EVENT_TIMESTAMP] = stored[EVENT_TIMESTAMP].astype("datetime64[ns, UTC]")
    expected = universe_features(read_candle_folder(folder, 60), universe_params(settings, "1m"))
    assert len(expected) == 600 + 600 + 587 + 400
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), expected, check_exact=True)
    eth = expected[expected.pair == "ETH/USDT"].reset_index(drop=True)
    assert eth.volatility.iloc[300:].notna().sum() < len(eth) - 300  # the 10-minute gap restarted the windows
