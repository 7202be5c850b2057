"""Entry point of the logged price pyfunc (MLflow "models from code"): loading a model runs this file.

Logging the code path instead of a pickled object keeps the model loadable
without unpickling arbitrary objects.
"""

from mlflow.models import set_model

from training_pipeline.tracking import PriceForecaster

set_model(PriceForecaster())
