"""Entry point of the logged action-model pyfunc (MLflow "models from code"): loading the model runs this file.

The code it runs is the project's, which the model's pip requirements pin.
"""

from mlflow.models import set_model

try:
    from training_pipeline.action.serving import ActionPolicy
except ModuleNotFoundError as exc:
    if not (exc.name or "").startswith("training_pipeline"):
        raise
    raise ImportError(
        "this registered action model runs the coinflow project's code (the training_pipeline package), which is not "
        "installed: pip install the coinflow version pinned in the model's requirements.txt"
    ) from exc

set_model(ActionPolicy())
