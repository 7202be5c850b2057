"""The order-book action model through the real path: book rows written by the feature pipeline's sink, the
dataset read point in time through Feast, training, MLflow run, registry, gate, pyfunc and the CLI.

Uses the MLflow/Feast fixtures of the training tests (tests/integration/conftest.py). The book history is
synthetic (tests/support/book_synthetic.py): the bundled book sessions last 30 s,
less than one 5-minute label horizon.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from coinflow.contracts import CHALLENGER, CHAMPION, action_model_name
from coinflow.feature_store import feature_store
from coinflow.settings import Settings
from feature_pipeline.sinks.feast_sink import FeastSink, single_view
from feature_repo.names import BOOK_ENTITY, EVENT_TIMESTAMP, MID_HISTORY_FEATURES, ORDERBOOK_FEATURES, ORDERBOOK_VIEW
from tests.support.book_synthetic import book_rows
from training_pipeline.__main__ import app
from training_pipeline.action.dataset import VALUE_COLUMNS, build_book_dataset
from training_pipeline.action.model import ACTION_NAMES, DECISION, SCORE_COLUMNS
from training_pipeline.action.train import train_action
from training_pipeline.checks import DataCheckError
from training_pipeline.simulation_run import simulate_run
from training_pipeline.tracking import PROJECT

pytestmark = pytest.mark.integration

PRODUCT = "coinbase:ETH-USD"
SAMPLES = 1500


@pytest.fixture(scope="module")
def book_settings(training_settings: Settings, tmp_path_factory) -> Settings:
    """The training repository with PRODUCT's book history written by the feature pipeline's sink."""
    root = tmp_path_factory.mktemp("action")
    settings = training_settings.override(
        simulation_taker_fee=0.0002,
        simulation_maker_fee=0.0,
        action_min_samples=300,
        deep_epochs=2,
        deep_hidden_size=8,
        deep_device="cpu",
        deep_checkpoint_dir=str(root / "checkpoints"),
        deep_tensorboard_dir=root / "tensorboard",
    )
    sink = FeastSink(lambda: feature_store(settings), single_view(ORDERBOOK_VIEW))
    sink.setup()
    sink.write_rows(book_rows(SAMPLES, PRODUCT))
    return settings


def test_the_dataset_is_read_point_in_time_and_labelled_within_the_horizon(book_settings: Settings):
    dataset = build_book_dataset(book_settings, PRODUCT)
    frame = dataset.frame
    assert dataset.horizon_steps == 75 and dataset.costs.tick == pytest.approx(0.01)
    assert len(frame) == SAMPLES - 75 and frame[EVENT_TIMESTAMP].is_monotonic_increasing
    written = pd.DataFrame(book_rows(SAMPLES, PRODUCT))
    written[EVENT_TIMESTAMP] = pd.to_datetime(written["window_end_ms"], unit="ms", utc=True)
    joined = frame.merge(written, on=[BOOK_ENTITY, EVENT_TIMESTAMP], suffixes=("", "_written"))
    assert len(joined) == len(frame)
    for name in ("mid", "spread", "bid_share_00", "ask_share_19", MID_HISTORY_FEATURES[0]):
        np.testing.assert_allclose(joined[name], joined[f"{name}_written"])
    assert np.isfinite(frame[list(VALUE_COLUMNS)].to_numpy()).all()


def test_too_short_a_book_history_is_a_clear_error(book_settings: Settings):
    with pytest.raises(DataCheckError, match="order-book samples"):
        build_book_dataset(book_settings, "kraken:NOPE/USD")


def test_the_action_model_is_trained_logged_registered_judged_and_served(book_settings: Settings, uri: str):
    result = train_action(book_settings, PRODUCT, uri)
    name = action_model_name(PRODUCT)
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_model_version_by_alias(name, CHALLENGER).version == result.version
    assert result.promotion.startswith(("promoted", "refused"))
    if result.promoted:
        assert client.get_model_version_by_alias(name, CHAMPION).version == result.version
    run = client.get_run(result.run_id)
    assert run.data.tags["model_type"] == "action" and run.data.tags["feature_service"] == "orderbook_deep_4s"
    assert run.data.tags["promotion"] == result.promotion
    assert {"test_accuracy", "test_mean_value_bps", "sim_pnl", "noop_pnl", "buy_and_hold_pnl"} <= set(run.data.metrics)
    assert run.data.params["model_loss"] == "mse" and run.data.params["horizon_steps"] == "75"
    assert len(client.get_metric_history(result.run_id, "epoch_val_loss")) == result.summary["epochs_run"]
    confusion = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/evaluation/confusion_matrix.json")
    assert np.asarray(confusion["counts"]).sum() == int(run.data.params["rows_test"])
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/equity_curve.png"}

    dataset = build_book_dataset(book_settings, PRODUCT)
    assert dataset.model_columns == [BOOK_ENTITY, *ORDERBOOK_FEATURES]
    features = dataset.frame[dataset.model_columns].tail(8).reset_index(drop=True)
    served = mlflow.pyfunc.load_model(f"models:/{name}/{result.version}").predict(features)
    assert list(served.columns) == [*SCORE_COLUMNS, DECISION] and len(served) == 8
    assert set(served[DECISION]) <= set(ACTION_NAMES)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{name}/{result.version}")).read_text().split()
    assert {f"{PROJECT}=={version(PROJECT)}", f"torch=={version('torch').split('+')[0]}"} <= set(requirements)

    # `simulate --run-id` replays the logged model's decisions on its test period, as training's own simulation did.
    report = simulate_run(book_settings, result.run_id, uri, threshold=0.0, passive=False)
    assert [o.name for o in report.outcomes] == ["action model", "buy and hold", "no-op"]
    assert report.outcomes[0].pnl == pytest.approx(result.outcomes[0].pnl)
    simulation = client.get_run(report.simulation_run_id)
    assert simulation.data.tags["mlflow.parentRunId"] == result.run_id
    assert simulation.data.params["decision_every"] == "book sample (4 s)"


def test_the_cli_trains_the_action_model_and_judges_it_against_the_champion(
    book_settings: Settings,
    uri: str,
    monkeypatch,
):
    for key, value in {
        "COINFLOW_RUN_DIR": str(book_settings.services.run_dir),
        "REDIS_URL": book_settings.services.redis_url,
        "COINFLOW_FEATURE_REPO_PATH": str(book_settings.feast.repo_path),
        "COINFLOW_FEAST_PROJECT": book_settings.feast.project,
        "COINFLOW_MLFLOW_PORT": str(book_settings.services.mlflow_port),
        "COINFLOW_SIMULATION_TAKER_FEE": "0.0002",
        "COINFLOW_SIMULATION_MAKER_FEE": "0",
        "COINFLOW_ACTION_MIN_SAMPLES": "300",
        "COINFLOW_DEEP_HIDDEN_SIZE": "8",
        "COINFLOW_DEEP_CHECKPOINT_DIR": book_settings.deep.checkpoint_dir,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = CliRunner().invoke(
        app, ["train", "--models", "action", "--product", PRODUCT, "--epochs", "1", "--device", "cpu"]
    )
    assert out.exit_code == 0, out.output
    assert action_model_name(PRODUCT) in out.output and "buy and hold" in out.output
    versions = MlflowClient(uri, registry_uri=uri).search_model_versions(f"name='{action_model_name(PRODUCT)}'")
    latest = max(versions, key=lambda v: int(v.version))
    assert latest.tags["promotion"].startswith(("promoted", "refused"))
    missing = CliRunner().invoke(app, ["train", "--models", "action", "--product", "kraken:NOPE/USD", "--epochs", "1"])
    assert missing.exit_code == 1 and "order-book samples" in missing.output
