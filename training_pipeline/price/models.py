"""The tabular price models behind `PriceModel`: the baselines, Lasso and XGBoost (with its Optuna search).

The learned models' `predict` runs through `predict_values` (the serving path,
arrays without a DataFrame), so both give the same numbers.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import joblib
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.linear_model import LassoCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from coinflow.redact import redact
from feature_repo.names import EVENT_TIMESTAMP
from training_pipeline.features import input_matrix, input_names, model_inputs, select_columns
from training_pipeline.labels import BASELINE_WINDOW, LABEL_TIMESTAMP, TARGET_LOG_RETURN, recent_mean_column
from training_pipeline.metrics import price_mae
from training_pipeline.model_base import PriceModel
from training_pipeline.splits import walk_forward

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

# The Lasso path stops at 1 % of the largest alpha: smaller ones fit the collinear price features to noise
# (never chosen on this data) and do not converge.
LASSO_EPS = 1e-2


class LastPrice(PriceModel):
    """Baseline: the price stays where it is (a return of 0)."""

    model_type = "last_price"
    learned = False

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> LastPrice:
        return self

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(features))

    def params(self) -> dict[str, Any]:
        return {}


class MeanLastN(PriceModel):
    """Baseline: the mean close of the last ``n`` candles (needs the dataset's ``close_mean_<n>`` column)."""

    model_type = "mean_last_n"
    learned = False

    def __init__(self, n: int = BASELINE_WINDOW) -> None:
        self.n = n

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> MeanLastN:
        return self

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        column = recent_mean_column(self.n)
        if column not in features.columns:
            raise ValueError(
                f"{self.model_type} needs the column {column!r} (the mean close of the last {self.n} candles)"
            )
        return np.log(features[column].to_numpy(dtype=float) / features["close"].to_numpy(dtype=float))

    def params(self) -> dict[str, Any]:
        return {"n": self.n}

    def _state(self) -> dict[str, Any]:
        return {"n": self.n}


class LassoModel(PriceModel):
    """Lasso on standardised inputs; alpha chosen by cross-validation on walk-forward folds of the training rows."""

    model_type = "lasso"

    def __init__(self, features: Sequence[str], folds: int = 3, seed: int = 0) -> None:
        self.features = list(features)
        self.folds = folds
        self.seed = seed
        self.pipeline: Pipeline | None = None

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> LassoModel:
        folds = walk_forward(train[EVENT_TIMESTAMP], train[LABEL_TIMESTAMP], self.folds)
        self.pipeline = Pipeline(
            [
                ("inputs", FunctionTransformer(model_inputs)),
                ("scale", StandardScaler()),
                ("lasso", LassoCV(cv=folds, eps=LASSO_EPS, random_state=self.seed, max_iter=5000)),
            ]
        )
        self.pipeline.fit(train[self.features], train[TARGET_LOG_RETURN].to_numpy())
        return self

    def _fitted(self) -> Pipeline:
        if self.pipeline is None:
            raise ValueError(f"the {self.model_type} model is not fitted")
        return self.pipeline

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.predict_values(self.features, features[self.features].to_numpy(dtype=np.float64, na_value=np.nan))

    def predict_values(self, columns: Sequence[str], values: np.ndarray) -> np.ndarray:
        """The fitted pipeline's scaling and linear model applied to the inputs as arrays: the pipeline's own
        `predict` spends about a millisecond validating one row."""
        pipeline = self._fitted()
        scale, lasso = pipeline.named_steps["scale"], pipeline.named_steps["lasso"]
        inputs = input_matrix(self.features, select_columns(columns, values, self.features))
        if not np.isfinite(inputs).all():
            raise ValueError(f"the {self.model_type} model cannot predict rows with missing or infinite features")
        return ((inputs - scale.mean_) / scale.scale_) @ lasso.coef_ + lasso.intercept_

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"cv_folds": self.folds}
        if self.pipeline is not None:
            lasso = self.pipeline.named_steps["lasso"]
            params |= {"alpha": float(lasso.alpha_), "nonzero_coefficients": int(np.count_nonzero(lasso.coef_))}
        return params

    def feature_importance(self) -> pd.Series | None:
        lasso = self._fitted().named_steps["lasso"]
        names = self._fitted().named_steps["scale"].get_feature_names_out()
        return pd.Series(np.abs(lasso.coef_), index=names, name="|coefficient| (standardised)")

    def _state(self) -> dict[str, Any]:
        return {"features": self.features, "folds": self.folds, "seed": self.seed}

    def _save_artifacts(self, path: Path) -> None:
        joblib.dump(self._fitted(), path / "pipeline.joblib")

    @classmethod
    def _restore(cls, state: dict[str, Any], path: Path) -> LassoModel:
        model = cls(**state)
        model.pipeline = joblib.load(path / "pipeline.joblib")
        return model


def gpu_available() -> bool:
    """Whether XGBoost was built with CUDA and a GPU is visible (nvidia-smi lists one)."""
    if not xgb.build_info().get("USE_CUDA"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def resolve_device(setting: str) -> str:
    """``cuda`` or ``cpu`` for the xgboost_device setting (``auto``: cuda when a GPU is available)."""
    if setting == "auto":
        return "cuda" if gpu_available() else "cpu"
    return setting


class XGBoostModel(PriceModel):
    """Gradient-boosted trees (``hist``).

    Given validation rows, `fit` grows up to ``MAX_ROUNDS`` trees, stops once
    30 rounds bring no gain on them and keeps the best number of trees;
    without, it grows ``n_estimators`` trees. The loss is the absolute error:
    models are judged on MAE, and the conditional median it estimates is
    robust to the fat tails of one-minute returns.
    """

    model_type = "xgboost"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "max_depth": 4,
        "learning_rate": 0.05,
        "min_child_weight": 10.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "n_estimators": 300,
        "objective": "reg:absoluteerror",
    }
    MAX_ROUNDS = 500
    EARLY_STOPPING_ROUNDS = 30
    # One thread: on tens of thousands of rows, OpenMP threads on a busy 2-core machine spend more time waiting
    # for each other than computing (measured: 1.0 s with one thread, 5.6 s with two, for the same fit).
    THREADS = 1

    def __init__(
        self, features: Sequence[str], hyper: dict[str, Any] | None = None, device: str = "cpu", seed: int = 0
    ) -> None:
        self.features = list(features)
        self.hyper = {**self.DEFAULTS, **(hyper or {})}
        self.device = device
        self.seed = seed
        self.booster: xgb.Booster | None = None

    def _regressor(self, early_stopping: bool) -> xgb.XGBRegressor:
        hyper = {**self.hyper, "n_estimators": self.MAX_ROUNDS} if early_stopping else self.hyper
        return xgb.XGBRegressor(
            **hyper,
            tree_method="hist",
            device=self.device,
            random_state=self.seed,
            n_jobs=self.THREADS,
            early_stopping_rounds=self.EARLY_STOPPING_ROUNDS if early_stopping else None,
        )

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> XGBoostModel:
        regressor = self._regressor(early_stopping=validation is not None)
        eval_set = None
        if validation is not None:
            eval_set = [(model_inputs(validation[self.features]), validation[TARGET_LOG_RETURN].to_numpy())]
        regressor.fit(
            model_inputs(train[self.features]), train[TARGET_LOG_RETURN].to_numpy(), eval_set=eval_set, verbose=False
        )
        if validation is not None:
            self.hyper["n_estimators"] = int(regressor.best_iteration) + 1
        self.booster = regressor.get_booster()
        return self

    def _fitted(self) -> xgb.Booster:
        if self.booster is None:
            raise ValueError(f"the {self.model_type} model is not fitted")
        return self.booster

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.predict_values(self.features, features[self.features].to_numpy(dtype=np.float64, na_value=np.nan))

    def predict_values(self, columns: Sequence[str], values: np.ndarray) -> np.ndarray:
        """Predicted on the input array in place (a DMatrix costs milliseconds per call), with the kept trees;
        NaN is a missing value, as in training."""
        inputs = input_matrix(self.features, select_columns(columns, values, self.features))
        return self._fitted().inplace_predict(inputs, iteration_range=(0, self.hyper["n_estimators"]))

    def params(self) -> dict[str, Any]:
        return {**self.hyper, "device": self.device, "tree_method": "hist"}

    def feature_importance(self) -> pd.Series | None:
        gains = self._fitted().get_score(importance_type="total_gain")
        names = self._fitted().feature_names or []
        return pd.Series([gains.get(name, 0.0) for name in names], index=names, name="total gain")

    def _state(self) -> dict[str, Any]:
        return {"features": self.features, "hyper": self.hyper, "device": self.device, "seed": self.seed}

    def _save_artifacts(self, path: Path) -> None:
        self._fitted().save_model(path / "booster.json")

    @classmethod
    def _restore(cls, state: dict[str, Any], path: Path) -> XGBoostModel:
        model = cls(**state)
        model.booster = xgb.Booster()
        model.booster.load_model(path / "booster.json")
        model.booster.set_param({"device": "cpu", "nthread": cls.THREADS})
        expected = input_names(model.features)
        if model.booster.feature_names is not None and tuple(model.booster.feature_names) != expected:
            # Arrays carry no names: the inputs must come in the order the trees were grown on.
            raise ValueError(f"the saved booster's inputs {model.booster.feature_names} are not {list(expected)}")
        return model


# Trial attributes of a shared search: which worker ran the trial, and on which rows (`tuning_fingerprint`).
WORKER_ATTR = "worker"
TUNING_ROWS_ATTR = "tuning_rows"
# Workers that open an empty database together race to create Optuna's tables (optuna/optuna#1092); the losers
# retry, and then find the tables.
STORAGE_ATTEMPTS = 3
STORAGE_RETRY_S = 0.5


class StudyError(Exception):
    """The shared Optuna study cannot be used: its storage cannot be opened, or it holds trials on other rows."""


@dataclass(frozen=True)
class SharedStudy:
    """Where the workers of one XGBoost search meet (an Optuna storage URL and study name), this worker's index
    (0: the `train` run) and the fingerprint of the rows it tunes on."""

    storage: str
    name: str
    worker: int
    tuning_rows: str


def worker_seed(seed: int, worker: int) -> int:
    """The sampler seed of tuning worker `worker`: distinct per worker, so that workers do not draw the same
    trials; worker 0 keeps the base seed, so a search in memory draws what it always drew."""
    return seed + worker


def tuning_fingerprint(dataset_hash: str, train_rows: np.ndarray, folds: int) -> str:
    """SHA-256 of what a trial's score depends on besides its parameters: the dataset, the positions of the
    training rows in it (the time split) and the number of walk-forward folds."""
    digest = hashlib.sha256(f"{dataset_hash}:{folds}:".encode())
    digest.update(np.asarray(train_rows, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _one_line(error: BaseException) -> str:
    """A database error's own message on one line, credentials masked (SQLAlchemy appends the SQL and a link)."""
    return redact(" ".join(str(getattr(error, "orig", None) or error).split()))


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url`, its tables created when missing; `StudyError` when it cannot be opened."""
    import optuna
    from sqlalchemy import exc

    attempt = 1
    while True:
        try:
            return optuna.storages.RDBStorage(url)
        except (exc.IntegrityError, exc.ProgrammingError) as error:
            if attempt == STORAGE_ATTEMPTS:
                raise StudyError(f"cannot create the Optuna tables in {redact(url)}: {_one_line(error)}") from error
            attempt += 1
            time.sleep(STORAGE_RETRY_S)
        except (exc.SQLAlchemyError, ImportError, RuntimeError) as error:
            raise StudyError(f"cannot open the Optuna storage {redact(url)}: {_one_line(error)}") from error


def _check_rows(study: optuna.Study, shared: SharedStudy) -> None:
    """Every trial in the study was scored on the same rows as this worker's (same data, split and folds); a trial
    another worker has just started may not carry its rows yet."""
    rows = {t.user_attrs.get(TUNING_ROWS_ATTR) for t in study.get_trials(deepcopy=False)}
    other = rows - {shared.tuning_rows, None}
    if other:
        raise StudyError(
            f"the Optuna study {shared.name!r} holds trials scored on other rows (another dataset, time split or "
            "number of folds): name another study with COINFLOW_OPTUNA_STUDY, or unset it for one per dataset"
        )


def tune_xgboost(
    train: pd.DataFrame,
    features: Sequence[str],
    folds: int,
    trials: int,
    device: str,
    seed: int,
    shared: SharedStudy | None = None,
) -> tuple[dict[str, Any], float]:
    """Optuna search of XGBoost's hyper-parameters on walk-forward folds of the training rows.

    Each trial fits one early-stopped model per fold and scores the mean of
    its price MAE relative to the last-price MAE on the fold (scale-free across
    folds, and the quantity the promotion gate judges). Unpromising trials are
    pruned after their first folds. In memory, or in the `shared` study that
    other workers (`tune-worker`) run trials in at the same time. Returns the
    best parameters of the study's trials, all workers' (the number of trees
    is left to early stopping), and their score.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = walk_forward(train[EVENT_TIMESTAMP], train[LABEL_TIMESTAMP], folds)
    attributes = {} if shared is None else {WORKER_ATTR: shared.worker, TUNING_ROWS_ATTR: shared.tuning_rows}

    def objective(trial: optuna.Trial) -> float:
        for key, value in attributes.items():
            trial.set_user_attr(key, value)
        hyper = {
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 100.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }
        ratios = []
        for step, (fit_rows, val_rows) in enumerate(splits):
            fold_train, fold_val = train.iloc[fit_rows], train.iloc[val_rows]
            model = XGBoostModel(features, hyper, device, seed).fit(fold_train, fold_val)
            ratios.append(
                price_mae(fold_val, model.predict_price(fold_val)) / price_mae(fold_val, fold_val["close"].to_numpy())
            )
            trial.report(float(np.mean(ratios)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(ratios))

    study = optuna.create_study(
        storage=None if shared is None else open_storage(shared.storage),
        study_name=None if shared is None else shared.name,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=worker_seed(seed, 0 if shared is None else shared.worker)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
    )
    if shared is not None:
        _check_rows(study, shared)
    study.optimize(objective, n_trials=trials)
    if shared is not None:
        _check_rows(study, shared)  # a worker on other rows may have joined meanwhile
    return dict(study.best_params), float(study.best_value)
