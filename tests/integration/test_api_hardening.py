"""Hostile requests, planted credentials and authentication, against the real API, CLIs, Redis, Feast and MLflow.

A password is planted in REDIS_URL and MLFLOW_TRACKING_URI (and an API key is
set): it must never appear in an API response, a log record or a command's
output. The API refuses non-standard JSON (NaN, Infinity, huge numbers) with
400, oversized bodies with 413, and answers 401 without the key. The project's
MLflow server with basic auth refuses anonymous clients and serves the
project's own. Ports come from COINFLOW_IT_HARDENING_PORT (default 19421) on:
+0 closed (Redis down), +1 closed (MLflow down), +2 MLflow with auth, +4 a
Redis with a password, +5 the API started as a command.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from coinflow import services
from coinflow.settings import Settings
from inference_pipeline.app import create_app
from tests.support.polling import wait_until
from tests.support.ports import running

pytestmark = pytest.mark.integration

BASE_PORT = int(os.environ.get("COINFLOW_IT_HARDENING_PORT", "19421"))
REDIS_DOWN, MLFLOW_DOWN, MLFLOW_AUTH, REDIS_PASSWORD, SERVE = (BASE_PORT + i for i in (0, 1, 2, 4, 5))
PASSWORD = "PLANTED-pw-7f3a9c"
API_KEY = "PLANTED-key-51b2e0"
PAIR = "BTC/USDC"
HOSTILE_BODIES = [
    b'{"pair":"BTC/USDC","horizon":NaN}',
    b'{"pair":"BTC/USDC","horizon":Infinity}',
    b'{"pair":"BTC/USDC","horizon":-Infinity}',
    b'{"pairs":[NaN]}',
    b'{"pairs":["BTC/USDC"],"horizon":1e400}',
    b'{"pair":"BTC/USDC","horizon":' + b"9" * 5000 + b"}",
    b"[" * 20_000,
    b'\xff{"pair"}',
    b"{not json",
]


def _planted(settings: Settings) -> Settings:
    return settings.override(
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{REDIS_DOWN}/0",
        serve_pairs=[PAIR],
        serve_horizons=[1],
        api_key=SecretStr(API_KEY),
        alias_poll_interval_s=0.5,
    )


@pytest.fixture(scope="module")
def hardened(base_settings: Settings):
    """The API with a planted Redis password (Redis down), a planted MLflow password (MLflow down) and a key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        settings = _planted(base_settings)
        app = create_app(settings, f"http://bob:{PASSWORD}@127.0.0.1:{MLFLOW_DOWN}")
        with running(app) as url, httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": API_KEY}) as client:
            wait_until(lambda: client.get("/models").json()["models"][0]["last_error"] is not None, timeout_s=60)
            yield SimpleNamespace(url=url, client=client, settings=settings)


def test_no_response_or_log_record_holds_a_credential(hardened, caplog):
    caplog.set_level(logging.INFO)
    client = hardened.client
    responses = [client.get(path) for path in ("/ready", "/health", "/models", "/metrics", "/docs", "/openapi.json")]
    responses += [
        client.post("/predict", json={"pair": PAIR}),
        client.post("/predict/batch", json={"pairs": [PAIR]}),
        client.post("/predict", json={"pair": "DOGE/USD"}),
        client.post("/predict", json={"pair": 1}),
        httpx.get(f"{hardened.url}/ready"),
    ]
    wait_until(lambda: "registry" in caplog.text)
    ready = responses[0].json()
    assert responses[0].status_code == 503 and ready["online_store"] is False
    assert ready["problems"][0] == f"online store redis://:***@127.0.0.1:{REDIS_DOWN}/0 does not answer"
    last_error = responses[2].json()["models"][0]["last_error"]
    assert f"http://bob:***@127.0.0.1:{MLFLOW_DOWN}" in last_error
    for response in responses:
        assert PASSWORD not in response.text and API_KEY not in response.text, response.request.url
    assert PASSWORD not in caplog.text and API_KEY not in caplog.text and "bob:***@" in caplog.text


def test_every_route_but_health_needs_the_key(hardened):
    url = hardened.url
    routes = [
        ("GET", "/ready"),
        ("GET", "/models"),
        ("GET", "/metrics"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/predict"),
        ("POST", "/predict/batch"),
        ("GET", "/no-such-route"),
    ]
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"X-API-Key": API_KEY[:-1]},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": "Bearer wrong"},
    ):
        for method, path in routes:
            response = httpx.request(method, f"{url}{path}", headers=headers, content=b"{not json")
            assert response.status_code == 401, (method, path, headers)
            assert API_KEY not in response.text and "X-API-Key" in response.json()["detail"]
    assert httpx.get(f"{url}/health").status_code == 200
    for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
        assert httpx.get(f"{url}/models", headers=headers).status_code == 200
        assert httpx.get(f"{url}/metrics", headers=headers).status_code == 200
        assert httpx.get(f"{url}/ready", headers=headers).status_code == 503  # authenticated; Redis is down
        assert httpx.post(f"{url}/predict", headers=headers, json={"pair": PAIR}).status_code == 503


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_bodies_that_are_not_json_get_400_with_a_clean_body(hardened, path):
    for body in HOSTILE_BODIES:
        response = hardened.client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (body[:60], response.text[:300])
        assert response.json()["detail"].startswith("The body is not JSON") and len(response.content) < 300


def test_strict_types_bounded_echoes_and_a_body_limit(hardened):
    client = hardened.client
    for body in (
        {"pair": PAIR, "horizon": True},
        {"pair": PAIR, "horizon": "1"},
        {"pair": PAIR, "horizon": 1.5},
        {"pairs": [PAIR], "horizon": False},
    ):
        path = "/predict/batch" if "pairs" in body else "/predict"
        response = client.post(path, json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "horizon"], body
    long_pair = client.post("/predict", json={"pair": "A" * 60_000})
    assert long_pair.status_code == 422 and len(long_pair.content) < 1_000
    assert long_pair.json()["detail"][0]["input"].endswith("(60000 characters)")
    surrogate = client.post("/predict", content=b'{"pair": "\\ud800"}', headers={"content-type": "application/json"})
    assert surrogate.status_code == 422 and surrogate.content.isascii()
    huge = client.post(
        "/predict", content=b'{"pair": "' + b"A" * 10_000_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413 and len(huge.content) < 100
    assert client.post("/predict", json={"pair": PAIR}).status_code == 503  # the limit leaves small bodies alone
    assert client.post("/predict", json={"pair": PAIR, "horizon": 1.0}).status_code == 503  # JSON Schema's integer


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.just(PAIR),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(
    body=st.one_of(
        st.fixed_dictionaries({"pair": JSON_VALUES}, optional={"horizon": JSON_VALUES}),
        st.fixed_dictionaries(
            {"pairs": st.lists(JSON_VALUES, max_size=5) | JSON_VALUES}, optional={"horizon": JSON_VALUES}
        ),
        JSON_VALUES,
    ),
    path=st.sampled_from(["/predict", "/predict/batch"]),
)
@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_bodies_with_nan_infinity_and_booleans_never_get_a_server_error(hardened, body, path):
    """Python's json writes NaN, Infinity and -Infinity for non-finite floats: the parser gets those literals."""
    text = json.dumps(body, allow_nan=True)
    response = hardened.client.post(path, content=text.encode(), headers={"content-type": "application/json"})
    assert response.status_code in (400, 404, 422, 503), (text[:200], response.status_code, response.text[:300])
    json.loads(response.content, parse_constant=lambda name: pytest.fail(f"{name} in a response"))
    constants: list[str] = []  # NaN / Infinity literals outside strings ("NaN" inside a string is just text)
    json.loads(text, parse_constant=constants.append)
    if constants:
        assert response.status_code == 400


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory) -> str:
    """A throwaway redis-server that requires a password (stopped at the end)."""
    directory = tmp_path_factory.mktemp("redis-pw")
    process = subprocess.Popen(
        [
            services._redis_binary(),
            "--port",
            str(REDIS_PASSWORD),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{REDIS_PASSWORD}/0"
    try:
        wait_until(lambda: services.redis_healthy(url), timeout_s=20)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def _cli_env(settings: Settings, tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINFLOW_", "MLFLOW_"))}
    env.pop("REDIS_URL", None)
    env.pop("KAFKA_BROKER_ADDRESS", None)
    return env | {
        "COINFLOW_RUN_DIR": str(tmp_path / "run"),
        "COINFLOW_FEATURE_REPO_PATH": str(settings.feast.repo_path),
        "COINFLOW_FEAST_PROJECT": settings.feast.project,
        "COINFLOW_SERVE_PORT": str(SERVE),
        "COINFLOW_METRICS_PORT": "0",
        "MLFLOW_TRACKING_URI": f"http://bob:{PASSWORD}@127.0.0.1:{MLFLOW_DOWN}",
        "COINFLOW_API_KEY": API_KEY,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "COLUMNS": "300",
        **extra,
    }


def _cli(args: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def test_commands_print_no_credential(base_settings, password_redis, tmp_path):
    env = _cli_env(
        base_settings,
        tmp_path,
        REDIS_URL=password_redis,
        KAFKA_BROKER_ADDRESS=f"127.0.0.1:{base_settings.services.embedded_broker_port}",
    )
    up = _cli(["coinflow", "up"], env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"redis:  redis://:***@127.0.0.1:{REDIS_PASSWORD}/0" in up.stdout
    assert f"mlflow: http://bob:***@127.0.0.1:{MLFLOW_DOWN}" in up.stdout
    status = _cli(["coinflow", "status"], env)
    assert f"redis://:***@127.0.0.1:{REDIS_PASSWORD}/0" in status.stdout and "up" in status.stdout
    features = _cli(["feature_pipeline", "online-features", "--pairs", PAIR], env)
    assert features.returncode == 0 and "redis://:***@" in features.stdout, features.stdout + features.stderr
    ui = _cli(["training_pipeline", "mlflow-ui"], env)
    assert f"MLflow UI: http://bob:***@127.0.0.1:{MLFLOW_DOWN}" in ui.stdout
    for done in (up, status, features, ui):
        assert PASSWORD not in done.stdout + done.stderr and API_KEY not in done.stdout + done.stderr


def test_serve_prints_no_credential_and_requires_the_key(base_settings, tmp_path):
    env = _cli_env(
        base_settings, tmp_path, REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{REDIS_DOWN}/0", COINFLOW_SERVE_PAIRS=PAIR
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "inference_pipeline", "serve"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{SERVE}"
    try:
        wait_until(lambda: services._port_open("127.0.0.1", SERVE) or process.poll() is not None, timeout_s=120)
        assert httpx.get(f"{url}/models").status_code == 401
        models = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {API_KEY}"})
        assert models.status_code == 200 and PASSWORD not in models.text
        wait_until(lambda: httpx.get(f"{url}/models", headers={"X-API-Key": API_KEY}).json()["models"][0]["last_error"])
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert f"The online store redis://:***@127.0.0.1:{REDIS_DOWN}/0 does not answer" in output
    assert f"models from http://bob:***@127.0.0.1:{MLFLOW_DOWN}" in output and "API key required" in output
    assert "bob:***@" in output  # the registry warnings are logged, masked
    assert PASSWORD not in output and API_KEY not in output


def test_online_features_with_redis_down_is_one_clear_line(base_settings, tmp_path):
    env = _cli_env(base_settings, tmp_path, REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{REDIS_DOWN}/0")
    done = _cli(["feature_pipeline", "online-features", "--pairs", PAIR], env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"The online store redis://:***@127.0.0.1:{REDIS_DOWN}/0 could not be read" in done.stdout
    assert "Traceback" not in output and PASSWORD not in output


@pytest.fixture
def mlflow_credentials():
    """Whatever MLflow credentials a test exports into this process are removed after it."""
    yield
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(name, None)


def test_mlflow_basic_auth_refuses_anonymous_clients_and_serves_the_projects(
    base_settings, tmp_path, mlflow_credentials
):
    settings = base_settings.override(
        run_dir=tmp_path / "run",
        mlflow_port=MLFLOW_AUTH,
        mlflow_tracking_uri=None,
        mlflow_auth_username="coinflow-admin",
        mlflow_auth_password=SecretStr(PASSWORD),
    )
    try:
        uri = services.ensure_mlflow(settings)
        anonymous = httpx.get(f"{uri}/api/2.0/mlflow/experiments/search", params={"max_results": 1})
        assert anonymous.status_code == 401
        credentials = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
        assert credentials == {"MLFLOW_TRACKING_USERNAME": "coinflow-admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
        with pytest.raises(MlflowException) as refused:
            MlflowClient(uri, registry_uri=uri).search_experiments()
        assert refused.value.get_http_status_code() == 401
        assert services.ensure_mlflow(settings) == uri  # reused, and its clients get the credentials again
        client = MlflowClient(uri, registry_uri=uri)
        run = client.create_run(client.create_experiment("auth-check"))
        client.log_metric(run.info.run_id, "m", 1.0)
        client.log_text(run.info.run_id, "proxied through the server", "model/note.txt")  # artifacts need the login too
        assert "note.txt" in [f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(run.info.run_id, "model")]
        client.create_registered_model("auth-model")
        version = client.create_model_version("auth-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_registered_model_alias("auth-model", "champion", version.version)
        assert client.get_model_version_by_alias("auth-model", "champion").version == version.version
        for wrong, expected in (
            ({"mlflow_auth_password": SecretStr("not-it")}, "refuses the user"),
            ({"mlflow_auth_password": None}, "requires authentication"),
        ):
            with pytest.raises(services.ServiceError, match=expected):
                services.ensure_mlflow(settings.override(**wrong))
        log = (settings.services.run_dir / "mlflow.log").read_text()
        assert (
            PASSWORD not in log
            and PASSWORD not in (settings.services.run_dir / "mlflow" / "basic_auth.ini").read_text()
        )
    finally:
        services.stop_services(settings, names=("mlflow",))
