"""The model registry: saved models name their module, older ones load through the fallback table; the registered
pyfunc's contract with the project (its pip requirements pin it, its entry files say when it is missing)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import training_pipeline
from feature_repo.names import EVENT_TIMESTAMP
from tests.support.training_synthetic import FEATURES, ar1_returns, candles_from_returns, features_of
from training_pipeline.checks import drop_warmup
from training_pipeline.dataset import assemble
from training_pipeline.labels import LABEL_TIMESTAMP
from training_pipeline.model_base import LEGACY_MODULES, META_FILE, PriceModel, load_model, registered_models
from training_pipeline.price.models import LassoModel
from training_pipeline.splits import time_split
from training_pipeline.tracking import PROJECT, pip_requirements

PACKAGE = Path(training_pipeline.__file__).resolve().parent


@pytest.fixture(scope="module")
def lasso() -> tuple[LassoModel, pd.DataFrame]:
    candles = candles_from_returns(ar1_returns(800, 0.5))
    frame, _ = drop_warmup(assemble(features_of(candles), candles, timedelta(minutes=1)), FEATURES)
    split = time_split(frame[EVENT_TIMESTAMP], frame[LABEL_TIMESTAMP], 0.15, 0.2)
    return LassoModel(FEATURES, folds=3).fit(frame.iloc[split.train]), frame.iloc[split.test]


def _without_module(path: Path) -> None:
    """Rewrite the model's metadata as it was written before it named the module."""
    meta = json.loads((path / META_FILE).read_text())
    del meta["module"]
    (path / META_FILE).write_text(json.dumps(meta))


def test_save_records_the_module_of_the_class(lasso, tmp_path):
    model, test = lasso
    model.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / META_FILE).read_text())["module"] == "training_pipeline.price.models"
    np.testing.assert_array_equal(load_model(tmp_path / "model").predict(test), model.predict(test))


def test_metadata_without_a_module_loads_through_the_fallback_table(lasso, tmp_path):
    model, test = lasso
    model.save(tmp_path / "model")
    _without_module(tmp_path / "model")
    np.testing.assert_array_equal(load_model(tmp_path / "model").predict(test), model.predict(test))
    # A fresh interpreter has imported no model family: the table alone must lead load_model to the class.
    script = (
        "import sys; from pathlib import Path; from training_pipeline.model_base import load_model; "
        "model = load_model(Path(sys.argv[1])); print(type(model).__name__, 'torch' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model")], capture_output=True, text=True, timeout=120, check=True
    )
    assert loaded.stdout.split() == ["LassoModel", "False"]


def test_the_fallback_table_names_the_module_of_every_model_type():
    import training_pipeline.price.sequence  # noqa: F401 - registers the sequence models

    registered = registered_models()
    assert {kind: cls.__module__ for kind, cls in registered.items()} == LEGACY_MODULES


def test_a_model_type_belongs_to_one_class():
    with pytest.raises(TypeError, match="'lasso' is taken by training_pipeline.price.models.LassoModel"):

        class Impostor(PriceModel):  # noqa: F841 - defining it is the test
            model_type = "lasso"


def test_an_unknown_model_type_without_a_module_is_a_clear_error(tmp_path):
    (tmp_path / META_FILE).write_text(json.dumps({"model_type": "prophet", "state": {}}))
    with pytest.raises(ValueError, match="unknown model type 'prophet'"):
        load_model(tmp_path)


def test_pip_requirements_pin_the_project_itself():
    assert f"{PROJECT}=={version(PROJECT)}" in pip_requirements()
    assert f"{PROJECT}=={version(PROJECT)}" in pip_requirements(("torch",))


@pytest.mark.parametrize("family", ["price", "action"])
def test_an_entry_file_without_the_project_names_what_to_install(monkeypatch, family):
    monkeypatch.setitem(sys.modules, f"training_pipeline.{family}.serving", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install the coinflow version pinned in the model's requirements.txt"):
        runpy.run_path(str(PACKAGE / family / "served_model.py"))
