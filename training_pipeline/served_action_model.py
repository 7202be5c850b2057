"""Entry point of the logged action-model pyfunc (MLflow "models from code"): loading the model runs this file."""

from mlflow.models import set_model

from training_pipeline.tracking import ActionPolicy

set_model(ActionPolicy())
