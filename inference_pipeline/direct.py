"""POST /predict without the framework's per-request layers: the hottest route answered straight from ASGI.

Measured on 2 cores: FastAPI's and Starlette's layers (error and telemetry
middleware, the body limit, routing, dependency resolution, request and
response models) cost about 0.17 ms of CPU per prediction, as much as the
online read and the model together. `DirectPredict` answers the requests the
route would answer with a prediction or a `PredictionError` itself, with the
same parser, models and encoder, so the bytes are the same; everything else
goes on to the full app (replaying the body it has read), which stays the
reference and the OpenAPI schema:

- a request without the API key when one is set (401), a body over the limit
  (413), a content type other than JSON, a body that is not strict JSON (400)
  or does not fit the schema (422): nothing has been done for them yet;
- an unexpected error, which the app's error handling then meets again.

The route's metrics are kept the same way (requests, latency, refusals,
served predictions).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from inference_pipeline.guards import key_matches, parse_json, presented_key
from inference_pipeline.metrics import ApiMetrics
from inference_pipeline.schemas import PredictRequest
from inference_pipeline.service import Prediction, PredictionError, Predictor

PATH = "/predict"
JSON_TYPES = frozenset({b"application/json"})

Encode = Callable[[Prediction], bytes]


def served(metrics: ApiMetrics, predictions: list[Prediction]) -> None:
    """Count served predictions and the age of their features."""
    for p in predictions:
        metrics.feature_age.labels(p.pair).observe(p.feature_age_seconds)
        metrics.predictions.labels(p.model_name, p.model_version).inc()


def refusal(metrics: ApiMetrics, exc: PredictionError) -> JSONResponse:
    """The answer to a request that cannot be served, counted by reason."""
    metrics.refused.labels(type(exc).__name__).inc()
    return JSONResponse(status_code=exc.status_code, content=exc.body)


def json_content(headers: Headers) -> bool:
    """Whether the body is JSON by its content type in the plain form clients send (absent or application/json)."""
    value = headers.get("content-type")
    return value is None or value.strip().lower().encode() in JSON_TYPES


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives `messages` again before the connection's own."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def read_body(headers: Headers, receive: Receive, limit: int) -> tuple[bytes | None, list[Message]]:
    """The whole body (None when it is, or says it is, over `limit`, or the client left) and the messages read."""
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None, []
    messages, chunks, size = [], [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), messages


class DirectPredict:
    """Answers POST /predict with `predictor()` (None until the app has started) when it can answer exactly as
    the route would; hands anything else to `app`."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        predictor: Callable[[], Predictor | None],
        metrics: ApiMetrics,
        encode: Encode,
        max_body_bytes: int,
        api_key: str | None,
    ) -> None:
        self.app = app
        self.predictor = predictor
        self.metrics = metrics
        self.encode = encode
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key

    def _accepts(self, headers: Headers) -> bool:
        """Whether the headers let this path answer: a JSON body and, when one is set, the API key (checked before
        the body is read, as the key's middleware does)."""
        if not json_content(headers):
            return False
        return self.api_key is None or key_matches(presented_key(headers), self.api_key)

    @staticmethod
    def _request(body: bytes | None) -> PredictRequest | None:
        if body is None:
            return None
        try:
            return PredictRequest.model_validate(parse_json(body))
        except (ValueError, RecursionError, ValidationError):
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        predictor = self.predictor()
        headers = Headers(scope=scope)
        if predictor is None or not self._accepts(headers):
            await self.app(scope, receive, send)
            return
        body, messages = await read_body(headers, receive, self.max_body_bytes)
        request = self._request(body)
        if request is None:
            await self.app(scope, _replaying(messages, receive), send)
            return
        response: Response
        try:
            keys = predictor.keys_for([request.pair], request.horizon)
            predictions = await predictor.predict(keys)
            served(self.metrics, predictions)
            response = Response(self.encode(predictions[0]), media_type="application/json")
        except PredictionError as exc:
            response = refusal(self.metrics, exc)
        except Exception:  # noqa: BLE001 - the app's own error handling answers and logs it
            await self.app(scope, _replaying(messages, receive), send)
            return
        await response(scope, receive, send)
        self.metrics.observe_request(PATH, "POST", response.status_code, time.perf_counter() - start)


def is_direct(scope: Scope) -> bool:
    """Whether a request is one `DirectPredict` answers first."""
    return scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"
