"""The LSTM through the real training path: Feast dataset, MLflow run, registry, gate, pyfunc, simulation.

Uses the MLflow/Feast fixtures of the training tests (tests/integration/conftest.py: its own server on
COINFLOW_IT_MLFLOW_PORT, a temporary feature repository with synthetic histories).
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from coinflow.contracts import CHALLENGER, PREDICTED_PRICE
from coinflow.settings import Settings
from tests.support.training_synthetic import PREDICTABLE
from training_pipeline.dataset import build_dataset
from training_pipeline.price.train import TrainingOptions, train_pair
from training_pipeline.simulation_run import simulate_run

pytestmark = pytest.mark.integration


def test_lstm_is_logged_registered_judged_served_and_simulated(training_settings: Settings, uri: str, tmp_path):
    settings = training_settings.override(
        deep_epochs=2,
        deep_hidden_size=8,
        deep_sequence_length=10,
        deep_device="cpu",
        deep_checkpoint_dir=str(tmp_path / "checkpoints"),
        deep_tensorboard_dir=tmp_path / "tensorboard",
    )
    result = train_pair(settings, PREDICTABLE, TrainingOptions.from_settings(settings, ("lstm",)), uri)
    (lstm,) = result.models
    assert lstm.model_type == "lstm" and lstm.version is not None
    assert lstm.promotion.startswith(("promoted", "refused"))
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_model_version_by_alias(result.name, CHALLENGER).version == lstm.version
    run = client.get_run(lstm.run_id)
    assert run.data.params["model_sequence_length"] == "10"
    assert len(client.get_metric_history(lstm.run_id, "epoch_val_loss")) == int(run.data.params["model_epochs_run"])
    assert (tmp_path / "checkpoints" / run.data.params["model_run_key"] / "last.pt").exists()

    dataset = build_dataset(settings, PREDICTABLE, "1m", 1)
    features = dataset.frame[list(dataset.features)].tail(10).reset_index(drop=True)
    served = mlflow.pyfunc.load_model(f"models:/{result.name}/{lstm.version}").predict(features)
    assert len(served) == 10 and np.isfinite(served[PREDICTED_PRICE]).all()

    report = simulate_run(settings, lstm.run_id, uri, threshold=0.0, passive=False)
    assert [o.name for o in report.outcomes] == ["lstm", "buy and hold", "no-op"]
    simulation = client.get_run(report.simulation_run_id)
    assert simulation.data.tags["mlflow.parentRunId"] == lstm.run_id
    assert "sim_sharpe" in simulation.data.metrics and "buy_and_hold_pnl" in simulation.data.metrics
    assert [a.path for a in client.list_artifacts(report.simulation_run_id, "plots")] == ["plots/equity_curve.png"]
