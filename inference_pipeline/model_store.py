"""The served models: loaded from the MLflow registry by alias (or pinned version), watched, swapped atomically.

One registered model serves one pair and horizon (``price-<PAIR>-<H>m``, see
`coinflow.contracts.registered_model_name`). A background thread asks
the registry every few seconds which version the alias points at; a new
version is downloaded and loaded off the request path and then published by
replacing one dict, so a request sees either the old model or the new one,
never a half-loaded one. Registry outages keep the loaded models; an alias
that no longer exists unloads its model (503 until one is set again).

A model's features are those of the FeatureService its training run names in
the ``feature_service`` tag: serving fetches exactly what training read.
Sequence models (LSTM/GRU, ``model_sequence_length`` N > 1) read the same
features as a window of the last N candles, from the window view of their
interval (one online row per pair, written by the feature pipeline); a model
needing more candles than the window holds is refused at load.

A row is scored by the training pipeline's model inside the pyfunc, on a
float array: the pyfunc's DataFrame and schema enforcement cost more than
the model itself (the inputs are checked against the signature at load).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from feast import FeatureService
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from coinflow.contracts import PREDICTED_PRICE, PREDICTED_RETURN, ServedPriceModel, registered_model_name
from coinflow.redact import redact
from coinflow.settings import Settings
from feature_repo.names import window_view

logger = logging.getLogger(__name__)

MISSING_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}
SEQUENCE_LENGTH_PARAM = "model_sequence_length"


@dataclass(frozen=True)
class ModelKey:
    """What one registered model serves."""

    pair: str
    horizon_minutes: int

    @property
    def registered_name(self) -> str:
        return registered_model_name(self.pair, self.horizon_minutes)


class ModelLoadError(RuntimeError):
    """A registered version cannot be served; the message says why."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version and what it needs: the FeatureService's views and features, in order."""

    key: ModelKey
    name: str
    version: str
    alias: str | None
    run_id: str
    model_type: str
    feature_service: str
    views: tuple[str, ...]
    features: tuple[str, ...]
    loaded_at: datetime
    pyfunc: PyFuncModel = field(repr=False, compare=False)
    history: int = 1
    memoize: bool = True
    window_view: str | None = None
    price_model: ServedPriceModel | None = field(default=None, repr=False, compare=False)
    _last: dict[tuple, tuple[float, float]] = field(default_factory=dict, repr=False, compare=False)

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Predicted log return and price per row of raw FeatureService columns (through the pyfunc's schema check)."""
        out = self.pyfunc.predict(rows)
        if not isinstance(out, pd.DataFrame):
            raise TypeError(f"{self.name} v{self.version} returned a {type(out).__name__}, not a DataFrame")
        return out[[PREDICTED_RETURN, PREDICTED_PRICE]]

    @property
    def sequence(self) -> bool:
        """Whether the model reads a window of candles (served from the window view) rather than one row."""
        return self.history > 1

    def _memoized(self, key: tuple, compute: Callable[[], tuple[float, float]]) -> tuple[float, float]:
        """The model is deterministic and a pair's online row changes once per candle: the output for the last
        input seen is kept and reused while the input is unchanged (when `memoize`), so requests between two
        candles cost a feature read, not a model call."""
        if self.memoize and key in self._last:
            return self._last[key]
        result = compute()
        if self.memoize:
            self._last.clear()
            self._last[key] = result
        return result

    def predict_row(self, values: tuple) -> tuple[float, float]:
        """(log return, price) for one row of feature values in `features` order.

        A `price_model` scores it on an array (the same numbers as the pyfunc,
        without its DataFrame and schema checks); any other pyfunc is called.
        """

        def compute() -> tuple[float, float]:
            if self.price_model is None:
                out = self.predict(pd.DataFrame([values], columns=list(self.features)))
                return float(out[PREDICTED_RETURN].iloc[0]), float(out[PREDICTED_PRICE].iloc[0])
            row = np.array([values], dtype=np.float64)
            returns = self.price_model.predict_values(self.features, row)
            prices = row[:, self.features.index("close")] * np.exp(returns)
            return float(returns[0]), float(prices[0])

        return self._memoized(values, compute)

    def predict_window(self, rows: tuple[tuple[float, ...], ...]) -> tuple[float, float]:
        """(log return, price) of a sequence model from the last `history` candles (oldest first), in `features`
        order; the forecast is the one of the latest candle."""

        def compute() -> tuple[float, float]:
            frame = pd.DataFrame(list(rows), columns=list(self.features))
            if self.price_model is None:
                out = self.predict(frame)
                return float(out[PREDICTED_RETURN].iloc[-1]), float(out[PREDICTED_PRICE].iloc[-1])
            log_return = float(self.price_model.predict(frame)[-1])
            return log_return, float(frame["close"].iloc[-1] * np.exp(log_return))

        return self._memoized(rows, compute)


def price_model_of(pyfunc: PyFuncModel) -> ServedPriceModel | None:
    """The price model inside a registered price pyfunc (its ``model``, when it is a `ServedPriceModel`), or None for
    any other pyfunc, which is then called as a pyfunc."""
    try:
        python_model = pyfunc.unwrap_python_model()
    except MlflowException:
        return None
    model = getattr(python_model, "model", None)
    return model if isinstance(model, ServedPriceModel) else None


def load_pyfunc(client: MlflowClient, tracking_uri: str, name: str, version: str) -> PyFuncModel:
    """A registered version's pyfunc, downloaded from the given server (not the process-wide MLflow URI)."""
    return load_pyfunc_with_file(client, tracking_uri, name, version, None)[0]


def load_pyfunc_with_file(
    client: MlflowClient, tracking_uri: str, name: str, version: str, path: str | None
) -> tuple[PyFuncModel, str | None]:
    """`load_pyfunc`, and the text of the file at `path` in the model's directory (a configuration it carries)."""
    source = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="coinflow-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri)
        text = None if path is None else (Path(local) / path).read_text()
        return mlflow.pyfunc.load_model(local), text


def service_layout(service: FeatureService) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (views, feature names) of a FeatureService, in its order."""
    views = tuple(p.name for p in service.feature_view_projections)
    features = tuple(f.name for p in service.feature_view_projections for f in p.features)
    return views, features


def check_inputs(required: Sequence[str], served: Sequence[str], what: str) -> None:
    """Refuse a model whose signature needs columns its FeatureService does not serve."""
    missing = [name for name in required if name not in served]
    if missing:
        raise ModelLoadError(f"{what} needs {missing}, which its FeatureService does not serve")


def sequence_length(params: dict[str, str]) -> int:
    """Candles of history a model reads per prediction (1: tabular; sequence models log their window length)."""
    return int(float(params.get(SEQUENCE_LENGTH_PARAM, 1)))


@dataclass
class KeyStatus:
    """Why a key has no model, or the last error met while refreshing it."""

    problem: str | None = None
    last_error: str | None = None
    checked_at: datetime | None = None


class ModelStore:
    """Loads and watches the models of the served keys; `get` is lock-free and cheap."""

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        feature_services: Callable[[str], FeatureService],
        keys: Sequence[ModelKey],
        alias: str = "champion",
        version: int | None = None,
        poll_interval_s: float = 10.0,
        after_refresh: Callable[[ModelStore], None] | None = None,
        memoize: bool = True,
        window_length: int = 60,
    ) -> None:
        self._client = client
        self._tracking_uri = tracking_uri
        self._feature_services = feature_services
        self.keys = tuple(keys)
        self.alias = None if version is not None else alias
        self.version = version
        self.poll_interval_s = poll_interval_s
        self._after_refresh = after_refresh
        self.memoize = memoize
        self.window_length = window_length
        self._models: dict[ModelKey, ServedModel] = {}
        self.status: dict[ModelKey, KeyStatus] = {
            k: KeyStatus(problem=f"{k.registered_name}: not loaded yet") for k in self.keys
        }
        self.loads = 0
        self.load_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        tracking_uri: str,
        feature_services: Callable[[str], FeatureService],
        after_refresh: Callable[[ModelStore], None] | None = None,
    ) -> ModelStore:
        """The served pairs x horizons, by the configured alias or pinned version."""
        keys = [ModelKey(p, h) for p in settings.serve.pairs for h in settings.serve.horizons]
        return cls(
            MlflowClient(tracking_uri, registry_uri=tracking_uri),
            tracking_uri,
            feature_services,
            keys,
            alias=settings.serve.model_alias,
            version=settings.serve.model_version,
            poll_interval_s=settings.serve.alias_poll_interval_s,
            after_refresh=after_refresh,
            memoize=settings.serve.memoize_predictions,
            window_length=settings.stream.online_window_length,
        )

    @property
    def selector(self) -> str:
        return f"version {self.version}" if self.version is not None else f"alias '{self.alias}'"

    def get(self, key: ModelKey) -> ServedModel | None:
        return self._models.get(key)

    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    def problem(self, key: ModelKey) -> str | None:
        return None if key in self._models else self.status[key].problem

    def ready(self) -> bool:
        return all(k in self._models for k in self.keys)

    def _publish(self, key: ModelKey, model: ServedModel | None) -> None:
        models = dict(self._models)
        if model is None:
            models.pop(key, None)
        else:
            models[key] = model
        self._models = models

    def _resolve(self, key: ModelKey) -> ModelVersion:
        if self.version is not None:
            return self._client.get_model_version(key.registered_name, str(self.version))
        assert self.alias is not None, "an alias is set whenever no version is pinned"
        return self._client.get_model_version_by_alias(key.registered_name, self.alias)

    def refresh(self) -> None:
        """Check every key once: load what changed, unload what the registry no longer has."""
        for key in self.keys:
            self._refresh_key(key)
        if self._after_refresh is not None:
            try:
                self._after_refresh(self)
            except Exception:  # noqa: BLE001 - an observer must never stop the watcher
                logger.exception("After-refresh hook failed")

    def _refresh_key(self, key: ModelKey) -> None:
        status = self.status[key]
        status.checked_at = datetime.now(UTC)
        try:
            found = self._resolve(key)
        except MlflowException as exc:
            error = redact(exc)
            if exc.error_code in MISSING_CODES:
                if key in self._models:
                    logger.warning("%s: %s is gone from the registry; unloading it", key.registered_name, self.selector)
                self._publish(key, None)
                status.problem = f"no model version for {self.selector} of {key.registered_name}"
                status.last_error = None
            else:
                status.last_error = f"registry: {error}"
                logger.warning("%s: registry check failed, keeping what is loaded: %s", key.registered_name, error)
            return
        except Exception as exc:  # noqa: BLE001 - connection errors of the REST client come in several types
            status.last_error = f"registry: {type(exc).__name__}: {redact(exc)}"
            logger.warning("%s: registry unreachable, keeping what is loaded: %s", key.registered_name, redact(exc))
            return
        current = self._models.get(key)
        if current is not None and current.version == str(found.version):
            status.last_error = None
            return
        try:
            model = self.load(key, found)
        except Exception as exc:  # noqa: BLE001 - any failure to load keeps the previous model
            self.load_failures += 1
            error = redact(exc)
            status.last_error = f"v{found.version}: {error}"
            if current is None:
                status.problem = f"{key.registered_name} v{found.version} could not be loaded: {error}"
            logger.error(
                "%s v%s could not be loaded (%s); keeping %s",
                key.registered_name,
                found.version,
                error,
                f"v{current.version}" if current else "none",
            )
            return
        self._publish(key, model)
        self.loads += 1
        status.problem, status.last_error = None, None
        logger.info(
            "%s: serving v%s (%s, run %s, %s) for %s",
            key.registered_name,
            model.version,
            model.model_type,
            model.run_id,
            model.feature_service,
            self.selector,
        )

    def load(self, key: ModelKey, found: ModelVersion) -> ServedModel:
        """Download and load one registered version, checking it against its FeatureService."""
        run_id = found.run_id
        if run_id is None:
            raise ModelLoadError("it was registered without a run, so its features are unknown")
        run = self._client.get_run(run_id)
        tags, params = run.data.tags, run.data.params
        service_name = tags.get("feature_service")
        if not service_name:
            raise ModelLoadError(f"run {run_id} has no 'feature_service' tag, so its features are unknown")
        history = sequence_length(params)
        window = None
        if history > 1:
            if history > self.window_length:
                raise ModelLoadError(
                    f"it is a sequence model of {history} candles per prediction; the online window holds "
                    f"{self.window_length} (COINFLOW_ONLINE_WINDOW_LENGTH)"
                )
            window = window_view(params.get("interval", "1m"))
        views, features = service_layout(self._feature_services(service_name))
        pyfunc = load_pyfunc(self._client, self._tracking_uri, found.name, found.version)
        schema = pyfunc.metadata.get_input_schema()
        if schema is not None:
            check_inputs(schema.input_names(), features, f"{found.name} v{found.version}")
        return ServedModel(
            key=key,
            name=found.name,
            version=str(found.version),
            alias=self.alias,
            run_id=run_id,
            model_type=tags.get("model_type", "unknown"),
            feature_service=service_name,
            views=views,
            features=features,
            loaded_at=datetime.now(UTC),
            pyfunc=pyfunc,
            history=history,
            memoize=self.memoize,
            window_view=window,
            price_model=price_model_of(pyfunc),
        )

    def _watch(self, refresh_first: bool) -> None:
        if refresh_first:
            self.refresh()
        while not self._stop.wait(self.poll_interval_s):
            self.refresh()

    def start(self, refresh_first: bool = True) -> None:
        """Check the registry in a daemon thread, at once (unless `refresh_first` is False) and every
        `poll_interval_s` after; a pinned version too, so that it loads once the registry answers."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(refresh_first,), name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching; a check stuck on an unreachable registry is left to die with the process (daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
