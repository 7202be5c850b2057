"""Streaming predictions and their live evaluation through the real broker, the offline store and MLflow.

Real one-minute candles with their indicators go onto the features topic as
the feature pipeline writes them; the prediction app scores each complete row
with the registered champion, and the evaluation app joins the predictions
with the candles that realise them and logs live metrics to MLflow.
"""

from __future__ import annotations

import json
import threading
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Producer
from mlflow import MlflowClient

from coinflow import parquet_writer
from coinflow.contracts import registered_model_name
from coinflow.feature_store import feature_store
from coinflow.forecast_metrics import price_metrics
from coinflow.services import ensure_broker
from coinflow.settings import Settings
from coinflow.streaming import new_application, pipeline_topics
from inference_pipeline.evaluation import LIVE_TAG, LiveMetricsSink, read_live_metrics
from inference_pipeline.model_store import ModelStore
from inference_pipeline.streaming import (
    PredictionsSink,
    StreamPredictor,
    build_live_evaluation,
    build_prediction_stream,
    predictions_dataset,
    predictions_topic,
)
from tests.support.inference import (
    FEATURES,
    MINUTE_MS,
    feature_rows,
    fit_xgboost,
    register,
)

pytestmark = pytest.mark.integration

PAIR = "BTC/USDC"
STREAMED = 150
WATCHDOG_S = 120


def run_until(app, sink_class, count: int, *args):
    """Run `app` with a sink of `sink_class` that stops it once `count` records were written (or the watchdog fires)."""

    class Stopping(sink_class):
        written = 0

        def write(self, batch) -> None:
            super().write(batch)
            Stopping.written += batch.size
            if Stopping.written >= count:
                app.stop()

    return Stopping(*args)


def test_stream_predictions_and_live_evaluation(settings: Settings, tracking_uri: str, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tag = uuid.uuid4().hex[:8]
    settings = settings.override(
        predictions_topic=f"predictions-{tag}",
        prediction_consumer_group=f"predict-{tag}",
        evaluation_consumer_group=f"evaluate-{tag}",
        mlflow_tracking_uri=tracking_uri,
        serve_pairs=[PAIR],
        serve_horizons=[1],
        evaluation_log_interval_s=0.0,
    )
    history = feature_rows(PAIR, 800)
    version = register(tracking_uri, PAIR, 1, fit_xgboost(history[:-STREAMED]), history)
    # The same last candles with indicators started afresh: the first rows are still warming up.
    streamed = feature_rows(PAIR, STREAMED)
    complete = [row for row in streamed if all(row[name] is not None for name in FEATURES)]
    ends = {row["window_end_ms"] for row in streamed}
    realisable = [row for row in complete if row["window_end_ms"] + MINUTE_MS in ends]
    assert 0 < len(realisable) < len(complete) < len(streamed)

    broker = ensure_broker(settings)
    app = new_application(settings, broker, consumer_group=settings.serve.prediction_consumer_group)
    topics = pipeline_topics(app, settings)
    predictions = predictions_topic(app, settings)
    producer = Producer({"bootstrap.servers": broker.address})
    for row in streamed:
        producer.produce(
            settings.topics.features, key=PAIR.encode(), value=json.dumps(row).encode(), timestamp=row["window_end_ms"]
        )
    producer.flush(10)

    models = ModelStore.from_settings(settings, tracking_uri, feature_store(settings).get_feature_service)
    models.refresh()
    predictor = StreamPredictor(models, settings.serve.horizons, settings.stream.online_window_length)
    sink = run_until(app, PredictionsSink, len(complete), settings)
    build_prediction_stream(app, topics, predictions, predictor, sink)
    watchdog = threading.Timer(WATCHDOG_S, app.stop)
    watchdog.start()
    app.run()
    watchdog.cancel()

    assert sink.rows_written == len(complete)
    assert predictor.rejects.counts == {"incomplete_features": len(streamed) - len(complete)}
    stored = (
        parquet_writer.read_rows(predictions_dataset(settings, 1)).sort_values("event_timestamp").reset_index(drop=True)
    )
    assert list(stored["event_timestamp"]) == [pd.Timestamp(r["window_end_ms"], unit="ms", tz="UTC") for r in complete]
    assert set(stored["model_version"]) == {version} and set(stored["model_name"]) == {registered_model_name(PAIR, 1)}
    assert (stored["target_timestamp"] - stored["event_timestamp"] == pd.Timedelta(minutes=1)).all()
    mlflow.set_registry_uri(tracking_uri)
    reference = mlflow.pyfunc.load_model(f"models:/{registered_model_name(PAIR, 1)}/{version}")
    expected = reference.predict(pd.DataFrame([{n: r[n] for n in FEATURES} for r in complete]))
    np.testing.assert_allclose(stored["predicted_price"], expected["predicted_price"], rtol=1e-12)
    np.testing.assert_allclose(stored["current_price"], [r["close"] for r in complete], rtol=0)

    evaluation = new_application(settings, broker, consumer_group=settings.serve.evaluation_consumer_group)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    scores = run_until(evaluation, LiveMetricsSink, len(realisable), client, settings.serve.evaluation_log_interval_s)
    build_live_evaluation(
        evaluation, pipeline_topics(evaluation, settings), predictions_topic(evaluation, settings), settings, scores
    )
    watchdog = threading.Timer(WATCHDOG_S, evaluation.stop)
    watchdog.start()
    evaluation.run()
    watchdog.cancel()
    scores.publish(force=True)

    assert scores.written == len(realisable)
    closes = {row["window_end_ms"]: row["close"] for row in streamed}
    by_time = stored.set_index("event_timestamp")
    times = [pd.Timestamp(r["window_end_ms"], unit="ms", tz="UTC") for r in realisable]
    current = by_time.loc[times, "current_price"].to_numpy()
    predicted = by_time.loc[times, "predicted_price"].to_numpy()
    actual = np.array([closes[r["window_end_ms"] + MINUTE_MS] for r in realisable])
    expected_metrics = price_metrics(current, actual, predicted)
    baseline = price_metrics(current, actual, current)

    runs = client.search_runs(
        [client.get_experiment_by_name(registered_model_name(PAIR, 1)).experiment_id],
        filter_string=f"tags.{LIVE_TAG} = 'true'",
    )
    assert len(runs) == 1 and runs[0].info.run_name == f"live-v{version}"
    logged = runs[0].data.metrics
    assert logged["live_evaluated"] == len(realisable)
    assert logged["live_mae"] == pytest.approx(expected_metrics["mae"], rel=1e-9)
    assert logged["live_baseline_mae"] == pytest.approx(baseline["mae"], rel=1e-9)
    assert logged["live_directional_accuracy"] == pytest.approx(expected_metrics["directional_accuracy"], rel=1e-9)
    # What the API reads back for its /metrics.
    assert read_live_metrics(client, registered_model_name(PAIR, 1), version) == pytest.approx(logged)
