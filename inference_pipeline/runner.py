"""Run the streaming inference apps: services, registry, models, the Quix application, the sinks."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from threadpoolctl import threadpool_limits

from coinflow import services
from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.streaming import new_application, pipeline_topics
from inference_pipeline.evaluation import LiveMetricsSink
from inference_pipeline.model_store import ModelStore
from inference_pipeline.streaming import (
    PredictionsSink,
    StreamPredictor,
    build_live_evaluation,
    build_prediction_stream,
    predictions_topic,
)


def limit_native_threads() -> None:
    """One thread for OpenMP and BLAS: a model scoring one row gains nothing from more, and on a small shared
    machine XGBoost's default of every core makes a one-row prediction several times slower."""
    threadpool_limits(1)


@dataclass
class StreamSummary:
    predictions: int
    rejects: Rejects


def run_prediction_stream(settings: Settings, tracking_uri: str) -> StreamSummary:
    """Predict every feature row of the served pairs until stopped (SIGINT/SIGTERM)."""
    broker = services.ensure_broker(settings)
    limit_native_threads()
    models = ModelStore.from_settings(settings, tracking_uri, feature_store(settings).get_feature_service)
    models.refresh()
    models.start(refresh_first=False)
    app = new_application(settings, broker, consumer_group=settings.serve.prediction_consumer_group)
    predictor = StreamPredictor(models, settings.serve.horizons, settings.stream.online_window_length)
    sink = PredictionsSink(settings)
    build_prediction_stream(app, pipeline_topics(app, settings), predictions_topic(app, settings), predictor, sink)
    try:
        app.run()
    finally:
        models.stop()
    return StreamSummary(sink.rows_written, predictor.rejects)


def run_live_evaluation(settings: Settings, tracking_uri: str) -> None:
    """Score streamed predictions against realised prices until stopped; logs a last time on the way out."""
    broker = services.ensure_broker(settings)
    app = new_application(settings, broker, consumer_group=settings.serve.evaluation_consumer_group)
    sink = LiveMetricsSink(
        MlflowClient(tracking_uri, registry_uri=tracking_uri), settings.serve.evaluation_log_interval_s
    )
    build_live_evaluation(app, pipeline_topics(app, settings), predictions_topic(app, settings), settings, sink)
    try:
        app.run()
    finally:
        sink.publish(force=True)
