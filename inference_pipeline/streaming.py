"""Streaming predictions and their live evaluation, as two Quix Streams apps.

`predict-stream`: each feature row on the features topic (a candle and its
indicators, as the feature pipeline wrote it to Feast) is fed to the served
model of its pair for every served horizon, whose FeatureService must be the
row's interval's views; sequence models read the pair's last rows, kept in
the app's state. The prediction goes to the predictions topic and to
the offline store (Parquet ``predictions_<H>m/<PAIR>/<day>.parquet`` beside
the feature views, one row per pair and candle, idempotent like them).

`evaluate-live`: predictions, stamped with their target time, are joined
with the candle that closes at exactly that time (`join_interval` with no
slack: the same label as in training; a missing candle leaves the prediction
unscored), and each model version's running score goes to `LiveMetricsSink`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd
import pyarrow as pa
from quixstreams import Application
from quixstreams.models.topics import Topic
from quixstreams.sinks import BaseSink, BatchingSink, SinkBatch
from quixstreams.state import State

from coinflow import parquet_writer
from coinflow.quality import Rejects
from coinflow.schemas import invalid_candle_reason
from coinflow.settings import Settings
from coinflow.streaming import Topics, json_topic, topic_config
from coinflow.windows import push_row
from feature_repo.names import CANDLE_FEATURES, CREATED_TIMESTAMP, ENTITY, EVENT_TIMESTAMP, indicators_view, ohlcv_view
from inference_pipeline.evaluation import realised, score_step
from inference_pipeline.model_store import ModelKey, ModelStore, ServedModel

MINUTE_MS = 60_000
WINDOWS_STATE = "windows"
PREDICTION_COLUMNS = {
    "target_timestamp": pa.timestamp("us", tz="UTC"),
    "horizon_minutes": pa.int64(),
    "current_price": pa.float64(),
    "predicted_price": pa.float64(),
    "predicted_return": pa.float64(),
    "model_name": pa.string(),
    "model_version": pa.string(),
    "prediction_id": pa.string(),
}
PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field(ENTITY, pa.string()),
        pa.field(EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC")),
        pa.field(CREATED_TIMESTAMP, pa.timestamp("us", tz="UTC")),
    ]
    + [pa.field(name, kind) for name, kind in PREDICTION_COLUMNS.items()]
)


def predictions_dataset(settings: Settings, horizon_minutes: int) -> Path:
    """Offline directory of the predictions of one horizon, beside the feature views' datasets."""
    return settings.feast.repo_path / "data" / "offline" / f"predictions_{horizon_minutes}m"


def serves_interval(model: ServedModel, interval: str) -> bool:
    """Whether a feature row of `interval` holds everything the model's FeatureService reads."""
    return set(model.views) <= {ohlcv_view(interval), indicators_view(interval)}


def prediction_record(
    model: ServedModel, row: dict[str, Any], predicted_return: float, predicted_price: float, now_ms: int
) -> dict[str, Any]:
    """The predictions-topic record of one model's forecast from one feature row."""
    feature_ms = row["window_end_ms"]
    return {
        "pair": row["pair"],
        "interval": row["interval"],
        "horizon_minutes": model.key.horizon_minutes,
        "feature_time_ms": feature_ms,
        "target_time_ms": feature_ms + model.key.horizon_minutes * MINUTE_MS,
        "current_price": float(row["close"]),
        "predicted_price": predicted_price,
        "predicted_return": predicted_return,
        "model_name": model.name,
        "model_version": model.version,
        "model_alias": model.alias,
        "prediction_id": uuid.uuid4().hex,
        "predicted_at_ms": now_ms,
    }


def _complete(rows: tuple[tuple[float | None, ...], ...]) -> TypeGuard[tuple[tuple[float, ...], ...]]:
    """Whether every value of `rows` is known."""
    return not any(v is None for r in rows for v in r)


def recent_rows(window: list[list[float | None]], model: ServedModel) -> tuple[tuple[float, ...], ...] | None:
    """The last `model.history` rows of a pair's window (`CANDLE_FEATURES` order) in the model's feature order, or
    None while the window is shorter or a value in it is still warming up."""
    if len(window) < model.history:
        return None
    columns = [CANDLE_FEATURES.index(name) for name in model.features]
    rows = tuple(tuple(values[i] for i in columns) for values in window[-model.history :])
    return rows if _complete(rows) else None


class StreamPredictor:
    """A stateful step: one feature row in, the predictions of every served model that can read it out (skips are
    counted). The pair's last rows are kept in its state, as the window of the sequence models."""

    def __init__(self, models: ModelStore, horizons: list[int], window_length: int) -> None:
        self.models = models
        self.horizons = horizons
        self.window_length = window_length
        self.rejects = Rejects("prediction-stream")
        self.pairs = {k.pair for k in models.keys}

    def __call__(self, row: dict[str, Any], state: State) -> list[dict[str, Any]]:
        reason = invalid_candle_reason(row)
        if reason is not None:
            self.rejects.reject(reason, row)
            return []
        if row["pair"] not in self.pairs:
            return []
        windows = state.get(WINDOWS_STATE) or {}
        window = windows.setdefault(row["interval"], [])
        push_row(window, row, CANDLE_FEATURES, self.window_length)
        state.set(WINDOWS_STATE, windows)
        out = []
        for horizon in self.horizons:
            model = self.models.get(ModelKey(row["pair"], horizon))
            if model is None:
                self.rejects.reject(
                    "no_model",
                    {
                        "pair": row["pair"],
                        "horizon_minutes": horizon,
                        "problem": self.models.problem(ModelKey(row["pair"], horizon)),
                    },
                )
                continue
            if not serves_interval(model, row["interval"]):
                continue
            if model.sequence:
                rows = recent_rows(window, model)
                if rows is None:
                    self.rejects.reject(
                        "incomplete_window", {"pair": row["pair"], "window_end_ms": row["window_end_ms"]}
                    )
                    continue
                predicted_return, predicted_price = model.predict_window(rows)
            else:
                values = [row.get(name) for name in model.features]
                if any(v is None for v in values):
                    self.rejects.reject(
                        "incomplete_features", {"pair": row["pair"], "window_end_ms": row["window_end_ms"]}
                    )
                    continue
                predicted_return, predicted_price = model.predict_row(tuple(values))
            out.append(prediction_record(model, row, predicted_return, predicted_price, int(time.time() * 1000)))
        return out


def prediction_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Prediction records as offline-store rows (event time: when the features became known)."""
    frame = pd.DataFrame.from_records(records)
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame["feature_time_ms"], unit="ms", utc=True)
    frame[CREATED_TIMESTAMP] = pd.to_datetime(frame["predicted_at_ms"], unit="ms", utc=True)
    frame["target_timestamp"] = pd.to_datetime(frame["target_time_ms"], unit="ms", utc=True)
    return frame[PREDICTIONS_SCHEMA.names]


class PredictionsSink(BatchingSink):
    """Merges each checkpoint's predictions into the offline store (idempotent per pair, candle and horizon)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings
        self.rows_written = 0

    def write(self, batch: SinkBatch) -> None:
        frame = prediction_frame([item.value for item in batch])
        for horizon, group in frame.groupby("horizon_minutes"):
            parquet_writer.write_rows(predictions_dataset(self._settings, int(horizon)), group, PREDICTIONS_SCHEMA)
        self.rows_written += len(frame)


def predictions_topic(app: Application, settings: Settings) -> Topic:
    return json_topic(app, settings.topics.predictions, topic_config(settings))


def build_prediction_stream(
    app: Application, topics: Topics, predictions: Topic, predictor: Callable, sink: BaseSink
) -> None:
    """features topic -> predictions (topic and offline store)."""
    sdf = app.dataframe(topics.features).apply(predictor, stateful=True, expand=True)
    sdf.sink(sink)
    sdf.to_topic(predictions)


def build_live_evaluation(
    app: Application, topics: Topics, predictions: Topic, settings: Settings, sink: BaseSink
) -> None:
    """predictions x realised candles (exact target time, same pair and interval) -> running scores -> sink."""
    predicted = app.dataframe(predictions).set_timestamp(lambda value, key, ts, headers: value["target_time_ms"])
    candles = app.dataframe(topics.features).filter(lambda row: invalid_candle_reason(row) is None)
    candles = candles.set_timestamp(lambda value, key, ts, headers: value["window_end_ms"])
    joined = predicted.join_interval(
        candles, how="inner", on_merge=realised, grace_ms=settings.serve.evaluation_grace_s * 1000
    )
    joined = joined.filter(lambda record: record is not None)
    joined.apply(score_step, stateful=True).filter(lambda record: record is not None).sink(sink)
