"""The price-model interface (fit, predict, params, save / load) and the registry that loads saved models.

Every model predicts the log return to the close ``horizon`` ahead; the price
is ``close * exp(return)``. Returns are stationary where prices are not, so
a model fitted on January prices still applies in March, and the last-price
baseline is simply a return of 0. Metrics are computed on the price.

`fit` takes labelled dataset rows (features, event and label times, target);
`predict` needs only the raw feature columns, as served online;
`predict_values` takes them as a float array, the serving path (no DataFrame).

A model family registers itself by subclassing `PriceModel` with a
``model_type``. `PriceModel.save` records the class's module in `META_FILE`,
and `load_model` imports exactly that module (so torch loads only for the
deep models), then restores the class registered under the model type.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

META_FILE = "model.json"
# Models saved before model.json named their module: where their model types live now.
LEGACY_MODULES = {
    "last_price": "training_pipeline.price.models",
    "mean_last_n": "training_pipeline.price.models",
    "lasso": "training_pipeline.price.models",
    "xgboost": "training_pipeline.price.models",
    "lstm": "training_pipeline.price.sequence",
    "gru": "training_pipeline.price.sequence",
}

_REGISTRY: dict[str, type[PriceModel]] = {}


class PriceModel(ABC):
    """A model of the log return to the close ``horizon`` ahead; a subclass with a ``model_type`` registers itself."""

    model_type: ClassVar[str]
    learned: ClassVar[bool] = True
    requirements: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "model_type" in cls.__dict__:
            register(cls)

    @abstractmethod
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> PriceModel:
        """Fit on labelled rows (time-ordered); `validation`, when given, may be used for early stopping."""

    @abstractmethod
    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Predicted log returns, one per row."""

    def predict_values(self, columns: Sequence[str], values: np.ndarray) -> np.ndarray:
        """`predict` for rows given as a 2-D float array with one column per name in `columns`."""
        return self.predict(pd.DataFrame(values, columns=list(columns)))

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The (fitted) hyper-parameters, for logging."""

    def feature_importance(self) -> pd.Series | None:
        """Importance per model input, when the model has one."""
        return None

    def training_curve(self) -> list[dict[str, float]]:
        """Per-epoch training records (``epoch`` plus losses), for models trained in epochs."""
        return []

    def unfitted(self) -> PriceModel:
        """A new, unfitted model of the same configuration (tuned values included), for refits."""
        return type(self)(**self._state())

    def predict_price(self, features: pd.DataFrame) -> np.ndarray:
        return features["close"].to_numpy(dtype=float) * np.exp(self.predict(features))

    def save(self, path: Path) -> None:
        """Write the model into the (new) directory `path`."""
        path.mkdir(parents=True, exist_ok=False)
        meta = {"model_type": self.model_type, "module": type(self).__module__, "state": self._state()}
        (path / META_FILE).write_text(json.dumps(meta))
        self._save_artifacts(path)

    def _state(self) -> dict[str, Any]:
        return {}

    def _save_artifacts(self, path: Path) -> None:  # noqa: B027 - optional hook, most models keep everything in _state
        """Write what `_state` cannot hold (fitted estimators)."""

    @classmethod
    def _restore(cls, state: dict[str, Any], path: Path) -> PriceModel:
        return cls(**state)


def register(cls: type[PriceModel]) -> None:
    """Make `cls` loadable by its ``model_type``; a second class claiming the same type is a mistake."""
    known = _REGISTRY.get(cls.model_type)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"model type {cls.model_type!r} is taken by {known.__module__}.{known.__qualname__}")
    _REGISTRY[cls.model_type] = cls


def registered_models() -> dict[str, type[PriceModel]]:
    """The model types of the families imported so far, and their classes."""
    return dict(_REGISTRY)


def model_module(meta: dict[str, Any]) -> str:
    """The module that defines the saved model's class: as recorded, or by model type for older metadata."""
    module = meta.get("module") or LEGACY_MODULES.get(meta["model_type"])
    if module is None:
        raise ValueError(f"unknown model type {meta['model_type']!r} and no module recorded in {META_FILE}")
    return module


def load_model(path: Path) -> PriceModel:
    """Load a model written by `PriceModel.save`, importing only the module of its family."""
    meta = json.loads((path / META_FILE).read_text())
    module = model_module(meta)
    importlib.import_module(module)
    cls = _REGISTRY.get(meta["model_type"])
    if cls is None:
        raise ValueError(f"{module} defines no model of type {meta['model_type']!r}")
    return cls._restore(meta["state"], path)
