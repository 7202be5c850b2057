"""Distributed XGBoost tuning: `tune-worker` processes and the training's own search in one Optuna study.

The module creates its own PostgreSQL database on the server at
COINFLOW_IT_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432, trust
auth) and drops it at the end; the storage is Optuna's own RDBStorage on it.
The data is the training tests' synthetic BTC/USD history in a temporary
feature repository (no MLflow: tuning needs only the dataset).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import optuna
import pytest
from typer.testing import CliRunner

from coinflow.feature_store import apply_feature_repo
from coinflow.settings import Settings
from tests.integration.conftest import write_history
from tests.support.feature_runs import env_for
from tests.support.paths import ROOT, copy_feature_repo
from tests.support.ports import free_port
from tests.support.postgres import temporary_database
from tests.support.training_synthetic import PREDICTABLE
from training_pipeline.__main__ import app
from training_pipeline.dataset import Dataset, build_dataset
from training_pipeline.price.models import TUNING_ROWS_ATTR, WORKER_ATTR, StudyError, XGBoostModel
from training_pipeline.price.train import TrainingOptions, training_split, tune_worker, xgboost_search
from training_pipeline.splits import Split

pytestmark = pytest.mark.integration

WORKER_TRIALS = {1: 3, 2: 3}
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def storage() -> Iterator[str]:
    """The URL of a PostgreSQL database of this module only, dropped at the end."""
    with temporary_database("coinflow_optuna_it") as url:
        yield url


@pytest.fixture(scope="module")
def tuning_settings(tmp_path_factory, redis_url: str, storage: str) -> Settings:
    """A feature repository with a small synthetic BTC/USD history, two walk-forward folds, the shared storage."""
    root = tmp_path_factory.mktemp("tuning")
    settings = Settings(
        _env_file=None,
        run_dir=root / "run",
        redis_url=redis_url,
        feature_repo_path=copy_feature_repo(root),
        feast_project="coinflow_tuning_it",
        mlflow_tracking_uri=None,
        min_training_rows=500,
        walk_forward_folds=2,
        xgboost_device="cpu",
        optuna_storage=storage,
    )
    apply_feature_repo(settings)
    write_history(settings, PREDICTABLE, phi=0.5, n=1500, seed=0)
    return settings


def _worker(settings: Settings, worker: int, trials: int, cwd: Path) -> subprocess.Popen[str]:
    """The real `tune-worker` command in a process of its own, given exactly these settings."""
    env = {**env_for(settings), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    command = ["-m", "training_pipeline", "tune-worker", "--worker", str(worker), "--pair", PREDICTABLE]
    return subprocess.Popen(
        [sys.executable, *command, "--trials", str(trials)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _split(settings: Settings) -> tuple[Dataset, Split]:
    dataset = build_dataset(settings, PREDICTABLE, "1m", 1)
    return dataset, training_split(settings, dataset)


def test_two_workers_and_the_training_tune_in_one_study(tuning_settings: Settings, storage: str, tmp_path: Path):
    workers = {n: _worker(tuning_settings, n, trials, tmp_path) for n, trials in WORKER_TRIALS.items()}
    outputs = {n: process.communicate(timeout=240)[0] for n, process in workers.items()}
    for n, process in workers.items():
        assert process.returncode == 0, outputs[n]
        assert f"worker {n}: {WORKER_TRIALS[n]} trials in study price-BTCUSD-1m-xgboost-" in outputs[n]

    # The training's own search (worker 0, one trial) joins the study its workers met in: same rows, same name.
    dataset, split = _split(tuning_settings)
    params, value, shared = xgboost_search(tuning_settings, dataset, split, trials=1, device="cpu")
    assert shared is not None and all(f"study {shared.name} " in output for output in outputs.values())
    study = optuna.load_study(study_name=shared.name, storage=storage)
    trials = study.get_trials()
    assert Counter(t.user_attrs[WORKER_ATTR] for t in trials) == {0: 1, **WORKER_TRIALS}
    assert sorted(t.number for t in trials) == list(range(1 + sum(WORKER_TRIALS.values())))
    assert all(t.state in FINISHED for t in trials)
    assert {t.user_attrs[TUNING_ROWS_ATTR] for t in trials} == {shared.tuning_rows}
    # Distinct sampler seeds: no two workers drew the same parameters.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)

    # The final model is fitted with the best trial of all workers.
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(completed, key=lambda t: cast(float, t.value))
    assert (params, value) == (best.params, best.value) == (study.best_params, study.best_value)
    model = XGBoostModel(dataset.features, params, "cpu", tuning_settings.training.seed)
    model.fit(dataset.frame.iloc[split.train], dataset.frame.iloc[split.validation])
    assert {k: model.params()[k] for k in params} == best.params


def test_a_worker_on_other_rows_cannot_join_the_study(tuning_settings: Settings):
    dataset, split = _split(tuning_settings)
    _, _, shared = xgboost_search(tuning_settings, dataset, split, trials=1, device="cpu")
    assert shared is not None
    other_split = tuning_settings.override(validation_fraction=0.2, optuna_study=shared.name)
    options = TrainingOptions.from_settings(other_split, ("xgboost",), trials=1)
    with pytest.raises(StudyError, match="holds trials scored on other rows"):
        tune_worker(other_split, PREDICTABLE, options, worker=3)


@pytest.mark.parametrize("command", [["tune-worker", "--worker", "1"], ["train", "--models", "xgboost"]])
def test_an_unreachable_storage_is_one_line_and_exit_code_1(tuning_settings: Settings, command: list[str]):
    url = f"postgresql://coinflow:hunter2@127.0.0.1:{free_port()}/optuna"
    env = {**tuning_settings.as_environment(), "COINFLOW_OPTUNA_STORAGE": url}
    result = CliRunner().invoke(app, [*command, "--pair", PREDICTABLE], env=env)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "cannot open the Optuna storage postgresql://coinflow:***@127.0.0.1:" in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output
