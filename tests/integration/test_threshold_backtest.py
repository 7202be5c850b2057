"""The threshold strategy traded on paper through the real path: candles and indicators in the offline store -> a
price model trained, logged and registered in MLflow -> `python -m inference_pipeline backtest --strategy
threshold` over its test period, candle by candle on the step venue -> the session in MLflow and the account in
the trading database. The training pipeline's simulator, given the same decisions, gets the same fills and the
same equity to the last digit: one fill model and one ledger, not two."""

from __future__ import annotations

from decimal import Decimal

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from coinflow.contracts import PREDICTED_RETURN, registered_model_name
from coinflow.feature_store import feature_store, read_entity_rows, service_rows
from coinflow.settings import Settings
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, ohlcv_view, regression_service
from inference_pipeline.__main__ import app
from inference_pipeline.execution.runs import backtest_threshold
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.tracking import experiment_name
from tests.integration.conftest import write_history
from training_pipeline.price.train import TrainingOptions, train_pair
from training_pipeline.simulation import Action, Costs, Market, simulate

pytestmark = pytest.mark.integration

PAIR = "LTC/USD"
HORIZON = 1
TAKER, MAKER = "0.0002", "0.0001"  # low fees, so that the model's predictions clear the hurdle and it trades


@pytest.fixture(scope="module")
def trained(training_settings: Settings, uri: str) -> Settings:
    """A predictable history of PAIR with prices on a cent grid, and an XGBoost price model of it (version 1)."""
    settings = training_settings.override(
        trading_kraken_taker_fee=TAKER, trading_kraken_maker_fee=MAKER, mlflow_tracking_uri=uri
    )
    write_history(settings, PAIR, phi=0.5, n=3000, seed=3, decimals=2)
    result = train_pair(settings, PAIR, TrainingOptions.from_settings(settings, ("xgboost",), trials=2), uri)
    assert result.horizon_minutes == HORIZON
    return settings


def model_params(uri: str) -> dict[str, str]:
    client = MlflowClient(uri)
    return client.get_run(client.get_model_version(registered_model_name(PAIR, HORIZON), "1").run_id).data.params


def test_the_backtest_equals_the_simulator_on_the_same_decisions(trained: Settings, uri: str, tmp_path) -> None:
    run = backtest_threshold(trained, uri, PAIR, HORIZON, version=1, db_url=f"sqlite:///{tmp_path / 'bt.db'}")
    log = run.result.log
    assert not log.skipped and not log.refused and not run.market_rejects.counts
    params = model_params(uri)
    assert (run.start, run.end) == (pd.Timestamp(params["test_start"]), pd.Timestamp(params["test_end"]))
    fills = sorted((f for f in TradingStore(connect(run.db_url)).load().fills), key=lambda f: f.exchange_ms)

    # the simulator, on the same candles and the decisions the strategy's rule makes of the same predictions
    store = feature_store(trained)
    candles = read_entity_rows(store, ohlcv_view("1m"), ENTITY, PAIR, ["low", "high", "close"])
    rows, _ = service_rows(store, candles[[ENTITY, EVENT_TIMESTAMP]], regression_service("1m"))
    period = (candles[EVENT_TIMESTAMP] >= run.start) & (candles[EVENT_TIMESTAMP] <= run.end)
    features = params["features"].split(",")
    loaded = mlflow.pyfunc.load_model(f"models:/{registered_model_name(PAIR, HORIZON)}/1")
    complete = rows.dropna(subset=features).reset_index(drop=True)
    predicted = pd.Series(
        loaded.predict(complete[features])[PREDICTED_RETURN].to_numpy(), index=complete[EVENT_TIMESTAMP]
    )
    predicted = predicted.reindex(candles[EVENT_TIMESTAMP][period]).to_numpy()
    hurdle = trained.trading.threshold + 2 * np.log1p(float(TAKER))
    actions = np.full(len(predicted), Action.NOOP, dtype=np.int64)
    actions[predicted > hurdle] = Action.FORCE_BUY
    actions[predicted < -trained.trading.threshold] = Action.FORCE_SELL
    market = Market.from_candles(candles[period].reset_index(drop=True), tick=0.01)
    costs = Costs(taker_fee=float(TAKER), maker_fee=float(MAKER), touch_fill=trained.simulation.touch_fill)
    simulated = simulate(market, actions, costs, float(trained.trading.initial_quote))

    assert {f.side for f in fills} == {"buy", "sell"} and all(f.liquidity == "taker" for f in fills)
    assert simulated.fills == len(fills) > 0
    assert simulated.fees == float(sum((f.fee for f in fills), Decimal(0)))
    np.testing.assert_array_equal(simulated.equity, [float(p.equity) for p in log.equity])
    assert run.result.metrics["pnl"] == pytest.approx(simulated.pnl)


def test_the_backtest_command_logs_the_session_and_names_what_is_missing(trained: Settings, uri: str, tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**trained.as_environment(), "COLUMNS": "200"}
    args = ["backtest", "--strategy", "threshold", "--pair", PAIR, "--horizon", str(HORIZON), "--model-version", "1"]
    done = CliRunner().invoke(app, [*args, "--db", db], env=env)
    assert done.exit_code == 0, done.output
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment_name(PAIR)).experiment_id])
    (run,) = [r for r in runs if r.info.run_id in done.output]
    assert (run.data.params["strategy"], run.data.params["pair"], run.data.params["model_version"]) == (
        "threshold",
        PAIR,
        "1",
    )
    assert run.data.metrics["orders"] > 0 and "buy_and_hold_pnl" in run.data.metrics

    missing = CliRunner().invoke(app, ["backtest", "--strategy", "threshold", "--pair", "SOL/USD"], env=env)
    assert missing.exit_code == 1 and "no alias champion of the registered model price-SOLUSD-1m" in missing.output
    unnamed = CliRunner().invoke(app, ["backtest", "--strategy", "threshold"], env=env)
    assert unnamed.exit_code == 2 and "--strategy threshold needs --pair" in unnamed.output
