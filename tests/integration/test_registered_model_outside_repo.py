"""A registered price model loads wherever the project is installed, and nowhere else: not from the repository.

The pyfunc is logged as models from code: MLflow runs its entry file, which
imports ``training_pipeline``. So the model's pip requirements pin the
project, and a process that has the project's wheel (not the editable
checkout) loads and scores it exactly as the training process did; without
the project, loading fails with an ImportError naming what to install.

The subprocesses run with ``python -S`` (no site: the editable install's
finder is not active), from an empty folder, with ``PYTHONPATH`` holding the
unpacked wheel (or not) and the virtualenv's site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from coinflow.contracts import CHAMPION, PREDICTED_PRICE, registered_model_name
from feature_repo.names import EVENT_TIMESTAMP
from tests.support.paths import ROOT
from tests.support.training_synthetic import FEATURES, ar1_returns, candles_from_returns, features_of
from training_pipeline.checks import drop_warmup
from training_pipeline.dataset import assemble
from training_pipeline.labels import LABEL_TIMESTAMP
from training_pipeline.price.models import LassoModel
from training_pipeline.price.serving import log_pyfunc
from training_pipeline.splits import time_split
from training_pipeline.tracking import PROJECT

pytestmark = pytest.mark.integration

FILES = ("pyproject.toml", "README.md")
PACKAGES = ("coinflow", "feature_pipeline", "training_pipeline", "inference_pipeline", "feature_repo")
# The wheel of the project takes about 5 s to build here; a much slower build means something is wrong with it.
WHEEL_BUILD_LIMIT_S = 60
NAME = registered_model_name("BTC/USD", 1)
# Pickles, not Parquet, between the processes: pyarrow's Parquet thread pool now and then aborts the interpreter at
# exit ("terminate called without an active exception", apache/arrow#34314; 2 runs in 12 here under load).
LOAD_AND_PREDICT = """
import sys
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
print("training_pipeline from", sys.modules["training_pipeline"].__file__, file=sys.stderr)
model.predict(pd.read_pickle(sys.argv[2])).to_pickle(sys.argv[3])
"""


@pytest.fixture
def registry(tmp_path, monkeypatch) -> str:
    """A sqlite-backed tracking store and registry in `tmp_path`, active for this test only."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def _fitted_lasso() -> tuple[LassoModel, pd.DataFrame]:
    """A Lasso fitted on synthetic rows, and the raw feature columns of its test period (as served)."""
    candles = candles_from_returns(ar1_returns(800, 0.5))
    frame, _ = drop_warmup(assemble(features_of(candles), candles, timedelta(minutes=1)), FEATURES)
    split = time_split(frame[EVENT_TIMESTAMP], frame[LABEL_TIMESTAMP], 0.15, 0.2)
    model = LassoModel(FEATURES, folds=3).fit(frame.iloc[split.train])
    return model, frame.iloc[split.test][list(FEATURES)].reset_index(drop=True)


def _register(model: LassoModel, features: pd.DataFrame, artifacts: Path) -> str:
    """Log and register the model, make it champion; its ``models:/`` URI."""
    experiment = mlflow.create_experiment(NAME, artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_pyfunc(model, features.head(5), NAME)
    MlflowClient().set_registered_model_alias(NAME, CHAMPION, str(mlflow.register_model(info.model_uri, NAME).version))
    return f"models:/{NAME}@{CHAMPION}"


def _not_packaged(folder: str, names: list[str]) -> set[str]:
    """Caches, and the feature repo's local data (offline store, registry): no part of the wheel."""
    local = {"data"} if Path(folder).name == "feature_repo" else set()
    return {name for name in names if name == "__pycache__" or name in local}


def _unpacked_wheel(tmp: Path) -> Path:
    """Build the project's wheel from a copy of its sources (no build folder in the checkout) and unpack it."""
    source = tmp / "source"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=_not_packaged)
    for name in FILES:
        shutil.copy2(ROOT / name, source / name)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", tmp],
        check=True,
        capture_output=True,
        timeout=WHEEL_BUILD_LIMIT_S * 2,
    )
    assert time.perf_counter() - started < WHEEL_BUILD_LIMIT_S
    (wheel,) = tmp.glob(f"{PROJECT}-*.whl")
    unpacked = tmp / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    return unpacked


def _outside(uri: str, model_uri: str, features: Path, out: Path, path: list[Path], cwd: Path):
    """Load and score the model in ``python -S`` with only `path` importable, from `cwd`."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "PYTHONPATH": os.pathsep.join(str(p) for p in path),
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    return subprocess.run(
        [sys.executable, "-S", "-c", LOAD_AND_PREDICT, model_uri, str(features), str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_registered_model_loads_from_the_installed_project_outside_the_repository(registry, tmp_path):
    model, features = _fitted_lasso()
    model_uri = _register(model, features, tmp_path / "artifacts")
    expected = mlflow.pyfunc.load_model(model_uri).predict(features)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text().split()
    assert f"{PROJECT}=={version(PROJECT)}" in requirements

    unpacked = _unpacked_wheel(tmp_path / "wheel")
    site_packages = Path(sysconfig.get_paths()["purelib"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    features.to_pickle(tmp_path / "features.pkl")

    installed = _outside(
        registry,
        model_uri,
        tmp_path / "features.pkl",
        tmp_path / "out.pkl",
        [unpacked, site_packages],
        elsewhere,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert f"training_pipeline from {unpacked}" in installed.stderr
    served = pd.read_pickle(tmp_path / "out.pkl")
    np.testing.assert_allclose(served[PREDICTED_PRICE], expected[PREDICTED_PRICE], rtol=1e-12)

    missing = _outside(
        registry, model_uri, tmp_path / "features.pkl", tmp_path / "none.pkl", [site_packages], elsewhere
    )
    assert missing.returncode != 0
    assert "pip install the coinflow version pinned in the model's requirements.txt" in missing.stderr
