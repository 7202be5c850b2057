"""The project's MLflow server with a configured backend store and artifacts destination (no server is started)."""

from pathlib import Path

from coinflow import services
from coinflow.settings import Settings

POSTGRES = "postgresql://mlflow:s3cret@db.internal:5432/mlflow"


def test_a_configured_backend_store_goes_to_the_server_by_its_environment_not_its_command_line(tmp_path: Path):
    settings = Settings(
        _env_file=None,
        run_dir=tmp_path,
        mlflow_backend_store_uri=POSTGRES,
        mlflow_artifacts_destination="file:///srv/mlflow-artifacts",
    )
    command = services.mlflow_server_command(settings)
    assert "--backend-store-uri" not in command and not any("s3cret" in part for part in command)
    assert command[command.index("--artifacts-destination") + 1] == "file:///srv/mlflow-artifacts"
    assert services._mlflow_server_env(settings, tmp_path)["MLFLOW_BACKEND_STORE_URI"] == POSTGRES


def test_by_default_the_server_keeps_sqlite_and_its_environment_names_no_backend(tmp_path: Path):
    settings = Settings(_env_file=None, run_dir=tmp_path)
    assert "MLFLOW_BACKEND_STORE_URI" not in services._mlflow_server_env(settings, tmp_path)
    command = services.mlflow_server_command(settings)
    assert command[command.index("--backend-store-uri") + 1].startswith("sqlite:///")


def test_database_uris_are_told_from_paths():
    assert services.is_database_uri(POSTGRES) and services.is_database_uri("mysql+pymysql://u@h/db")
    assert not services.is_database_uri("/var/mlflow/store") and not services.is_database_uri("file:///var/mlflow")


def test_a_backend_store_without_a_driver_is_a_short_redacted_reason():
    problem = services.backend_store_problem("nosuchdb://mlflow:s3cret@host/mlflow")
    assert problem is not None and "nosuchdb" in problem and "s3cret" not in problem and "\n" not in problem
