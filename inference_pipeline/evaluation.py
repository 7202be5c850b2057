"""Live evaluation: how good the streamed predictions turn out once the realised prices arrive.

Per registered model version, running sums give the MAE of the predicted
price, the MAE of the last-price baseline on the same predictions (their
ratio is the live counterpart of the training table's ratio) and the
directional accuracy, defined as in training (`coinflow.forecast_metrics`).
Scores live in the stream's state; `LiveMetricsSink` exposes them as
Prometheus gauges and logs them to MLflow, in one run per model version
(``live-v<N>``, tagged ``live_evaluation``) in the model's experiment, at
most every ``evaluation_log_interval_s``. The API reads the latest values
back for its /metrics.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from prometheus_client import Counter, Gauge
from quixstreams.sinks import BatchingSink, SinkBatch

from coinflow.forecast_metrics import directional_accuracy
from coinflow.redact import redact

logger = logging.getLogger(__name__)

LIVE_METRICS = ("live_mae", "live_baseline_mae", "live_mae_ratio", "live_directional_accuracy", "live_evaluated")
LIVE_TAG = "live_evaluation"
MODEL_TAG = "registered_model"
VERSION_TAG = "model_version"

DUPLICATES = Counter(
    "coinflow_live_duplicate_predictions", "Predictions scored before (re-delivered) and dropped.", ["model", "version"]
)
LIVE_GAUGE = Gauge(
    "coinflow_live_metric",
    "Live evaluation per model version: mae, baseline_mae, mae_ratio, directional_accuracy, evaluated.",
    ["model", "version", "metric"],
)


def new_score() -> dict[str, float]:
    """Running sums of one model version on one pair (JSON-serialisable, for the stream state), and the target time
    of the last prediction scored."""
    return {
        "n": 0,
        "abs_error": 0.0,
        "baseline_abs_error": 0.0,
        "moves": 0,
        "direction_score": 0.0,
        "last_target_ms": -1,
    }


def already_scored(score: dict[str, float], target_time_ms: int) -> bool:
    """Whether a prediction is one scored before: a model version serves one pair and horizon, so its targets only
    move forward, and a target not after the last scored one is a re-delivered message (or a re-delivered candle
    joining it again), which must not count twice."""
    return target_time_ms <= score.get("last_target_ms", -1)


def update_score(
    score: dict[str, float], current: float, actual: float, predicted: float, target_time_ms: int
) -> dict[str, float]:
    """The sums after one realised prediction (a new dict)."""
    score = dict(score)
    score["last_target_ms"] = target_time_ms
    score["n"] += 1
    score["abs_error"] += abs(actual - predicted)
    score["baseline_abs_error"] += abs(actual - current)
    direction = directional_accuracy(np.array([current]), np.array([actual]), np.array([predicted]))
    if not math.isnan(direction):
        score["moves"] += 1
        score["direction_score"] += direction
    return score


def score_metrics(score: dict[str, float]) -> dict[str, float]:
    """Live metrics from the sums (NaN where undefined: no rows, or no move yet)."""
    n = score["n"]
    mae = score["abs_error"] / n if n else math.nan
    baseline = score["baseline_abs_error"] / n if n else math.nan
    return {
        "live_mae": mae,
        "live_baseline_mae": baseline,
        "live_mae_ratio": mae / baseline if n and baseline else math.nan,
        "live_directional_accuracy": score["direction_score"] / score["moves"] if score["moves"] else math.nan,
        "live_evaluated": float(n),
    }


def realised(prediction: dict[str, Any], candle: dict[str, Any]) -> dict[str, Any] | None:
    """A prediction joined with the candle that closed at its target time (None if the candle is another interval's)."""
    if candle.get("interval") != prediction.get("interval"):
        return None
    return {**prediction, "realised_price": float(candle["close"])}


def score_step(record: dict[str, Any], state) -> dict[str, Any] | None:
    """Stateful step (keyed by pair): fold one realised prediction into its model version's score (None for a
    prediction scored before, which is counted and dropped)."""
    key = f"score:{record['model_name']}:{record['model_version']}"
    score = state.get(key) or new_score()
    if already_scored(score, record["target_time_ms"]):
        DUPLICATES.labels(record["model_name"], record["model_version"]).inc()
        return None
    score = update_score(
        score, record["current_price"], record["realised_price"], record["predicted_price"], record["target_time_ms"]
    )
    state.set(key, score)
    return {
        "model_name": record["model_name"],
        "model_version": record["model_version"],
        "pair": record["pair"],
        "horizon_minutes": record["horizon_minutes"],
        "target_time_ms": record["target_time_ms"],
        **score_metrics(score),
    }


def _live_filter(name: str, version: str) -> str:
    return f"tags.{LIVE_TAG} = 'true' and tags.{MODEL_TAG} = '{name}' and tags.{VERSION_TAG} = '{version}'"


def find_live_run(client: MlflowClient, experiment_id: str, name: str, version: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=_live_filter(name, version), max_results=1)
    return runs[0].info.run_id if runs else None


def _source_run(client: MlflowClient, name: str, version: str) -> Run:
    """The run that logged a model version: its live runs go into the same experiment."""
    run_id = client.get_model_version(name, version).run_id
    if run_id is None:
        raise ValueError(f"{name} v{version} was registered without a run")
    return client.get_run(run_id)


def read_live_metrics(client: MlflowClient, name: str, version: str) -> dict[str, float]:
    """The latest live metrics logged for a model version ({} when none yet)."""
    try:
        experiment_id = _source_run(client, name, version).info.experiment_id
        runs = client.search_runs([experiment_id], filter_string=_live_filter(name, version), max_results=1)
    except Exception as exc:  # noqa: BLE001 - metrics are best effort; serving goes on without them
        logger.debug("Live metrics of %s v%s unavailable: %s", name, version, redact(exc))
        return {}
    return {k: v for k, v in runs[0].data.metrics.items() if k.startswith("live_")} if runs else {}


class LiveMetricsSink(BatchingSink):
    """Publishes the newest score of each model version: Prometheus gauges at once, MLflow at most every interval.

    MLflow is best effort: a failed log is retried at the next interval and never stops the stream.
    """

    def __init__(self, client: MlflowClient, log_interval_s: float) -> None:
        super().__init__()
        self._client = client
        self._log_interval_s = log_interval_s
        self._runs: dict[tuple[str, str], str] = {}
        self._logged_at: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], dict[str, Any]] = {}

    def _run_id(self, name: str, version: str) -> str:
        key = (name, version)
        if key not in self._runs:
            source = _source_run(self._client, name, version)
            experiment_id = source.info.experiment_id
            run_id = find_live_run(self._client, experiment_id, name, version)
            if run_id is None:
                run_id = self._client.create_run(
                    experiment_id,
                    run_name=f"live-v{version}",
                    tags={
                        LIVE_TAG: "true",
                        MODEL_TAG: name,
                        VERSION_TAG: version,
                        "source_run": source.info.run_id,
                    },
                ).info.run_id
            self._runs[key] = run_id
        return self._runs[key]

    def _log(self, name: str, version: str, record: dict[str, Any]) -> bool:
        """Log one version's metrics to its live run (step: predictions evaluated); False if MLflow failed."""
        now_ms = int(time.time() * 1000)
        step = int(record["live_evaluated"])
        metrics = [Metric(k, float(record[k]), now_ms, step) for k in LIVE_METRICS if not math.isnan(record[k])]
        try:
            self._client.log_batch(self._run_id(name, version), metrics=metrics)
        except Exception as exc:  # noqa: BLE001 - the registry being down must not stop the evaluation
            logger.warning(
                "Live metrics of %s v%s not logged to MLflow (retried later): %s", name, version, redact(exc)
            )
            return False
        return True

    def publish(self, force: bool = False) -> None:
        """Log the versions scored since their last log whose interval has passed (all of them when `force`)."""
        now = time.monotonic()
        for key, record in list(self._unlogged.items()):
            due = force or now - self._logged_at.get(key, -math.inf) >= self._log_interval_s
            if due and self._log(*key, record):
                self._logged_at[key] = now
                del self._unlogged[key]

    def write(self, batch: SinkBatch) -> None:
        for item in batch:
            record = item.value
            key = (record["model_name"], record["model_version"])
            self._unlogged[key] = record
            for metric in LIVE_METRICS:
                LIVE_GAUGE.labels(*key, metric.removeprefix("live_")).set(record[metric])
        self.publish()
