"""Features -> model -> prediction, and every way that can fail, as errors the API maps to status codes.

`Predictor.predict` serves a batch of (pair, horizon) keys with one online
read per FeatureService and one model call per model. A batch succeeds or
fails as a whole; the error names every pair that caused it.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inference_pipeline.features import FeatureRow, OnlineFeatures, OnlineStoreUnavailable
from inference_pipeline.model_store import ModelKey, ModelStore, ServedModel


class PredictionError(Exception):
    """A request that cannot be served; `status_code` and `body` are what the API answers."""

    status_code = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


class NotServed(PredictionError):
    """Unknown pair or horizon (404), naming what is served."""

    status_code = 404


class ModelUnavailable(PredictionError):
    status_code = 503


class FeaturesUnavailable(PredictionError):
    """No row, an incomplete row, or a row too old for the configured limit."""

    status_code = 503


class StoreUnavailable(PredictionError):
    status_code = 503


@dataclass(frozen=True)
class Prediction:
    pair: str
    horizon: int
    predicted_price: float
    predicted_return: float
    current_price: float
    feature_time: datetime
    feature_age_seconds: float
    model_name: str
    model_version: str
    model_alias: str | None
    prediction_id: str


def feature_age(feature_time: datetime, now: float) -> float:
    """Seconds since a row became known (its candle closed at `feature_time`)."""
    return max(now - feature_time.timestamp(), 0.0)


def check_row(row: FeatureRow, model: ServedModel, now: float, max_age_s: float) -> tuple[str | None, float | None]:
    """(why the row cannot feed `model`, its age if that is why), or (None, None).

    A row is refused when absent, incomplete (indicators warming up, or expired
    past the view's TTL) or older than `max_age_s` (0: no limit).
    """
    if row.feature_time is None:
        return f"{row.pair}: no features in the online store", None
    missing = [name for name in model.features if name in row.missing]
    if missing:
        return f"{row.pair}: features {missing} have no value (indicators warming up, or the row expired)", None
    if model.sequence:
        problem = window_problem(row, model)
        if problem:
            return problem, None
    age = feature_age(row.feature_time, now)
    if max_age_s and age > max_age_s:
        return (
            f"{row.pair}: features are {age:.0f} s old (from {row.feature_time.isoformat()}), "
            f"older than the {max_age_s:g} s limit"
        ), age
    return None, None


def window_problem(row: FeatureRow, model: ServedModel) -> str | None:
    """Why a window row cannot feed a sequence model: fewer candles than it reads, or values still warming up."""
    held = min(len(row.values[name]) for name in model.features)
    if held < model.history:
        return (
            f"{row.pair}: the online window holds {held} candles; the model reads {model.history} "
            "(the feature pipeline has not seen enough candles of this pair yet)"
        )
    warming = [name for name in model.features if any(math.isnan(v) for v in row.values[name][-model.history :])]
    if warming:
        return (
            f"{row.pair}: features {warming} have no value in the last {model.history} candles (indicators warming up)"
        )
    return None


def window_rows(row: FeatureRow, model: ServedModel) -> tuple[tuple[float, ...], ...]:
    """The last `model.history` candles of a window row, oldest first, each in `model.features` order."""
    return tuple(zip(*(row.values[name][-model.history :] for name in model.features), strict=True))


def source_of(model: ServedModel) -> tuple:
    """Where a model's online input comes from: its FeatureService, or (sequence models) its window view."""
    return ("window", model.window_view, model.features) if model.sequence else ("service", model.feature_service)


class Predictor:
    """Serves predictions of the configured pairs and horizons from the ModelStore and the online store."""

    def __init__(self, models: ModelStore, features: OnlineFeatures, max_feature_age_s: float) -> None:
        self.models = models
        self.features = features
        self.max_feature_age_s = max_feature_age_s
        self.pairs = tuple(dict.fromkeys(k.pair for k in models.keys))
        self.horizons = tuple(dict.fromkeys(k.horizon_minutes for k in models.keys))

    def keys_for(self, pairs: Sequence[str], horizon: int | None) -> list[ModelKey]:
        """The model keys of a request; unknown pairs or horizon raise NotServed naming what is served."""
        horizon = self.horizons[0] if horizon is None else horizon
        unknown = [p for p in dict.fromkeys(pairs) if p not in self.pairs]
        if unknown:
            raise NotServed(
                f"pair {', '.join(unknown)} is not served; served pairs: {', '.join(self.pairs)}",
                served_pairs=list(self.pairs),
            )
        if horizon not in self.horizons:
            raise NotServed(
                f"horizon {horizon} min is not served; served horizons: {', '.join(map(str, self.horizons))}",
                served_horizons=list(self.horizons),
            )
        return [ModelKey(p, horizon) for p in pairs]

    def _models_for(self, keys: Sequence[ModelKey]) -> dict[ModelKey, ServedModel]:
        models, problems = {}, []
        for key in dict.fromkeys(keys):
            model = self.models.get(key)
            if model is None:
                problems.append(self.models.problem(key) or f"{key.registered_name}: no model")
            else:
                models[key] = model
        if problems:
            raise ModelUnavailable("; ".join(problems))
        return models

    async def _rows(self, models: dict[ModelKey, ServedModel]) -> dict[tuple, FeatureRow]:
        """Online rows by (source, pair): one read per FeatureService, and per window view of sequence models."""
        wanted: dict[tuple, tuple[ServedModel, list[str]]] = {}
        for key, model in models.items():
            _, pairs = wanted.setdefault(source_of(model), (model, []))
            if key.pair not in pairs:
                pairs.append(key.pair)
        rows = {}
        for source, (model, pairs) in wanted.items():
            try:
                if model.sequence:
                    assert model.window_view is not None, "a sequence model is loaded with its window view"
                    read = await self.features.read_windows(model.window_view, model.features, pairs)
                else:
                    read = await self.features.read(model.feature_service, pairs)
            except OnlineStoreUnavailable as exc:
                raise StoreUnavailable(str(exc)) from exc
            rows.update({(source, row.pair): row for row in read})
        return rows

    async def predict(self, keys: Sequence[ModelKey]) -> list[Prediction]:
        """Predictions for `keys`, in order; raises a PredictionError if any key cannot be served."""
        models = self._models_for(keys)
        rows = await self._rows(models)
        now = time.time()
        problems, stale_ages = [], []
        for key, model in models.items():
            problem, stale_age = check_row(rows[(source_of(model), key.pair)], model, now, self.max_feature_age_s)
            if problem:
                problems.append(problem)
            if stale_age is not None:
                stale_ages.append(stale_age)
        if problems:
            extra = (
                {"feature_age_seconds": round(max(stale_ages), 3), "max_feature_age_seconds": self.max_feature_age_s}
                if stale_ages
                else {}
            )
            raise FeaturesUnavailable("; ".join(dict.fromkeys(problems)), **extra)
        out: dict[ModelKey, Prediction] = {}
        for key, model in models.items():
            row = rows[(source_of(model), key.pair)]
            feature_time = row.feature_time
            assert feature_time is not None, "check_row refused the rows without features"
            if model.sequence:
                window = window_rows(row, model)
                predicted_return, predicted_price = model.predict_window(window)
                current_price = window[-1][model.features.index("close")]
            else:
                predicted_return, predicted_price = model.predict_row(
                    tuple(row.values[name] for name in model.features)
                )
                current_price = row.values["close"]
            out[key] = Prediction(
                pair=key.pair,
                horizon=key.horizon_minutes,
                predicted_price=predicted_price,
                predicted_return=predicted_return,
                current_price=float(current_price),
                feature_time=feature_time,
                feature_age_seconds=round(feature_age(feature_time, now), 3),
                model_name=model.name,
                model_version=model.version,
                model_alias=model.alias,
                prediction_id=uuid.uuid4().hex,
            )
        return [out[key] for key in keys]
