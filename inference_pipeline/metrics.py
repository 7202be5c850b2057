"""Prometheus metrics of the prediction API, in a registry of its own (one per app, so tests can build several).

Requests are counted and timed by route template (never by raw path, which
would grow without bound), method and status, by a plain ASGI middleware.
With several workers (`multiprocess_dir`), the values live in
prometheus-client's multiprocess files and /metrics adds up every worker's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_pipeline.model_store import ModelStore

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS = (1, 5, 15, 30, 60, 90, 120, 180, 300, 600, 1800, 3600)
UNMATCHED = "unmatched"

Labels = TypeVar("Labels", bound=tuple[str, ...])


class ApiMetrics:
    """The API's metric families."""

    def __init__(self, registry: CollectorRegistry | None = None, multiprocess_dir: Path | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        r = self.registry
        self.requests = Counter(
            "coinflow_api_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "coinflow_api_request_duration_seconds",
            "HTTP request latency by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_age = Histogram(
            "coinflow_prediction_feature_age_seconds",
            "Age of the features behind each prediction (now - candle close).",
            ["pair"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "coinflow_predictions_total",
            "Predictions served, by registered model and version.",
            ["model", "version"],
            registry=r,
        )
        self.refused = Counter(
            "coinflow_prediction_errors_total", "Requests refused, by reason (error class).", ["reason"], registry=r
        )
        self.model_version = Gauge(
            "coinflow_model_version",
            "Version of the registered model served per pair and horizon (absent: none loaded).",
            ["model", "pair", "horizon", "selector"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.model_loads = Gauge(
            "coinflow_model_loads",
            "Model versions loaded since start (first loads and swaps; summed over workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_load_failures = Gauge(
            "coinflow_model_load_failures",
            "Registered versions that failed to load (summed over workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.live = Gauge(
            "coinflow_live_metric",
            "Live evaluation of a served model version (from MLflow): "
            "MAE of the price, MAE of the last-price baseline, their ratio, directional accuracy, rows.",
            ["model", "version", "metric"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self._versions: set[tuple[str, str, str, str]] = set()
        self._live: set[tuple[str, str, str]] = set()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one HTTP request by its route template."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or every worker's added up."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)

    @staticmethod
    def _replace(gauge: Gauge, values: dict[Labels, float], previous: set[Labels]) -> set[Labels]:
        """Set a gauge's label sets to exactly `values` (those that vanished are removed); returns the label sets."""
        for labels in previous - values.keys():
            gauge.remove(*labels)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        return set(values)

    def observe_models(self, store: ModelStore) -> None:
        """Refresh the model gauges from the store (called after each registry check)."""
        versions = {
            (m.name, m.key.pair, str(m.key.horizon_minutes), store.selector): float(m.version) for m in store.models()
        }
        self._versions = self._replace(self.model_version, versions, self._versions)
        self.model_loads.set(store.loads)
        self.model_load_failures.set(store.load_failures)

    def observe_live(self, values: Iterable[tuple[str, str, dict[str, float]]]) -> None:
        """Set the live-evaluation gauges: (model, version, {metric: value}) per served version."""
        live = {
            (name, version, metric.removeprefix("live_")): value
            for name, version, metrics in values
            for metric, value in metrics.items()
        }
        self._live = self._replace(self.live, live, self._live)


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by the route template it matched."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = getattr(scope.get("route"), "path", UNMATCHED)
            self.metrics.observe_request(template, scope["method"], status, time.perf_counter() - start)
