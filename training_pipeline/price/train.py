"""One training run of one pair and horizon: dataset, models, evaluation, MLflow runs, registry and promotion.

Every model is judged on the same held-out test period (the most recent
rows), next to the last-price baseline on those rows. Baselines are logged
as runs for comparison; learned models are also registered, the alias
``challenger`` follows the newest, and ``champion`` moves only through the
promotion gate, against the current champion re-scored on this test period.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from feast import FeatureStore
from mlflow import MlflowClient

import training_pipeline
from coinflow.contracts import CHAMPION, registered_model_name
from coinflow.settings import Settings
from feature_repo.names import EVENT_TIMESTAMP
from training_pipeline import plots
from training_pipeline.dataset import Dataset, build_dataset, horizon_delta
from training_pipeline.metrics import METRICS, frame_metrics, ratios
from training_pipeline.model_base import PriceModel
from training_pipeline.price.evaluate import evaluate, walk_forward_mae_ratios
from training_pipeline.price.models import (
    WORKER_ATTR,
    LassoModel,
    LastPrice,
    MeanLastN,
    SharedStudy,
    XGBoostModel,
    open_storage,
    resolve_device,
    tune_xgboost,
    tuning_fingerprint,
)
from training_pipeline.price.serving import log_pyfunc, predict_with_alias
from training_pipeline.splits import Split, time_split
from training_pipeline.tracking import (
    EXAMPLE_ROWS,
    champion_version,
    decide_promotion,
    git_commit,
    register_challenger,
)

logger = logging.getLogger(__name__)

MODEL_CHOICES = ("baseline", "lasso", "xgboost", "lstm", "gru")
# The deep sequence models take minutes per fit on a CPU: chosen explicitly (--models lstm,gru).
DEFAULT_MODELS = ("baseline", "lasso", "xgboost")


@dataclass
class ModelResult:
    """What one model did on the pair's periods, and what became of it in the registry."""

    model_type: str
    validation: dict[str, float]
    test: dict[str, float]
    walk_forward: list[float]
    fit_seconds: float
    run_id: str = ""
    version: str | None = None
    promoted: bool = False
    promotion: str = ""

    @property
    def walk_forward_mean(self) -> float:
        return float(np.mean(self.walk_forward)) if self.walk_forward else float("nan")


@dataclass
class PairResult:
    pair: str
    horizon_minutes: int
    name: str
    dataset: Dataset
    split: Split
    baseline_test: dict[str, float]
    models: list[ModelResult] = field(default_factory=list)
    champion: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class TrainingOptions:
    """What to train; defaults come from Settings, the CLI may override them."""

    horizon_minutes: int
    interval: str
    models: tuple[str, ...]
    trials: int

    @classmethod
    def from_settings(
        cls, settings: Settings, models: Sequence[str] = DEFAULT_MODELS, **overrides: Any
    ) -> TrainingOptions:
        unknown = set(models) - set(MODEL_CHOICES)
        if unknown:
            raise ValueError(f"unknown models {sorted(unknown)}; choose from {', '.join(MODEL_CHOICES)}")
        values = {
            "horizon_minutes": settings.training.horizon_minutes,
            "interval": settings.stream.candle_interval,
            "trials": settings.training.optuna_trials,
            **{k: v for k, v in overrides.items() if v is not None},
        }
        horizon_delta(values["horizon_minutes"], values["interval"])
        return cls(models=tuple(m for m in MODEL_CHOICES if m in models), **values)


def training_split(settings: Settings, dataset: Dataset) -> Split:
    """The train / validation / test periods of a dataset: one function, so that `train` and its tuning workers
    split the same rows the same way."""
    rows = dataset.frame
    return time_split(
        rows[EVENT_TIMESTAMP],
        rows["label_timestamp"],
        settings.training.validation_fraction,
        settings.training.test_fraction,
    )


def shared_study(settings: Settings, dataset: Dataset, split: Split, worker: int) -> SharedStudy | None:
    """The XGBoost search's study in COINFLOW_OPTUNA_STORAGE that worker `worker` joins (None: in memory); unless
    COINFLOW_OPTUNA_STUDY names it, its name is derived from the pair, horizon, model and tuning rows."""
    if settings.training.optuna_storage is None:
        return None
    rows = tuning_fingerprint(dataset.fingerprint(), split.train, settings.training.walk_forward_folds)
    name = settings.training.optuna_study or (
        f"{registered_model_name(dataset.pair, dataset.horizon_minutes)}-{XGBoostModel.model_type}-{rows[:12]}"
    )
    return SharedStudy(settings.training.optuna_storage, name, worker, rows)


def xgboost_search(
    settings: Settings, dataset: Dataset, split: Split, trials: int, device: str, worker: int = 0
) -> tuple[dict[str, Any], float, SharedStudy | None]:
    """Run `trials` trials of the XGBoost search on the training rows as worker `worker`, in memory or in the
    shared study: the best parameters of the study's trials (all workers'), their score, and the study."""
    shared = shared_study(settings, dataset, split, worker)
    train = dataset.frame.iloc[split.train]
    folds, seed = settings.training.walk_forward_folds, settings.training.seed
    params, value = tune_xgboost(train, dataset.features, folds, trials, device, seed, shared)
    return params, value, shared


@dataclass(frozen=True)
class TuningResult:
    """What one tuning worker did in its shared study, and the study's best trial so far (of all workers)."""

    study: str
    worker: int
    worker_trials: int
    total_trials: int
    best_value: float
    best_params: dict[str, Any]


def tune_worker(
    settings: Settings, pair: str, options: TrainingOptions, worker: int, store: FeatureStore | None = None
) -> TuningResult:
    """Join the shared XGBoost search of `pair` as worker `worker` and run `options.trials` trials in it, on the
    training rows `train` tunes on (same dataset, same split)."""
    import optuna

    if settings.training.optuna_storage is None:
        raise ValueError("a tuning worker needs a shared study: set COINFLOW_OPTUNA_STORAGE")
    dataset = build_dataset(settings, pair, options.interval, options.horizon_minutes, store)
    split = training_split(settings, dataset)
    device = resolve_device(settings.training.xgboost_device)
    params, value, shared = xgboost_search(settings, dataset, split, options.trials, device, worker)
    assert shared is not None, "a storage is set"
    trials = optuna.load_study(study_name=shared.name, storage=open_storage(shared.storage)).get_trials(deepcopy=False)
    mine = sum(t.user_attrs.get(WORKER_ATTR) == worker for t in trials)
    return TuningResult(shared.name, worker, mine, len(trials), value, params)


def _period(rows: pd.DataFrame) -> tuple[str, str]:
    return rows[EVENT_TIMESTAMP].iloc[0].isoformat(), rows[EVENT_TIMESTAMP].iloc[-1].isoformat()


def _fit(
    make_model: Callable[[], PriceModel], train: pd.DataFrame, validation: pd.DataFrame
) -> tuple[PriceModel, float]:
    start = time.perf_counter()
    model = make_model().fit(train, validation)
    return model, time.perf_counter() - start


class PairTrainer:
    """Trains, logs and registers the models of one pair on one split of its dataset; without a `client` (a torchrun
    rank other than 0) it trains and evaluates alike but logs, registers and promotes nothing."""

    def __init__(
        self, settings: Settings, dataset: Dataset, options: TrainingOptions, client: MlflowClient | None
    ) -> None:
        self.settings = settings
        self.dataset = dataset
        self.options = options
        self.client = client
        self.name = registered_model_name(dataset.pair, dataset.horizon_minutes)
        rows = dataset.frame
        self.split = training_split(settings, dataset)
        self.train = rows.iloc[self.split.train]
        self.validation = rows.iloc[self.split.validation]
        self.test = rows.iloc[self.split.test]
        self.development = rows.iloc[np.concatenate([self.split.train, self.split.validation])]
        self.baseline_validation = frame_metrics(self.validation, self.validation["close"].to_numpy(dtype=float))
        self.baseline_test = frame_metrics(self.test, self.test["close"].to_numpy(dtype=float))
        self.commit, self.dirty = git_commit(Path(training_pipeline.__file__).resolve().parents[1])

    @property
    def registry(self) -> MlflowClient:
        """The client of the process that logs and registers."""
        assert self.client is not None, "only the process with a client logs, registers and promotes"
        return self.client

    def run(self) -> PairResult:
        start = time.perf_counter()
        result = PairResult(
            self.dataset.pair, self.dataset.horizon_minutes, self.name, self.dataset, self.split, self.baseline_test
        )
        features = self.dataset.features
        seed = self.settings.training.seed
        if "baseline" in self.options.models:
            result.models.append(self._train_one(LastPrice, {}))
            result.models.append(self._train_one(MeanLastN, {}))
        if "lasso" in self.options.models:
            result.models.append(
                self._train_one(lambda: LassoModel(features, self.settings.training.walk_forward_folds, seed), {})
            )
        if "xgboost" in self.options.models:
            device = resolve_device(self.settings.training.xgboost_device)
            tuned, score, shared = xgboost_search(self.settings, self.dataset, self.split, self.options.trials, device)
            logger.info("%s: best XGBoost trial, walk-forward MAE ratio %.5f: %s", self.dataset.pair, score, tuned)
            study = {} if shared is None else {"optuna_study": shared.name}
            result.models.append(
                self._train_one(
                    lambda: XGBoostModel(features, tuned, device, seed),
                    {"optuna_trials": self.options.trials, **study},
                    {"optuna_best_mae_ratio": score},
                )
            )
        for model_type in ("lstm", "gru"):
            if model_type in self.options.models:
                result.models.append(self._train_one(self._sequence_model(model_type), {}))
        if self.client is not None:
            self._promote([m for m in result.models if m.version is not None])
            champion = champion_version(self.client, self.name)
            result.champion = None if champion is None else champion.version
        result.seconds = time.perf_counter() - start
        return result

    def _sequence_model(self, model_type: str) -> Callable[[], PriceModel]:
        from training_pipeline.price.sequence import sequence_model  # imports torch only when a deep model is chosen

        return lambda: sequence_model(model_type, self.dataset.features, self.settings)

    def _train_one(
        self,
        make_model: Callable[[], PriceModel],
        extra_params: dict[str, Any],
        extra_metrics: dict[str, float] | None = None,
    ) -> ModelResult:
        model, seconds = _fit(make_model, self.train, self.validation)
        validation, _ = evaluate(model, self.validation)
        test, predicted = evaluate(model, self.test)
        folds = walk_forward_mae_ratios(model.unfitted, self.development, self.settings.training.walk_forward_folds)
        result = ModelResult(model.model_type, validation, test, folds, seconds)
        logger.info(
            "%s %s: test MAE %.4f (baseline %.4f), walk-forward MAE ratio %.4f",
            self.dataset.pair,
            model.model_type,
            test["mae"],
            self.baseline_test["mae"],
            result.walk_forward_mean,
        )
        if self.client is not None:
            self._log(model, result, predicted, extra_params, extra_metrics or {})
        return result

    def _log(
        self,
        model: PriceModel,
        result: ModelResult,
        predicted: np.ndarray,
        extra_params: dict[str, Any],
        extra_metrics: dict[str, float],
    ) -> None:
        """The model's MLflow run; a learned model is also registered and becomes the challenger."""
        folds = result.walk_forward
        info = None
        with mlflow.start_run(run_name=model.model_type) as run:
            result.run_id = run.info.run_id
            mlflow.set_tags(self._tags(model))
            mlflow.log_params(
                {**self._params(), **{f"model_{k}": v for k, v in model.params().items()}, **extra_params}
            )
            mlflow.log_metrics(self._metrics(result, extra_metrics))
            for step, ratio in enumerate(folds):
                mlflow.log_metric("walk_forward_mae_ratio", ratio, step=step)
            for record in model.training_curve():
                mlflow.log_metrics(
                    {f"epoch_{k}": v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"])
                )
            self._log_plots(model, predicted)
            if model.learned:
                example = self.test[list(self.dataset.features)].head(EXAMPLE_ROWS).reset_index(drop=True)
                info = log_pyfunc(model, example, self.name)
        if info is not None:
            result.version = register_challenger(self.registry, self.name, info, result.run_id)

    def _tags(self, model: PriceModel) -> dict[str, str]:
        return {
            "pair": self.dataset.pair,
            "horizon_minutes": str(self.dataset.horizon_minutes),
            "model_type": model.model_type,
            "feature_service": self.dataset.feature_service,
            "registered_model": self.name if model.learned else "",
            "dataset_hash": self.dataset.fingerprint(),
            "mlflow.source.git.commit": self.commit,
            "git_dirty": str(self.dirty).lower(),
        }

    def _params(self) -> dict[str, Any]:
        ds, s = self.dataset, self.settings
        train_start, train_end = _period(self.train)
        validation_start, validation_end = _period(self.validation)
        test_start, test_end = _period(self.test)
        return {
            "pair": ds.pair,
            "interval": ds.interval,
            "horizon_minutes": ds.horizon_minutes,
            "feature_service": ds.feature_service,
            "features": ",".join(ds.features),
            "data_start": ds.start.isoformat(),
            "data_end": ds.end.isoformat(),
            "dataset_hash": ds.fingerprint(),
            "train_start": train_start,
            "train_end": train_end,
            "validation_start": validation_start,
            "validation_end": validation_end,
            "test_start": test_start,
            "test_end": test_end,
            "rows_train": len(self.train),
            "rows_validation": len(self.validation),
            "rows_test": len(self.test),
            "warmup_rows_dropped": ds.warmup_rows,
            "validation_fraction": s.training.validation_fraction,
            "test_fraction": s.training.test_fraction,
            "walk_forward_folds": s.training.walk_forward_folds,
            "seed": s.training.seed,
            "promotion_margin": s.training.promotion_margin,
        }

    def _metrics(self, result: ModelResult, extra: dict[str, float]) -> dict[str, float]:
        metrics = {f"test_{k}": v for k, v in (result.test | ratios(result.test, self.baseline_test)).items()}
        metrics |= {
            f"val_{k}": v for k, v in (result.validation | ratios(result.validation, self.baseline_validation)).items()
        }
        metrics |= {f"baseline_test_{k}": self.baseline_test[k] for k in METRICS}
        metrics |= {"walk_forward_mae_ratio_mean": result.walk_forward_mean, "fit_seconds": result.fit_seconds, **extra}
        return {k: v for k, v in metrics.items() if np.isfinite(v)}

    def _log_plots(self, model: PriceModel, predicted: np.ndarray) -> None:
        times = self.test[EVENT_TIMESTAMP]
        actual = self.test["target_close"].to_numpy(dtype=float)
        title = f"{self.dataset.pair} {model.model_type}"
        current = self.test["close"].to_numpy(dtype=float)
        mlflow.log_figure(
            plots.prediction_vs_actual(times, current, actual, predicted, title), "plots/prediction_vs_actual.png"
        )
        mlflow.log_figure(plots.residuals_over_time(times, actual - predicted, title), "plots/residuals.png")
        importance = model.feature_importance()
        if importance is not None:
            mlflow.log_figure(plots.feature_importance(importance, title), "plots/feature_importance.png")

    def _champion_mae(self) -> tuple[float | None, str, str | None]:
        """The current champion's test MAE on this test period: (mae or None, label, error or None)."""
        current = champion_version(self.registry, self.name)
        if current is None:
            return None, "", None
        label = f"champion v{current.version}"
        features = self.test[list(self.dataset.features)].reset_index(drop=True)
        try:
            predicted = predict_with_alias(self.name, CHAMPION, features)
        except Exception as exc:  # noqa: BLE001 - any failure to score the champion blocks promotion
            return None, label, f"{type(exc).__name__}: {exc}"
        return frame_metrics(self.test, predicted)["mae"], label, None

    def _promote(self, candidates: list[ModelResult]) -> None:
        """Judge each registered candidate in turn; a promoted one is the champion the next must beat."""
        if not candidates:
            return
        champion_mae, label, error = self._champion_mae()
        for candidate in candidates:
            version = candidate.version
            assert version is not None, "only registered models are candidates"
            if error is not None:
                promote, reason = False, f"refused: {label} could not be scored on this test period ({error})"
            else:
                promote, reason = decide_promotion(
                    candidate.test["mae"],
                    self.baseline_test["mae"],
                    champion_mae,
                    self.settings.training.promotion_margin,
                    label or "the champion",
                )
            if promote:
                self.registry.set_registered_model_alias(self.name, CHAMPION, version)
                champion_mae, label = candidate.test["mae"], f"champion v{version}"
            candidate.promoted, candidate.promotion = promote, reason
            self.registry.set_tag(candidate.run_id, "promotion", reason)
            self.registry.set_model_version_tag(self.name, version, "promotion", reason)
            logger.info("%s v%s (%s): %s", self.name, version, candidate.model_type, reason)


def train_pair(
    settings: Settings,
    pair: str,
    options: TrainingOptions,
    tracking_uri: str | None,
    store: FeatureStore | None = None,
) -> PairResult:
    """Build the dataset of `pair`, train the chosen models and register them under one experiment (no `tracking_uri`:
    train only, as a torchrun rank other than 0 does)."""
    dataset = build_dataset(settings, pair, options.interval, options.horizon_minutes, store)
    if tracking_uri is None:
        return PairTrainer(settings, dataset, options, None).run()
    # The registry is the tracking server's; an earlier set_registry_uri in the process must not redirect it.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(registered_model_name(pair, options.horizon_minutes))
    return PairTrainer(settings, dataset, options, MlflowClient(tracking_uri, registry_uri=tracking_uri)).run()
