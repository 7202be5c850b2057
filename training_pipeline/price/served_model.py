"""Entry point of the logged price pyfunc (MLflow "models from code"): loading a model runs this file.

Logging the code path instead of a pickled object keeps the model loadable
without unpickling arbitrary objects; the code itself is the project's, which
the model's pip requirements pin.
"""

from mlflow.models import set_model

try:
    from training_pipeline.price.serving import PriceForecaster
except ModuleNotFoundError as exc:
    if not (exc.name or "").startswith("training_pipeline"):
        raise
    raise ImportError(
        "this registered price model runs the coinflow project's code (the training_pipeline package), which is not "
        "installed: pip install the coinflow version pinned in the model's requirements.txt"
    ) from exc

set_model(PriceForecaster())
