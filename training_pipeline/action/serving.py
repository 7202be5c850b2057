"""The served action model: the `ActionPolicy` pyfunc and logging it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext

from training_pipeline.tracking import log_python_model

if TYPE_CHECKING:
    from training_pipeline.action.model import ActionModel

ENTRY = Path(__file__).with_name("served_model.py")


class ActionPolicy(PythonModel):
    """The served action model: ``product`` and the ``orderbook_deep_4s`` columns in; per row a score of each action
    (value in basis points, or probability of being optimal, by the model's loss) and the chosen action."""

    def load_context(self, context: PythonModelContext) -> None:
        from training_pipeline.action.model import ActionModel  # imports torch only when an action model loads

        self.model = ActionModel.load(Path(context.artifacts["model"]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from training_pipeline.action.model import ACTION_NAMES, DECISION, SCORE_COLUMNS

        scores = self.model.scores(model_input)
        out = pd.DataFrame(scores, columns=list(SCORE_COLUMNS))
        out[DECISION] = np.asarray(ACTION_NAMES)[scores.argmax(axis=1)] if len(scores) else []
        return out


def log_action_pyfunc(model: ActionModel, example: pd.DataFrame, name: str) -> ModelInfo:
    """Log an `ActionModel` as an `ActionPolicy` pyfunc in the active run and register it as `name`."""
    policy = ActionPolicy()
    policy.model = model
    return log_python_model(policy, model.save, example, name, ENTRY, ("torch",))
