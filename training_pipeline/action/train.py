"""One training run of the order-book action model of one book: dataset, fit, evaluation, simulation, MLflow.

The book's labelled samples are split by time (train, validation for early
stopping, and the most recent for test, with a purge of the horizon between
them). On the test period the model's decisions are scored against the
labels (confusion matrix, accuracy, value of the chosen actions) and traded
in the simulator every 4 s against buy-and-hold and no-op. The model is
logged as a pyfunc, registered as ``action-<PRODUCT>`` with the alias
``challenger``, and becomes ``champion`` only when its simulated PnL beats
no-op and the current champion re-scored on the same test period.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from feast import FeatureStore
from mlflow import MlflowClient

import training_pipeline
from coinflow.contracts import CHAMPION, action_model_name
from coinflow.settings import Settings
from feature_repo.names import EVENT_TIMESTAMP
from training_pipeline import plots
from training_pipeline.action.dataset import BEST_ACTION, BookDataset, build_book_dataset
from training_pipeline.action.labels import confusion_matrix
from training_pipeline.action.model import ACTION_NAMES, DECISION, ActionModel, decision_metrics, values_bps
from training_pipeline.action.serving import log_action_pyfunc
from training_pipeline.deep.config import DeepConfig
from training_pipeline.simulation import Costs, Market, Outcome, benchmarks, equity_curves, simulate
from training_pipeline.splits import Split, time_split
from training_pipeline.tracking import (
    EXAMPLE_ROWS,
    champion_version,
    decide_pnl_promotion,
    git_commit,
    register_challenger,
)

logger = logging.getLogger(__name__)


@dataclass
class ActionResult:
    """What the action model did on one book's test period, and what became of it in the registry."""

    name: str
    dataset: BookDataset
    split: Split
    metrics: dict[str, float]
    confusion: np.ndarray
    outcomes: list[Outcome]
    seconds: float
    run_id: str = ""
    version: str | None = None
    promoted: bool = False
    promotion: str = ""
    summary: dict = field(default_factory=dict)


def split_book(dataset: BookDataset, settings: Settings) -> Split:
    """Time split of the samples; a sample's label is known ``horizon`` after it, which the purge respects."""
    times = dataset.frame[EVENT_TIMESTAMP]
    return time_split(
        times,
        times + dataset.step * dataset.horizon_steps,
        settings.training.validation_fraction,
        settings.training.test_fraction,
    )


def simulate_decisions(
    test: pd.DataFrame, actions: np.ndarray, dataset: BookDataset, settings: Settings, name: str
) -> list[Outcome]:
    """The decisions traded every sample of the test period, then buy-and-hold and no-op on the same market."""
    market = Market.from_book(test, dataset.costs.tick)
    costs = Costs(settings.simulation.taker_fee, settings.simulation.maker_fee, settings.simulation.touch_fill)
    strategy = simulate(market, actions, costs, settings.simulation.initial_quote, name=name)
    return [strategy, *benchmarks(market, costs, settings.simulation.initial_quote)]


def _champion_pnl(
    client: MlflowClient, name: str, test: pd.DataFrame, dataset: BookDataset, settings: Settings
) -> tuple[float | None, str, str | None]:
    """The current champion's simulated PnL on this test period: (pnl or None, label, error or None)."""
    current = champion_version(client, name)
    if current is None:
        return None, "", None
    label = f"champion v{current.version}"
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
        chosen = loaded.predict(test[dataset.model_columns].reset_index(drop=True))[DECISION]
        actions = np.array([ACTION_NAMES.index(a) for a in chosen], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any failure to score the champion blocks promotion
        return None, label, f"{type(exc).__name__}: {exc}"
    return simulate_decisions(test, actions, dataset, settings, label)[0].pnl, label, None


def train_action(
    settings: Settings, product: str, tracking_uri: str, store: FeatureStore | None = None
) -> ActionResult:
    """Build the dataset of one book, train the action model, evaluate, simulate, log, register and judge it."""
    dataset = build_book_dataset(settings, product, store)
    split = split_book(dataset, settings)
    frame = dataset.frame
    train, validation, test = (
        frame.iloc[rows].reset_index(drop=True) for rows in (split.train, split.validation, split.test)
    )
    model = ActionModel(dataset.features, asdict(DeepConfig.from_settings(settings)), settings.action.loss)
    started = time.perf_counter()
    model.fit(train, validation)
    seconds = time.perf_counter() - started
    chosen = model.decide(test)
    values = values_bps(test)
    metrics = decision_metrics(chosen, values)
    confusion = confusion_matrix(chosen, values)
    outcomes = simulate_decisions(test, chosen, dataset, settings, f"action model ({settings.action.loss})")
    name = action_model_name(product)
    result = ActionResult(name, dataset, split, metrics, confusion, outcomes, seconds, summary=model.summary)
    logger.info(
        "%s: test accuracy %.3f, chosen value %.3f bps (oracle %.3f, no-op %.3f), simulated PnL %.2f",
        product,
        metrics["accuracy"],
        metrics["mean_value_bps"],
        metrics["oracle_value_bps"],
        metrics["noop_value_bps"],
        outcomes[0].pnl,
    )

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(name)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    champion_pnl, label, error = _champion_pnl(client, name, test, dataset, settings)
    commit, dirty = git_commit(Path(training_pipeline.__file__).resolve().parents[1])
    with mlflow.start_run(run_name=f"action {settings.action.loss}") as run:
        result.run_id = run.info.run_id
        mlflow.set_tags(
            {
                "product": product,
                "model_type": model.model_type,
                "feature_service": dataset.feature_service,
                "registered_model": name,
                "dataset_hash": dataset.fingerprint(),
                "mlflow.source.git.commit": commit,
                "git_dirty": str(dirty).lower(),
            }
        )
        mlflow.log_params(
            {
                **_params(dataset, split, settings),
                **{f"model_{k}": v for k, v in model.params().items()},
                "fit_seconds": round(seconds, 3),
            }
        )
        test_metrics = {f"test_{k}": v for k, v in metrics.items()}
        for prefix, outcome in zip(("sim", "buy_and_hold", "noop"), outcomes, strict=True):
            test_metrics |= {f"{prefix}_{k}": v for k, v in outcome.metrics().items()}
        mlflow.log_metrics({k: v for k, v in test_metrics.items() if np.isfinite(v)})
        for record in model.training_curve():
            mlflow.log_metrics({f"epoch_{k}": v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))
        mlflow.log_dict(
            {
                "labels": list(ACTION_NAMES),
                "rows": "optimal action",
                "columns": "predicted action",
                "counts": confusion.tolist(),
            },
            "evaluation/confusion_matrix.json",
        )
        mlflow.log_figure(
            plots.confusion_matrix(confusion, list(ACTION_NAMES), f"{product}: test period"),
            "plots/confusion_matrix.png",
        )
        mlflow.log_figure(
            equity_curves(
                test[EVENT_TIMESTAMP],
                outcomes,
                f"{product} action model: simulated trading every "
                f"{dataset.step.total_seconds():g} s on the test period",
            ),
            "plots/equity_curve.png",
        )
        example = test[dataset.model_columns].head(EXAMPLE_ROWS).reset_index(drop=True)
        info = log_action_pyfunc(model, example, name)
    result.version = register_challenger(client, name, info, result.run_id)
    if error is not None:
        promote, reason = False, f"refused: {label} could not be scored on this test period ({error})"
    else:
        promote, reason = decide_pnl_promotion(outcomes[0].pnl, champion_pnl, label or "the champion")
    if promote:
        client.set_registered_model_alias(name, CHAMPION, result.version)
    result.promoted, result.promotion = promote, reason
    client.set_tag(result.run_id, "promotion", reason)
    client.set_model_version_tag(name, result.version, "promotion", reason)
    logger.info("%s v%s: %s", name, result.version, reason)
    return result


def _params(dataset: BookDataset, split: Split, settings: Settings) -> dict[str, object]:
    times = dataset.frame[EVENT_TIMESTAMP]

    def period(rows: np.ndarray) -> tuple[str, str]:
        return times.iloc[rows[0]].isoformat(), times.iloc[rows[-1]].isoformat()

    (train_start, train_end), (validation_start, validation_end), (test_start, test_end) = (
        period(split.train),
        period(split.validation),
        period(split.test),
    )
    labels = dataset.frame[BEST_ACTION].value_counts(normalize=True)
    return {
        "product": dataset.product,
        "feature_service": dataset.feature_service,
        "features": ",".join(dataset.features),
        "step_seconds": dataset.step.total_seconds(),
        "horizon_steps": dataset.horizon_steps,
        "horizon_seconds": dataset.step.total_seconds() * dataset.horizon_steps,
        "segments": dataset.segments,
        "taker_fee": dataset.costs.taker_fee,
        "maker_fee": dataset.costs.maker_fee,
        "tick": dataset.costs.tick,
        "touch_fill": settings.simulation.touch_fill,
        "initial_quote": settings.simulation.initial_quote,
        "data_start": dataset.start.isoformat(),
        "data_end": dataset.end.isoformat(),
        "dataset_hash": dataset.fingerprint(),
        "train_start": train_start,
        "train_end": train_end,
        "validation_start": validation_start,
        "validation_end": validation_end,
        "test_start": test_start,
        "test_end": test_end,
        "rows_train": len(split.train),
        "rows_validation": len(split.validation),
        "rows_test": len(split.test),
        "seed": settings.training.seed,
        **{f"label_share_{ACTION_NAMES[int(a)]}": round(float(share), 4) for a, share in labels.items()},
    }
