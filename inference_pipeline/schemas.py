"""Request and response bodies of the prediction API (they make its OpenAPI schema, examples included)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

Pair = Annotated[
    str,
    Field(
        min_length=3,
        max_length=32,
        pattern=r"^[A-Za-z0-9]+/[A-Za-z0-9]+$",
        description="A pair in BASE/QUOTE form, as the feature store keys it.",
        examples=["BTC/USDC"],
    ),
]


def _integer_only(value: object) -> object:
    """JSON Schema's integer (1, 1.0), never true or "1", which lax validation would take for 1."""
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


Minutes = Annotated[int, Field(ge=1, le=10_080), BeforeValidator(_integer_only)]
Horizon = Annotated[
    Minutes | None,
    Field(
        examples=[1],
        description="Forecast horizon in minutes (an integer, not true or '1'); default: the first served.",
    ),
]
MAX_BATCH = 100


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"pair": "BTC/USDC", "horizon": 1}]})

    pair: Pair
    horizon: Horizon = None


class BatchPredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"pairs": ["BTC/USDC", "ETH/USD"], "horizon": 1}]}
    )

    pairs: list[Pair] = Field(min_length=1, max_length=MAX_BATCH, description="Pairs to predict, in the order wanted.")
    horizon: Horizon = None


class PredictionResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "pair": "BTC/USDC",
                    "horizon": 1,
                    "predicted_price": 28491.7,
                    "predicted_return": 0.00021,
                    "current_price": 28485.7,
                    "feature_time": "2023-03-31T23:59:00Z",
                    "feature_age_seconds": 12.4,
                    "model_name": "price-BTCUSDC-1m",
                    "model_version": "6",
                    "model_alias": "champion",
                    "prediction_id": "5f0c1d2e3a4b4c5d9e8f7a6b5c4d3e2f",
                }
            ]
        },
    )

    pair: str
    horizon: int = Field(description="Minutes ahead of feature_time that the prediction is for.")
    predicted_price: float = Field(description="Forecast close at feature_time + horizon.")
    predicted_return: float = Field(description="Forecast log return: ln(predicted_price / current_price).")
    current_price: float = Field(description="Close of the candle the features come from.")
    feature_time: datetime = Field(description="When the features became known (the candle's close, UTC).")
    feature_age_seconds: float = Field(description="Seconds from feature_time to the prediction.")
    model_name: str = Field(description="Registered MLflow model.")
    model_version: str
    model_alias: str | None = Field(description="Alias the version was served under; null when a version is pinned.")
    prediction_id: str


class BatchPredictionResponse(BaseModel):
    predictions: list[PredictionResponse]


class ErrorResponse(BaseModel):
    """Why a request could not be served."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"detail": "pair DOGE/USD is not served; served pairs: BTC/USDC", "served_pairs": ["BTC/USDC"]},
                {
                    "detail": "BTC/USDC: features are 412 s old (from 2023-03-31T23:52:00+00:00), older than the 180 s limit",
                    "feature_age_seconds": 412.0,
                    "max_feature_age_seconds": 180.0,
                },
            ]
        },
    )

    detail: str
    served_pairs: list[str] | None = None
    served_horizons: list[int] | None = None
    feature_age_seconds: float | None = None
    max_feature_age_seconds: float | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    pair: str
    horizon: int
    registered_model: str
    loaded: bool
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    model_type: str | None = None
    feature_service: str | None = None
    features: list[str] | None = None
    loaded_at: datetime | None = None
    problem: str | None = Field(default=None, description="Why no model is loaded.")
    last_error: str | None = Field(default=None, description="Last registry or load error (a loaded model is kept).")
    checked_at: datetime | None = Field(default=None, description="Last registry check.")


class ModelsResponse(BaseModel):
    selector: str = Field(
        description="What is served: an alias (watched) or a pinned version.", examples=["alias 'champion'"]
    )
    poll_interval_seconds: float
    models: list[ModelInfo]


class Readiness(BaseModel):
    ready: bool
    online_store: bool = Field(description="Whether the online store answered a ping.")
    models_loaded: int
    models_expected: int
    problems: list[str]
