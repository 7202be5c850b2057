"""Entry point of the logged pairs pyfunc (MLflow "models from code"): loading the model runs this file.

The code it runs is the project's, which the model's pip requirements pin.
"""

from mlflow.models import set_model

try:
    from training_pipeline.pairs.serving import PairsPolicy
except ModuleNotFoundError as exc:
    if not (exc.name or "").startswith("training_pipeline"):
        raise
    raise ImportError(
        "this registered pairs model runs the coinflow project's code (the training_pipeline package), which is not "
        "installed: pip install the coinflow version pinned in the model's requirements.txt"
    ) from exc

set_model(PairsPolicy())
