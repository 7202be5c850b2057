"""Simulate trading on a logged model's test period and log the result to MLflow under that model's run.

The model is loaded from its run (``runs:/<id>/model``), the pair's (or
book's) dataset is rebuilt from the offline store exactly as training built
it, and the decisions are taken on the run's test period only (its
``test_start`` and ``test_end`` parameters): periods the model was not fitted
or tuned on.
Sequence models get the whole history as input, so the first test rows
have their full window of earlier candles. Like the CLI, this command sits
above both model families: it imports the action family only for an action run.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from feast import FeatureStore
from mlflow import MlflowClient

from coinflow.contracts import PREDICTED_RETURN
from coinflow.settings import Settings
from feature_repo.names import EVENT_TIMESTAMP
from training_pipeline.dataset import build_dataset
from training_pipeline.simulation import Costs, Market, Outcome, benchmarks, equity_curves, regression_actions, simulate


@dataclass(frozen=True)
class SimulationReport:
    run_id: str
    simulation_run_id: str
    model: str
    pair: str
    start: pd.Timestamp
    end: pd.Timestamp
    outcomes: list[Outcome]


def test_period(frame: pd.DataFrame, start: str, end: str) -> pd.Series:
    """Which rows of a dataset fall in the logged test period (bounds included)."""
    times = frame[EVENT_TIMESTAMP]
    return (times >= pd.Timestamp(start)) & (times <= pd.Timestamp(end))


def _regression_outcomes(
    settings: Settings, run, threshold: float, passive: bool, store: FeatureStore | None
) -> tuple[str, pd.DataFrame, list[Outcome], dict]:
    """A price model's thresholded decisions, candle by candle, on its test period."""
    params = run.data.params
    missing = {"pair", "interval", "horizon_minutes", "features", "test_start", "test_end"} - set(params)
    if missing:
        raise ValueError(f"run {run.info.run_id} lacks the parameters {sorted(missing)}: it was not logged by `train`")
    dataset = build_dataset(settings, params["pair"], params["interval"], int(params["horizon_minutes"]), store)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    frame = dataset.frame
    predicted = model.predict(frame[params["features"].split(",")].reset_index(drop=True))[PREDICTED_RETURN]
    in_test = test_period(frame, params["test_start"], params["test_end"]).to_numpy()
    if not in_test.any():
        raise ValueError(
            f"no rows of {params['pair']} in the run's test period {params['test_start']} to {params['test_end']}"
        )
    test = frame[in_test].reset_index(drop=True)
    market = Market.from_candles(test)
    costs = Costs(settings.simulation.taker_fee, settings.simulation.maker_fee, settings.simulation.touch_fill)
    actions = regression_actions(np.asarray(predicted)[in_test], threshold, passive)
    strategy = simulate(
        market, actions, costs, settings.simulation.initial_quote, name=run.data.tags.get("model_type", "model")
    )
    outcomes = [strategy, *benchmarks(market, costs, settings.simulation.initial_quote)]
    described = {
        "threshold": threshold,
        "orders": "passive" if passive else "market",
        "decision_every": f"candle ({params['interval']})",
        "tick": market.tick,
    }
    return params["pair"], test, outcomes, described


def _action_outcomes(
    settings: Settings, run, store: FeatureStore | None
) -> tuple[str, pd.DataFrame, list[Outcome], dict]:
    """An action model's decisions, every book sample, on its test period."""
    from training_pipeline.action.dataset import build_book_dataset  # the action family (torch) only for action runs
    from training_pipeline.action.model import ACTION_NAMES, DECISION
    from training_pipeline.action.train import simulate_decisions

    params = run.data.params
    missing = {"product", "test_start", "test_end"} - set(params)
    if missing:
        raise ValueError(f"run {run.info.run_id} lacks the parameters {sorted(missing)}: it was not logged by `train`")
    dataset = build_book_dataset(settings, params["product"], store)
    in_test = test_period(dataset.frame, params["test_start"], params["test_end"]).to_numpy()
    if not in_test.any():
        raise ValueError(
            f"no samples of {params['product']} in the run's test period {params['test_start']} to {params['test_end']}"
        )
    test = dataset.frame[in_test].reset_index(drop=True)
    chosen = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(test[dataset.model_columns])[DECISION]
    actions = np.array([ACTION_NAMES.index(a) for a in chosen], dtype=np.int64)
    outcomes = simulate_decisions(test, actions, dataset, settings, "action model")
    described = {
        "orders": "the model's five actions",
        "decision_every": f"book sample ({dataset.step.total_seconds():g} s)",
        "tick": dataset.costs.tick,
    }
    return params["product"], test, outcomes, described


def simulate_run(
    settings: Settings,
    run_id: str,
    tracking_uri: str,
    threshold: float,
    passive: bool,
    store: FeatureStore | None = None,
) -> SimulationReport:
    """Simulate the model of `run_id` on its test period and log a nested ``simulation`` run.

    Price models trade their thresholded forecast candle by candle (`threshold`,
    `passive`); the order-book action model takes its chosen action at every
    book sample.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    run = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_run(run_id)
    model_type = run.data.tags.get("model_type", "model")
    if model_type == "action":
        pair, test, outcomes, described = _action_outcomes(settings, run, store)
    else:
        pair, test, outcomes, described = _regression_outcomes(settings, run, threshold, passive, store)
    times = test[EVENT_TIMESTAMP]
    with mlflow.start_run(
        experiment_id=run.info.experiment_id,
        run_name=f"simulation {model_type}",
        tags={"mlflow.parentRunId": run_id, "model_run_id": run_id, "pair": pair},
    ) as sim:
        mlflow.log_params(
            {
                "model_run_id": run_id,
                **described,
                "taker_fee": settings.simulation.taker_fee,
                "maker_fee": settings.simulation.maker_fee,
                "touch_fill": settings.simulation.touch_fill,
                "initial_quote": settings.simulation.initial_quote,
                "start": times.iloc[0].isoformat(),
                "end": times.iloc[-1].isoformat(),
            }
        )
        for prefix, outcome in zip(("sim", "buy_and_hold", "noop"), outcomes, strict=True):
            mlflow.log_metrics({f"{prefix}_{k}": v for k, v in outcome.metrics().items() if np.isfinite(v)})
        title = f"{pair} {model_type}: simulated trading on the test period"
        mlflow.log_figure(equity_curves(times.reset_index(drop=True), outcomes, title), "plots/equity_curve.png")
    return SimulationReport(run_id, sim.info.run_id, model_type, pair, times.iloc[0], times.iloc[-1], outcomes)
