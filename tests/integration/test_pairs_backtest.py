"""The pairs backtest through the real offline store and MLflow: a universe with one cointegrated pair among random
walks in the universe_1m view -> `pairs-backtest` -> the walk-forward run in MLflow (per-pair table, folds,
equity), the last fold's configuration registered as pairs-1m, promoted only when it beats doing nothing after
costs and the champion over the same fold; `pairs-discover` logs what it tested."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from coinflow import parquet_writer
from coinflow.feature_store import feature_store
from coinflow.settings import Settings
from feature_pipeline.sinks.feast_sink import arrow_schema
from feature_repo.names import CREATED_TIMESTAMP, ENTITY, EVENT_TIMESTAMP, UNIVERSE_FEATURES, universe_view
from training_pipeline.__main__ import app
from training_pipeline.pairs.run import pairs_backtest

pytestmark = pytest.mark.integration

N = 6000


def universe_rows(seed: int = 0) -> pd.DataFrame:
    """Y/USDT and X/USDT cointegrated (Y = X times a mean-reverting factor), four independent random walks."""
    rng = np.random.default_rng(seed)
    log_x = np.log(100) + np.cumsum(rng.normal(0, 0.002, N))
    spread = np.zeros(N)
    for t in range(1, N):
        spread[t] = 0.97 * spread[t - 1] + rng.normal(0, 0.004)
    prices = {"X/USDT": np.exp(log_x), "Y/USDT": np.exp(log_x + spread + 0.2)}
    for i, name in enumerate(("A/USDT", "B/USDT", "C/USDT", "D/USDT")):
        prices[name] = np.exp(np.log(20 + i) + np.cumsum(rng.normal(0, 0.002, N)))
    times = pd.date_range("2024-03-01", periods=N, freq="1min", tz="UTC")
    frames = []
    for name, close in prices.items():
        frame = pd.DataFrame({ENTITY: name, EVENT_TIMESTAMP: times, "close": np.round(close, 4)})
        for feature in UNIVERSE_FEATURES[1:]:
            frame[feature] = np.nan
        frames.append(frame.assign(**{CREATED_TIMESTAMP: times}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def universe(training_settings: Settings, uri: str) -> Settings:
    settings = training_settings.override(
        mlflow_tracking_uri=uri, pairs_folds=2, pairs_entry_grid="1.5,2.5", pairs_min_history_bars=500
    )
    view = feature_store(settings).get_feature_view(universe_view("1m"))
    schema = arrow_schema(view)
    parquet_writer.write_rows(
        parquet_writer.dataset_root(view.batch_source.path), universe_rows()[schema.names], schema
    )
    return settings


def test_the_walk_forward_is_logged_and_only_a_configuration_that_makes_money_is_promoted(
    universe: Settings, uri: str
) -> None:
    free = universe.override(pairs_taker_fee="0", pairs_slippage="0")
    result = pairs_backtest(free, uri, "1m")
    assert all(any(pid == "Y-USDT__X-USDT" or pid == "X-USDT__Y-USDT" for pid, _, _ in f.pairs) for f in result.folds)
    traded = [f for f in result.folds if f.run is not None]
    assert traded and result.portfolio["round_trips"] > 0
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.data.params["interval"] == "1m" and "equal_weight_pnl" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"pairs.csv", "folds.csv", "equity.csv"} <= artifacts
    last_pnl = run.data.metrics["last_fold_pnl"]
    assert result.version == "1" and result.promoted == (last_pnl > 0), result.reason
    assert result.promoted, f"a free, strongly reverting pair should make money out of sample: {result.reason}"
    assert client.get_model_version_by_alias("pairs-1m", "champion").version == "1"

    # the same configuration with costs that eat the spread: registered, never promoted over the champion
    costly = universe.override(pairs_taker_fee="0.01", pairs_slippage="0.005")
    again = pairs_backtest(costly, uri, "1m")
    assert not again.promoted
    assert client.get_model_version_by_alias("pairs-1m", "champion").version == "1"
    if again.version is not None:
        tags = client.get_model_version("pairs-1m", again.version).tags
        assert tags["promotion"].startswith("refused")


def test_the_commands_print_their_tables_and_refuse_a_bad_interval(universe: Settings) -> None:
    env = {**universe.as_environment(), "COLUMNS": "200"}
    found = CliRunner().invoke(app, ["pairs-discover", "--interval", "1m"], env=env)
    assert found.exit_code == 0, found.output
    assert "Y-USDT__X-USDT" in found.output or "X-USDT__Y-USDT" in found.output
    bad = CliRunner().invoke(app, ["pairs-backtest", "--interval", "3m"], env=env)
    assert bad.exit_code == 2 and "1m or 5m" in bad.output
