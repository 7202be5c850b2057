"""The served price model: the `PriceForecaster` pyfunc, logging it, and scoring a registered version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext

from coinflow.contracts import PREDICTED_PRICE, PREDICTED_RETURN
from training_pipeline.model_base import PriceModel, load_model
from training_pipeline.tracking import log_python_model

ENTRY = Path(__file__).with_name("served_model.py")


class PriceForecaster(PythonModel):
    """The served model: raw FeatureService columns in; predicted log return and price out.

    All preprocessing lives in the wrapped model, so a caller passes the
    features exactly as the online store returns them. Sequence models
    (``lstm``, ``gru``) read each row's window from the rows before it in the
    input: pass the pair's last ``sequence_length`` candles, oldest first, and
    take the last row's prediction (see `SequencePriceModel.predict`). Loading
    needs the project installed (it is in the model's pip requirements).
    """

    def load_context(self, context: PythonModelContext) -> None:
        self.model = load_model(Path(context.artifacts["model"]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        returns = self.model.predict(model_input)
        return pd.DataFrame(
            {
                PREDICTED_RETURN: returns,
                PREDICTED_PRICE: model_input["close"].to_numpy(dtype=float) * np.exp(returns),
            }
        )


def log_pyfunc(model: PriceModel, example: pd.DataFrame, name: str) -> ModelInfo:
    """Log the price model as a `PriceForecaster` pyfunc in the active run and register it as `name`."""
    forecaster = PriceForecaster()
    forecaster.model = model
    return log_python_model(forecaster, model.save, example, name, ENTRY, model.requirements)


def predict_with_alias(name: str, alias: str, features: pd.DataFrame) -> np.ndarray:
    """Predicted prices of the registered model version behind `alias`, loaded as its pyfunc."""
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    return loaded.predict(features)[PREDICTED_PRICE].to_numpy(dtype=float)
