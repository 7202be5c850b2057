"""How training finds its MLflow tracking server (no server is started here)."""

import socket

import pytest

from coinflow import services
from coinflow.settings import Settings


def test_a_configured_tracking_uri_is_used_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow@db/mlflow")
    configured = Settings(_env_file=None, run_dir=tmp_path)
    assert configured.services.mlflow_tracking_uri == "postgresql://mlflow@db/mlflow"
    assert services.ensure_mlflow(configured) == "postgresql://mlflow@db/mlflow"
    assert not (tmp_path / "mlflow").exists()


def test_a_port_held_by_something_else_is_a_clear_error(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        busy = Settings(_env_file=None, run_dir=tmp_path, mlflow_tracking_uri=None, mlflow_port=port)
        with pytest.raises(services.ServiceError, match=rf"Port {port} \(MLflow\) is used by"):
            services.ensure_mlflow(busy)
    assert not (tmp_path / "mlflow.json").exists()


def test_the_server_keeps_its_state_under_run_dir(tmp_path):
    command = services.mlflow_server_command(Settings(_env_file=None, run_dir=tmp_path, mlflow_port=5123))
    root = (tmp_path / "mlflow").resolve()
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{root / 'mlflow.db'}"
    assert command[command.index("--artifacts-destination") + 1] == str(root / "artifacts")
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "5123"
