"""MLflow: names, the pyfunc that serves a model, the registry aliases and the promotion gate.

Names are a contract with the inference pipeline: the registered model (and
the experiment) of a pair and horizon is ``price-<PAIR without slash>-<H>m``;
the alias ``challenger`` is the newest version and ``champion`` the one to
serve, moved only by `decide_promotion`.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from coinflow.contracts import (
    CHAMPION,
    PREDICTED_PRICE,
    PREDICTED_RETURN,
)
from training_pipeline.models import PriceModel, load_model

REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "xgboost", "joblib", "cloudpickle")


class PriceForecaster(mlflow.pyfunc.PythonModel):
    """The served model: raw FeatureService columns in; predicted log return and price out.

    All preprocessing lives in the wrapped model, so a caller passes the
    features exactly as the online store returns them. Sequence models
    (``lstm``, ``gru``) read each row's window from the rows before it in the
    input: pass the pair's last ``sequence_length`` candles, oldest first, and
    take the last row's prediction (see `SequencePriceModel.predict`). Loading needs the
    project's ``training_pipeline`` package importable (the inference pipeline
    runs in the project's environment).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = load_model(Path(context.artifacts["model"]))

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        returns = self.model.predict(model_input)
        return pd.DataFrame(
            {
                PREDICTED_RETURN: returns,
                PREDICTED_PRICE: model_input["close"].to_numpy(dtype=float) * np.exp(returns),
            }
        )


def pip_requirements(extra: Sequence[str] = ()) -> list[str]:
    """The pinned packages the pyfunc needs (given explicitly: inferring them costs seconds per model).

    Local version labels (torch's ``+cpu``) are dropped: the index that serves the model picks the build.
    """
    return [f"{name}=={version(name).split('+')[0]}" for name in (*REQUIREMENTS, *extra)]


def _log_python_model(
    python_model: mlflow.pyfunc.PythonModel,
    save: Callable[[Path], None],
    example: pd.DataFrame,
    name: str,
    entry: str,
    requirements: Sequence[str],
) -> ModelInfo:
    """Log `python_model` (models from code: `entry` in this package) with its saved model as the artifact, a
    signature and input example, in the active run, and register it as `name`."""
    with warnings.catch_warnings():
        # trade_count is an integer feature (Int64 in Feast): MLflow's hint about integer columns does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(example, python_model.predict(None, example))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        save(path)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name(entry)),
            artifacts={"model": str(path)},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(requirements),
            registered_model_name=name,
        )


def log_pyfunc(model: PriceModel, example: pd.DataFrame, name: str) -> ModelInfo:
    """Log the price model as a `PriceForecaster` pyfunc in the active run and register it as `name`."""
    forecaster = PriceForecaster()
    forecaster.model = model
    return _log_python_model(forecaster, model.save, example, name, "served_model.py", model.requirements)


class ActionPolicy(mlflow.pyfunc.PythonModel):
    """The served action model: ``product`` and the ``orderbook_deep_4s`` columns in; per row a score of each action
    (value in basis points, or probability of being optimal, by the model's loss) and the chosen action."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from training_pipeline.deep.action import ActionModel  # imports torch only when an action model loads

        self.model = ActionModel.load(Path(context.artifacts["model"]))

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from training_pipeline.deep.action import ACTION_NAMES, DECISION, SCORE_COLUMNS

        scores = self.model.scores(model_input)
        out = pd.DataFrame(scores, columns=list(SCORE_COLUMNS))
        out[DECISION] = np.asarray(ACTION_NAMES)[scores.argmax(axis=1)] if len(scores) else []
        return out


def log_action_pyfunc(model: Any, example: pd.DataFrame, name: str) -> ModelInfo:
    """Log an `ActionModel` as an `ActionPolicy` pyfunc in the active run and register it as `name`."""
    policy = ActionPolicy()
    policy.model = model
    return _log_python_model(policy, model.save, example, name, "served_action_model.py", ("torch",))


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version the ``champion`` alias points at, or None (no such model or alias yet)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def predict_with_alias(name: str, alias: str, features: pd.DataFrame) -> np.ndarray:
    """Predicted prices of the registered model version behind `alias`, loaded as its pyfunc."""
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    return loaded.predict(features)[PREDICTED_PRICE].to_numpy(dtype=float)


def decide_promotion(
    candidate_mae: float,
    baseline_mae: float,
    champion_mae: float | None,
    margin: float,
    champion_label: str = "the champion",
) -> tuple[bool, str]:
    """Whether a candidate becomes champion, and why.

    It must have a test MAE at least `margin` (a fraction) below the
    last-price baseline's AND below the current champion's, both measured on
    the same test period. With no champion, beating the baseline is enough.
    """
    bar = 1.0 - margin
    if not candidate_mae <= baseline_mae * bar:
        return False, (
            f"refused: test MAE {candidate_mae:.6g} is not {margin:.2%} below the last-price baseline's {baseline_mae:.6g} "
            f"(ratio {candidate_mae / baseline_mae:.4f})"
        )
    if champion_mae is not None and not candidate_mae <= champion_mae * bar:
        return False, (
            f"refused: beats the baseline (ratio {candidate_mae / baseline_mae:.4f}) but its test MAE {candidate_mae:.6g} "
            f"is not {margin:.2%} below {champion_label}'s {champion_mae:.6g} on the same test period"
        )
    against = "" if champion_mae is None else f" and {champion_label}'s {champion_mae:.6g}"
    return True, (
        f"promoted: test MAE {candidate_mae:.6g} is at least {margin:.2%} below the last-price baseline's "
        f"{baseline_mae:.6g}{against}"
    )


def decide_action_promotion(
    candidate_pnl: float, champion_pnl: float | None, champion_label: str = "the champion"
) -> tuple[bool, str]:
    """Whether an action model becomes champion, and why: its simulated PnL on the test period must be above the
    no-op policy's (0) and above the current champion's on the same period."""
    if not candidate_pnl > 0:
        return False, f"refused: simulated PnL {candidate_pnl:,.2f} on the test period does not beat no-op (0)"
    if champion_pnl is not None and not candidate_pnl > champion_pnl:
        return False, (
            f"refused: simulated PnL {candidate_pnl:,.2f} beats no-op but not {champion_label}'s "
            f"{champion_pnl:,.2f} on the same test period"
        )
    against = "" if champion_pnl is None else f" and {champion_label}'s {champion_pnl:,.2f}"
    return True, f"promoted: simulated PnL {candidate_pnl:,.2f} on the test period beats no-op (0){against}"


def git_commit(repo: Path) -> tuple[str, bool]:
    """The commit checked out in `repo` and whether the working tree has changes; ("unknown", False) outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return head.stdout.strip(), bool(status.stdout.strip())
