"""The MLflow parts both model families share: pip requirements, logging a models-from-code pyfunc, the champion
lookup and the promotion gates.

Registry names come from `coinflow.contracts`: the alias ``challenger`` is the
newest version and ``champion`` the one to serve, moved only by the gates.

A registered model is self-contained but for the project's code: MLflow loads
it by running its entry file (``served_model.py`` of the family, "models from
code"), which imports ``training_pipeline``. So its pip requirements pin the
project itself (`PROJECT` at its installed version) next to the libraries, and
the entry files turn a missing project into an ImportError naming it.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel

from coinflow.contracts import CHALLENGER, CHAMPION

# The distribution that installs training_pipeline: a registered model needs it to load.
PROJECT = "coinflow"
REQUIREMENTS = (PROJECT, "mlflow", "numpy", "pandas", "scikit-learn", "xgboost", "joblib", "cloudpickle")
# Rows of the test period logged with a model as its input example.
EXAMPLE_ROWS = 5


def pip_requirements(extra: Sequence[str] = ()) -> list[str]:
    """The pinned packages the pyfunc needs (given explicitly: inferring them costs seconds per model).

    Local version labels (torch's ``+cpu``) are dropped: the index that serves the model picks the build.
    """
    return [f"{name}=={version(name).split('+')[0]}" for name in (*REQUIREMENTS, *extra)]


def log_python_model(
    python_model: PythonModel,
    save: Callable[[Path], None],
    example: pd.DataFrame,
    name: str,
    entry: Path,
    requirements: Sequence[str],
) -> ModelInfo:
    """Log `python_model` (models from code: the file `entry` sets it) with its saved model as the artifact, a
    signature and input example, in the active run, to be registered as `name` once the run has finished."""
    with warnings.catch_warnings():
        # trade_count is an integer feature (Int64 in Feast): MLflow's hint about integer columns does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(example, python_model.predict(None, example))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        save(path)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry),
            artifacts={"model": str(path)},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(requirements),
        )


def register_challenger(client: MlflowClient, name: str, info: ModelInfo, run_id: str) -> str:
    """Register the model `info` of the finished run `run_id` as the newest version of `name`, its challenger.

    Registering after the run has ended means a version always belongs to a FINISHED run: a tracking store lost
    during training leaves unregistered runs behind, never a version of a half-logged one."""
    registered = mlflow.register_model(info.model_uri, name)
    client.set_registered_model_alias(name, CHALLENGER, registered.version)
    client.set_tag(run_id, "registered_model_version", registered.version)
    return str(registered.version)


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version the ``champion`` alias points at, or None (no such model or alias yet)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


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


def decide_pnl_promotion(
    candidate_pnl: float, champion_pnl: float | None, champion_label: str = "the champion"
) -> tuple[bool, str]:
    """Whether a trading model (the action model, a pairs configuration) becomes champion, and why: its PnL after
    fees on the test period must be above doing nothing's (0) and above the current champion's on the same
    period."""
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
