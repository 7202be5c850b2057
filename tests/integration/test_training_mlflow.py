"""Training against a real MLflow tracking server, a real Feast repository and Redis.

The fixtures `training_settings` and `uri` (tests/integration/conftest.py) give
each module the project's own MLflow server (`ensure_mlflow`) on its own port
(COINFLOW_IT_MLFLOW_PORT, default 15123) with a temporary SQLite database and
artifact store, and a temporary feature repository holding synthetic offline
histories: BTC/USD with a predictable component, ETH/USD a random walk.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from coinflow import services
from coinflow.contracts import CHALLENGER, CHAMPION, PREDICTED_PRICE, registered_model_name
from coinflow.settings import Settings
from tests.support.training_synthetic import FEATURES, PREDICTABLE, RANDOM_WALK
from training_pipeline.__main__ import app
from training_pipeline.checks import DataCheckError
from training_pipeline.dataset import build_dataset
from training_pipeline.metrics import price_mae
from training_pipeline.price.train import TrainingOptions, train_pair

pytestmark = pytest.mark.integration

RUN_CONTRACT_METRICS = ("test_mae", "test_rmse", "test_directional_accuracy", "baseline_test_mae")
RUN_CONTRACT_TAGS = ("pair", "horizon_minutes", "model_type", "feature_service")


def _options(training_settings: Settings, models: tuple[str, ...]) -> TrainingOptions:
    return TrainingOptions.from_settings(training_settings, models, trials=2)


def test_ensure_mlflow_reuses_the_running_server(training_settings: Settings, uri: str):
    record = (training_settings.services.run_dir / "mlflow.json").read_text()
    assert (
        services.ensure_mlflow(training_settings) == uri == f"http://127.0.0.1:{training_settings.services.mlflow_port}"
    )
    assert (training_settings.services.run_dir / "mlflow.json").read_text() == record
    assert "started by coinflow" in services.services_status(training_settings)["mlflow"]


def test_train_register_promote_and_serve_the_champion_by_alias(training_settings: Settings, uri: str):
    result = train_pair(
        training_settings, PREDICTABLE, _options(training_settings, ("baseline", "lasso", "xgboost")), uri
    )
    name = registered_model_name(PREDICTABLE, 1)
    assert name == result.name == "price-BTCUSD-1m"
    client = MlflowClient(uri, registry_uri=uri)
    learned = [m for m in result.models if m.version]
    assert [m.model_type for m in result.models] == ["last_price", "mean_last_n", "lasso", "xgboost"]
    assert [m.model_type for m in learned] == ["lasso", "xgboost"]
    assert client.get_model_version_by_alias(name, CHALLENGER).version == learned[-1].version

    # Both beat the last price on this series; the champion is the last one promoted.
    assert learned[0].promoted and learned[0].promotion.startswith("promoted")
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.version == [m for m in learned if m.promoted][-1].version == result.champion

    # Every run carries the contract, and the same baseline on the same test period.
    baseline_maes = set()
    for m in result.models:
        run = client.get_run(m.run_id)
        assert set(RUN_CONTRACT_METRICS) <= set(run.data.metrics), m.model_type
        assert set(RUN_CONTRACT_TAGS) <= set(run.data.tags), m.model_type
        assert run.data.tags["model_type"] == m.model_type
        assert run.data.tags["feature_service"] == "price_regression_1m"
        assert run.data.tags["pair"] == PREDICTABLE and run.data.tags["horizon_minutes"] == "1"
        assert len(run.data.tags["dataset_hash"]) == 64 and run.data.params["test_end"] > run.data.params["test_start"]
        assert run.data.tags["mlflow.source.git.commit"]
        baseline_maes.add(run.data.metrics["baseline_test_mae"])
        plots = {f.path for f in client.list_artifacts(m.run_id, "plots")}
        assert {"plots/prediction_vs_actual.png", "plots/residuals.png"} <= plots
        if m.version:
            assert "plots/feature_importance.png" in plots
            assert run.data.tags["promotion"] == m.promotion
    assert len(baseline_maes) == 1

    # The champion, loaded by alias as a pyfunc from raw features, reproduces its logged test MAE.
    served = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    assert served.metadata.get_input_schema().input_names() == list(FEATURES)
    test = result.dataset.frame.iloc[result.split.test]
    predicted = served.predict(test[list(FEATURES)].reset_index(drop=True))
    assert set(predicted.columns) == {PREDICTED_PRICE, "predicted_log_return"}
    champion_run = client.get_run(champion.run_id)
    assert price_mae(test, predicted[PREDICTED_PRICE].to_numpy()) == pytest.approx(
        champion_run.data.metrics["test_mae"]
    )
    assert champion_run.data.metrics["test_mae"] < 0.95 * champion_run.data.metrics["baseline_test_mae"]


def test_retraining_the_same_model_moves_the_challenger_but_not_the_champion(training_settings: Settings, uri: str):
    name = registered_model_name(PREDICTABLE, 1)
    client = MlflowClient(uri, registry_uri=uri)
    before = client.get_model_version_by_alias(name, CHAMPION).version
    result = train_pair(training_settings, PREDICTABLE, _options(training_settings, ("lasso",)), uri)
    (again,) = result.models
    assert client.get_model_version_by_alias(name, CHALLENGER).version == again.version
    assert client.get_model_version_by_alias(name, CHAMPION).version == before
    assert not again.promoted and "champion v" in again.promotion


def test_on_a_random_walk_nothing_is_promoted_and_the_runs_say_why(training_settings: Settings, uri: str):
    result = train_pair(training_settings, RANDOM_WALK, _options(training_settings, ("lasso", "xgboost")), uri)
    assert result.champion is None
    client = MlflowClient(uri, registry_uri=uri)
    for m in result.models:
        assert not m.promoted
        reason = client.get_run(m.run_id).data.tags["promotion"]
        assert reason.startswith("refused") and "last-price baseline" in reason
    assert (
        client.get_model_version_by_alias(registered_model_name(RANDOM_WALK, 1), CHALLENGER).version
        == result.models[-1].version
    )


def test_a_pair_without_history_is_a_clear_error(training_settings: Settings, uri: str):
    with pytest.raises(DataCheckError, match="SOL/USD: no candles"):
        train_pair(training_settings, "SOL/USD", _options(training_settings, ("lasso",)), uri)


def test_the_cli_trains_and_prints_the_table(training_settings: Settings, uri: str, monkeypatch):
    for field, value in {
        "COINFLOW_RUN_DIR": training_settings.services.run_dir,
        "REDIS_URL": training_settings.services.redis_url,
        "COINFLOW_FEATURE_REPO_PATH": training_settings.feast.repo_path,
        "COINFLOW_FEAST_PROJECT": training_settings.feast.project,
        "COINFLOW_MLFLOW_PORT": training_settings.services.mlflow_port,
        "COINFLOW_MIN_TRAINING_ROWS": training_settings.training.min_training_rows,
    }.items():
        monkeypatch.setenv(field, str(value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outcome = CliRunner().invoke(app, ["train", "--pair", f"{PREDICTABLE},SOL/USD", "--models", "baseline,lasso"])
    assert outcome.exit_code == 1, outcome.output  # SOL/USD has no history
    assert "price-BTCUSD-1m" in outcome.output and "last_price" in outcome.output and "lasso" in outcome.output
    assert "SOL/USD: no candles" in outcome.output
    bad = CliRunner().invoke(app, ["train", "--models", "lasso,prophet"])
    assert bad.exit_code == 2 and "unknown models" in bad.output


def test_the_served_model_needs_the_raw_feature_columns(training_settings: Settings, uri: str):
    served = mlflow.pyfunc.load_model(f"models:/{registered_model_name(PREDICTABLE, 1)}@{CHALLENGER}")
    frame = build_dataset(training_settings, PREDICTABLE, "1m", 1).frame
    with pytest.raises(Exception, match="close"):
        served.predict(frame[[f for f in FEATURES if f != "close"]].head(3))
    row = frame[list(FEATURES)].tail(1).reset_index(drop=True)
    assert np.isfinite(served.predict(row)[PREDICTED_PRICE]).all()
