"""The project's MLflow server on a PostgreSQL backend store with a proxied artifact store, used for real.

Each module run creates its own database (``coinflow_it_mlflow_<random>``) on
the PostgreSQL at COINFLOW_IT_POSTGRES_URL (default the local one, user
postgres) and drops it at the end; the server runs on a free port with that
backend store (COINFLOW_MLFLOW_BACKEND_STORE_URI) and a temporary artifacts
destination given as a file:// URL (COINFLOW_MLFLOW_ARTIFACTS_DESTINATION).
Training, the registry's aliases and serving are checked in PostgreSQL's
MLflow tables and on disk, not only through MLflow's client; then the faults:
a store where nothing listens, a database that does not exist, PostgreSQL
lost in the middle of a training run, and a database dropped under the
running server.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from coinflow import services
from coinflow.contracts import CHALLENGER, CHAMPION, PREDICTED_PRICE, registered_model_name
from coinflow.feature_store import feature_store
from coinflow.redact import redact
from coinflow.settings import Settings
from inference_pipeline.model_store import ModelKey, ModelStore
from tests.integration.conftest import synthetic_training_settings
from tests.support.feature_runs import env_for
from tests.support.ports import free_port
from tests.support.postgres import POSTGRES_URL, admin, database_exists, drop_database, temporary_database
from tests.support.training_synthetic import FEATURES, PREDICTABLE, RANDOM_WALK
from training_pipeline.__main__ import app
from training_pipeline.dataset import build_dataset
from training_pipeline.price.train import PairResult, TrainingOptions, train_pair

pytestmark = pytest.mark.integration

ARTIFACTS_SCHEME = "mlflow-artifacts:/"


def _query(database_url: str, statement: str, *params: object) -> list[tuple]:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute(statement, params).fetchall()


def _in_destination(destination: Path, artifact_uri: str) -> Path:
    """Where the server keeps a proxied artifact (``mlflow-artifacts:/<path>``) in its destination."""
    assert artifact_uri.startswith(ARTIFACTS_SCHEME), artifact_uri
    return destination / artifact_uri.removeprefix(ARTIFACTS_SCHEME).lstrip("/")


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A database of this module only, dropped (with the server's connections) at the end."""
    with temporary_database("coinflow_it_mlflow") as url:
        yield url


@pytest.fixture(scope="module")
def postgres_settings(tmp_path_factory, redis_url: str, database_url: str) -> Iterator[Settings]:
    """Training settings whose MLflow server (started here, on a free port) keeps its runs and registry in
    `database_url` and its artifacts in a temporary folder given as a file:// URL."""
    root = tmp_path_factory.mktemp("mlflow-postgres")
    settings = synthetic_training_settings(
        root,
        redis_url,
        mlflow_port=free_port(),
        mlflow_backend_store_uri=database_url,
        mlflow_artifacts_destination=(root / "artifacts").as_uri(),
        serve_pairs=[PREDICTABLE],
        serve_horizons=[1],
    )
    services.ensure_mlflow(settings)
    yield settings
    services.stop_services(settings)


@pytest.fixture(scope="module")
def uri(postgres_settings: Settings) -> str:
    return services.ensure_mlflow(postgres_settings)


@pytest.fixture(scope="module")
def trained(postgres_settings: Settings, uri: str) -> PairResult:
    """The real training path (baselines and lasso, gated and registered) run once against the server."""
    options = TrainingOptions.from_settings(postgres_settings, ("baseline", "lasso"), trials=2)
    return train_pair(postgres_settings, PREDICTABLE, options, uri)


def test_runs_metrics_versions_and_aliases_land_in_postgresql(
    postgres_settings: Settings, database_url: str, trained: PairResult
):
    name = registered_model_name(PREDICTABLE, 1)
    run_ids = {m.run_id for m in trained.models}
    runs = dict(_query(database_url, "SELECT run_uuid, status FROM runs"))
    assert set(runs) == run_ids and set(runs.values()) == {"FINISHED"}
    metrics = _query(database_url, "SELECT run_uuid, key FROM latest_metrics WHERE run_uuid = ANY(%s)", list(run_ids))
    assert {r for r, key in metrics if key == "test_mae"} == run_ids

    (lasso,) = [m for m in trained.models if m.version]
    assert lasso.version is not None
    version = int(lasso.version)
    versions = _query(
        database_url, "SELECT version, run_id, status FROM model_versions WHERE name = %s ORDER BY version", name
    )
    assert versions == [(version, lasso.run_id, "READY")]
    aliases = dict(_query(database_url, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", name))
    # Lasso beats the last price on this series, so the gate made it the champion (and it is the challenger).
    assert lasso.promoted and trained.champion == lasso.version
    assert aliases == {CHAMPION: version, CHALLENGER: version}
    assert not (postgres_settings.services.run_dir / "mlflow" / "mlflow.db").exists()


def test_artifacts_are_in_the_destination(postgres_settings: Settings, database_url: str, trained: PairResult):
    destination = Path(urlparse(str(postgres_settings.services.mlflow_artifacts_destination)).path)
    for run_id, artifact_uri in _query(database_url, "SELECT run_uuid, artifact_uri FROM runs"):
        plots = _in_destination(destination, artifact_uri) / "plots"
        assert (plots / "prediction_vs_actual.png").is_file() and (plots / "residuals.png").is_file(), run_id
    ((storage,),) = _query(
        database_url,
        "SELECT storage_location FROM model_versions WHERE name = %s",
        registered_model_name(PREDICTABLE, 1),
    )
    assert (_in_destination(destination, storage) / "MLmodel").is_file()


def test_the_champion_is_served_by_alias(postgres_settings: Settings, uri: str, trained: PairResult):
    store = ModelStore.from_settings(postgres_settings, uri, feature_store(postgres_settings).get_feature_service)
    store.refresh()
    assert store.ready(), store.status
    served = store.get(ModelKey(PREDICTABLE, 1))
    assert served is not None and served.alias == CHAMPION and served.version == trained.champion
    assert served.features == FEATURES
    row = build_dataset(postgres_settings, PREDICTABLE, "1m", 1).frame[list(FEATURES)].tail(1).reset_index(drop=True)
    assert np.isfinite(served.predict(row)[PREDICTED_PRICE]).all()


def _unreachable_settings(tmp_path: Path, backend: str) -> Settings:
    return Settings(
        _env_file=None,
        run_dir=tmp_path / "run",
        mlflow_tracking_uri=None,
        mlflow_port=free_port(),
        mlflow_backend_store_uri=backend,
        mlflow_artifacts_destination=(tmp_path / "artifacts").as_uri(),
    )


def _started_nothing(settings: Settings) -> bool:
    run_dir = settings.services.run_dir
    return (
        not (run_dir / "mlflow.json").exists()
        and not (run_dir / "mlflow").exists()
        and not services.mlflow_healthy(f"http://127.0.0.1:{settings.services.mlflow_port}")
    )


def test_a_backend_store_where_nothing_listens_is_one_redacted_error(tmp_path: Path):
    port = free_port()
    settings = _unreachable_settings(tmp_path, f"postgresql://postgres:s3cret@127.0.0.1:{port}/mlflow")
    with pytest.raises(services.ServiceError) as raised:
        services.ensure_mlflow(settings)
    message = str(raised.value)
    assert f"The MLflow backend store postgresql://postgres:***@127.0.0.1:{port}/mlflow does not answer" in message
    assert "Connection refused" in message and "s3cret" not in message
    assert _started_nothing(settings) and not (tmp_path / "artifacts").exists()


def test_training_against_a_missing_database_fails_clearly_and_registers_nothing(tmp_path: Path, monkeypatch):
    """The user-facing command: one message naming the store (redacted), exit status 1, no traceback."""
    name = f"coinflow_it_mlflow_missing_{uuid.uuid4().hex[:10]}"
    backend = f"{POSTGRES_URL.replace('postgres@', 'postgres:s3cret@', 1)}/{name}"
    settings = _unreachable_settings(tmp_path, backend)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for variable, value in {
        "COINFLOW_RUN_DIR": settings.services.run_dir,
        "COINFLOW_MLFLOW_PORT": settings.services.mlflow_port,
        "COINFLOW_MLFLOW_BACKEND_STORE_URI": backend,
        "COINFLOW_MLFLOW_ARTIFACTS_DESTINATION": settings.services.mlflow_artifacts_destination,
    }.items():
        monkeypatch.setenv(variable, str(value))
    outcome = CliRunner().invoke(app, ["train", "--pair", PREDICTABLE, "--models", "lasso"])
    output = " ".join(outcome.output.split())
    assert outcome.exit_code == 1 and isinstance(outcome.exception, SystemExit), output  # handled, not raised
    assert f"The MLflow backend store {redact(backend)} does not answer" in output
    assert f'database "{name}" does not exist' in output
    assert "Traceback" not in output and "s3cret" not in output
    assert _started_nothing(settings) and not database_exists(name)


def _cut_off(name: str) -> None:
    """PostgreSQL lost to the server: the database refuses new connections and its open ones are ended."""
    with admin() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def _restore(name: str) -> None:
    with admin() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))


def _finished_runs(database_url: str, experiment: str) -> int:
    ((count,),) = _query(
        database_url,
        "SELECT count(*) FROM runs JOIN experiments USING (experiment_id) WHERE experiments.name = %s "
        "AND runs.status = 'FINISHED'",
        experiment,
    )
    return int(count)


def test_postgresql_lost_during_training_is_one_clear_error_and_nothing_half_registered(
    postgres_settings: Settings, database_url: str, uri: str, tmp_path: Path
):
    """`train` of three model families; once its first run has finished, PostgreSQL refuses the server. The command
    ends with exit status 1 and one line naming the server, no traceback; every version belongs to a finished run
    and every alias to a version. Then the store is back and the server serves again."""
    name = urlparse(database_url).path.lstrip("/")
    experiment = registered_model_name(RANDOM_WALK, 1)
    env = env_for(postgres_settings) | {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    }
    log = tmp_path / "train.log"
    with log.open("w") as out:
        command = [sys.executable, "-m", "training_pipeline", "train", "--pair", RANDOM_WALK]
        command += ["--models", "baseline,lasso,xgboost", "--trials", "40"]
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while _finished_runs(database_url, experiment) == 0:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no run finished in 300 s"
                time.sleep(0.2)
            _cut_off(name)
            try:
                code = process.wait(timeout=240)
            finally:
                _restore(name)
        finally:
            process.kill()
    output = log.read_text()
    flat = " ".join(output.split())
    assert code == 1, output
    assert f"The MLflow server {uri} failed while training:" in flat, output
    assert "versions are registered only for finished runs" in flat
    assert "Traceback" not in output, output

    runs = dict(_query(database_url, "SELECT run_uuid, status FROM runs"))
    versions = _query(database_url, "SELECT name, version, run_id FROM model_versions")
    assert all(runs[run_id] == "FINISHED" for _, _, run_id in versions), (versions, runs)
    aliases = _query(database_url, "SELECT name, alias, version FROM registered_model_aliases")
    assert {(n, v) for n, _, v in aliases} <= {(n, v) for n, v, _ in versions}, (aliases, versions)
    assert services.ensure_mlflow(postgres_settings) == uri  # the store is back: the same server reads it again


def test_a_running_server_whose_database_is_gone_is_one_clear_error(
    postgres_settings: Settings, database_url: str, uri: str
):
    """Last in this module (it drops the module's database): PostgreSQL loses the store under the running server,
    and the next command that uses the server stops at once, before it logs anything, naming the store."""
    name = urlparse(database_url).path.lstrip("/")
    drop_database(name)
    assert services.mlflow_healthy(uri)  # its health check does not read the store
    with pytest.raises(services.ServiceError) as raised:
        services.ensure_mlflow(postgres_settings)
    message = str(raised.value)
    assert f"cannot read its backend store ({redact(database_url)})" in message
    assert f'database "{name}" does not exist' in message
