"""The prediction API: `create_app(settings, tracking_uri)` builds the FastAPI app; routes only wire.

Start-up (the lifespan) opens the online store and starts the alias watcher,
which loads the served models in the background: the API answers at once
(/ready is false and predictions 503 until they are loaded, also while the
registry is unreachable). Nothing happens at import or at `create_app`.
Prediction routes are async: the Redis read is awaited (so /health answers
while Redis hangs) and the model call on a one-row frame runs inline.
Requests meet the guards first (`guards.py`): the API key when one is set,
the body size limit, strict JSON and bounded validation errors. POST /predict
is answered by `direct.py` before the framework's layers whenever it can
answer exactly as the route would; the route stays the reference.

With several workers (`workers.py`), each runs this lifespan itself and
reports to the others after every registry check, so /ready and /models
answer for the whole service and /metrics adds up every worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from mlflow import MlflowClient
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter
from starlette.types import Receive, Scope, Send

from coinflow import redis_store
from coinflow.redact import redact
from coinflow.settings import Settings
from inference_pipeline.direct import DirectPredict, is_direct, refusal, served
from inference_pipeline.evaluation import read_live_metrics
from inference_pipeline.features import OnlineFeatures, serving_store
from inference_pipeline.guards import ApiKeyMiddleware, StrictJSONRoute, validation_error_response
from inference_pipeline.metrics import ApiMetrics, RequestMetricsMiddleware
from inference_pipeline.model_store import ModelStore
from inference_pipeline.schemas import (
    BatchPredictionResponse,
    BatchPredictRequest,
    ErrorResponse,
    Health,
    ModelInfo,
    ModelsResponse,
    PredictionResponse,
    PredictRequest,
    Readiness,
)
from inference_pipeline.service import Prediction, PredictionError, Predictor
from inference_pipeline.workers import (
    ModelReport,
    ServeDirs,
    WorkerBoard,
    WorkerReport,
    service_model,
    service_problems,
)

PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "The body is not JSON: not UTF-8, malformed, or with NaN, Infinity "
        "or a number beyond a float's range.",
    },
    401: {
        "model": ErrorResponse,
        "description": "COINFLOW_API_KEY is set and the request lacks it (X-API-Key or Authorization: Bearer).",
    },
    404: {"model": ErrorResponse, "description": "Pair or horizon not served (the answer names the served ones)."},
    413: {"content": {"text/plain": {}}, "description": "The body is larger than COINFLOW_SERVE_MAX_BODY_BYTES."},
    503: {
        "model": ErrorResponse,
        "description": "No model for the alias, features missing or too old (with their "
        "age), or the online store unreachable.",
    },
}


def freeze_heap() -> None:
    """Exclude what exists now (libraries, loaded models) from the cyclic garbage collector.

    Measured: with MLflow, Feast and a model loaded, each full collection
    scanned the whole heap and paused the event loop for about 300 ms, every
    few seconds at 500 requests/s. Objects created later are collected as usual;
    only reference cycles that die after a freeze (once per model swap) stay.
    """
    gc.freeze()


class Runtime:
    """What the routes need, built in the lifespan."""

    def __init__(
        self, settings: Settings, tracking_uri: str, metrics: ApiMetrics, board: WorkerBoard | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.board = board
        store = serving_store(settings)
        self.features = OnlineFeatures(store)
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        self.models = ModelStore.from_settings(settings, tracking_uri, store.get_feature_service, self._observe)
        self.predictor = Predictor(self.models, self.features, settings.serve.max_feature_age_s)
        timeout = settings.serve.online_store_timeout_s
        # The readiness probe's own client: one server or a cluster, as the settings say.
        self.redis = redis_store.async_client(
            redis_store.parse_redis_url(settings.services.redis_url, settings.services.redis_type), timeout
        )
        self._frozen_at = -1

    def _observe(self, store: ModelStore) -> None:
        if store.loads != self._frozen_at:
            freeze_heap()
            self._frozen_at = store.loads
        self.metrics.observe_models(store)
        self.metrics.observe_live(
            (m.name, m.version, read_live_metrics(self.client, m.name, m.version)) for m in store.models()
        )
        if self.board is not None:
            self.board.publish(worker_report(store))

    async def online_store_up(self) -> bool:
        try:
            return await redis_store.answers_async(self.redis)
        except redis_store.REDIS_ERRORS:
            return False


async def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def _response(prediction: Prediction) -> PredictionResponse:
    return PredictionResponse.model_validate(prediction, from_attributes=True)


PREDICTION_JSON = TypeAdapter(PredictionResponse)


def encode_prediction(prediction: Prediction) -> bytes:
    """The body of a prediction, as the route's response model writes it."""
    return PREDICTION_JSON.dump_json(_response(prediction), by_alias=True)


class PredictionAPI(FastAPI):
    """FastAPI whose POST /predict goes to `direct` first (`direct.py`), once create_app has set it."""

    direct: DirectPredict | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.direct is not None and is_direct(scope):
            await self.direct(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _key_id(pair: str, horizon: int) -> str:
    return f"{pair}|{horizon}"


def worker_report(store: ModelStore) -> WorkerReport:
    """This process's report to the other workers: whether it is ready and what it serves per key."""
    models = {}
    for key in store.keys:
        model = store.get(key)
        models[_key_id(key.pair, key.horizon_minutes)] = ModelReport(
            loaded=model is not None, version=model.version if model else None, problem=store.problem(key)
        )
    return WorkerReport(os.getpid(), store.ready(), models)


def create_app(settings: Settings, tracking_uri: str, dirs: ServeDirs | None = None, workers: int = 1) -> FastAPI:
    """The API for `settings` (pairs, horizons, alias or version, limits) reading models from `tracking_uri`; one
    of `workers` processes sharing `dirs` when there are several."""
    shared = dirs if workers > 1 else None
    metrics = ApiMetrics(multiprocess_dir=shared.metrics if shared else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        board = WorkerBoard(shared.workers, workers) if shared else None
        runtime = Runtime(settings, tracking_uri, metrics, board)
        runtime.models.start()
        app.state.runtime = runtime
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.models.stop)
            await runtime.redis.aclose()
            if board is not None:
                board.withdraw(os.getpid())

    app = PredictionAPI(
        title="coinflow predictions",
        version="1.0",
        summary="Price forecasts of the registered champion models from the freshest online features.",
        lifespan=lifespan,
        max_body_size=settings.serve.max_body_bytes,
    )
    app.router.route_class = StrictJSONRoute
    app.exception_handler(RequestValidationError)(validation_error_response)
    if settings.serve.api_key:
        app.add_middleware(ApiKeyMiddleware, key=settings.serve.api_key.get_secret_value())
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    @app.exception_handler(PredictionError)
    async def prediction_error(request: Request, exc: PredictionError) -> JSONResponse:
        return refusal(metrics, exc)

    def _predictor() -> Predictor | None:
        runtime = getattr(app.state, "runtime", None)
        return runtime.predictor if runtime is not None else None

    key = settings.serve.api_key
    app.direct = DirectPredict(
        functools.partial(FastAPI.__call__, app),
        _predictor,
        metrics,
        encode_prediction,
        settings.serve.max_body_bytes,
        key.get_secret_value() if key else None,
    )

    @app.post("/predict", response_model=PredictionResponse, responses=PREDICT_ERRORS, tags=["predictions"])
    async def predict(body: PredictRequest, runtime: RuntimeDep) -> PredictionResponse:
        """Forecast the close of `pair` `horizon` minutes after its latest candle, from the online features."""
        keys = runtime.predictor.keys_for([body.pair], body.horizon)
        predictions = await runtime.predictor.predict(keys)
        served(metrics, predictions)
        return _response(predictions[0])

    @app.post("/predict/batch", response_model=BatchPredictionResponse, responses=PREDICT_ERRORS, tags=["predictions"])
    async def predict_batch(body: BatchPredictRequest, runtime: RuntimeDep) -> BatchPredictionResponse:
        """Forecasts for several pairs with one online-store read; all succeed or the error names each failing pair."""
        keys = runtime.predictor.keys_for(body.pairs, body.horizon)
        predictions = await runtime.predictor.predict(keys)
        served(metrics, predictions)
        return BatchPredictionResponse(predictions=[_response(p) for p in predictions])

    @app.get("/health", response_model=Health, tags=["operations"])
    async def health() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get(
        "/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready."}},
        tags=["operations"],
    )
    async def ready(runtime: RuntimeDep) -> JSONResponse:
        """Readiness: the online store answers and every served pair and horizon has a model loaded."""
        store_up = await runtime.online_store_up()
        models = runtime.models
        problems = [p for k in models.keys if (p := models.problem(k))]
        if not store_up:
            problems.insert(0, f"online store {redact(runtime.settings.services.redis_url)} does not answer")
        service: list[str] = []
        if runtime.board is not None:
            service = service_problems(await asyncio.to_thread(runtime.board.reports), runtime.board.expected)
            problems += service
        body = Readiness(
            ready=store_up and models.ready() and not service,
            online_store=store_up,
            models_loaded=len(models.models()),
            models_expected=len(models.keys),
            problems=problems,
        )
        return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump())

    @app.get("/models", response_model=ModelsResponse, tags=["operations"])
    async def models(runtime: RuntimeDep) -> ModelsResponse:
        """What is served per pair and horizon, from which run and FeatureService, or why nothing is."""
        store = runtime.models
        board = runtime.board
        reports = await asyncio.to_thread(board.reports) if board is not None else []
        infos = []
        for key in store.keys:
            model, status = store.get(key), store.status[key]
            info = ModelInfo(
                pair=key.pair,
                horizon=key.horizon_minutes,
                registered_model=key.registered_name,
                loaded=model is not None,
                problem=store.problem(key),
                last_error=status.last_error,
                checked_at=status.checked_at,
            )
            if model is not None:
                info = info.model_copy(
                    update={
                        "version": model.version,
                        "alias": model.alias,
                        "run_id": model.run_id,
                        "model_type": model.model_type,
                        "feature_service": model.feature_service,
                        "features": list(model.features),
                        "loaded_at": model.loaded_at,
                    }
                )
            if board is not None:
                everywhere, problem = service_model(_key_id(key.pair, key.horizon_minutes), reports, board.expected)
                info = info.model_copy(
                    update={"loaded": info.loaded and everywhere, "problem": info.problem or problem}
                )
            infos.append(info)
        return ModelsResponse(selector=store.selector, poll_interval_seconds=store.poll_interval_s, models=infos)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics: requests and latencies by route and status, feature age, model versions, live evaluation."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
