"""The prediction API over HTTP (uvicorn) with the real Redis, a real Feast repository and a real MLflow server.

Models are trained on real candles (the bundled 2023 Q1 BTC/USDC minutes, moved
so that the last closes at the last whole minute) and logged and registered
through the training pipeline's pyfunc, as `train` does. The MLflow server is
the project's own (`ensure_mlflow`) on its own port (COINFLOW_IT_INFERENCE_MLFLOW_PORT,
default 15223) with a temporary database; Redis (the session's own) and the
feature repository come from the integration conftest.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import mlflow
import pandas as pd
import pytest
import redis
import schemathesis
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error

from coinflow import services
from coinflow.contracts import CHALLENGER, registered_model_name
from coinflow.feature_store import apply_feature_repo, feature_store
from coinflow.settings import Settings
from feature_repo.names import ENTITY, regression_service
from inference_pipeline.app import create_app
from inference_pipeline.features import OnlineFeatures, serving_store
from tests.support.feature_runs import env_for
from tests.support.inference import (
    FEATURES,
    MINUTE_MS,
    feature_rows,
    fit_xgboost,
    register,
    training_frame,
    write_features,
)
from tests.support.polling import wait_until
from tests.support.ports import free_port, running
from training_pipeline.price.models import LastPrice
from training_pipeline.price.sequence import LSTMPriceModel

pytestmark = pytest.mark.integration

FRESH, STALE, MOVING, UNMODELLED = "BTC/USDC", "ETH/USDC", "XBT/USDC", "SOL/USDC"


@pytest.fixture(scope="module")
def world(base_settings: Settings, tracking_uri: str, monkeypatch_module) -> SimpleNamespace:
    """Online rows (FRESH and MOVING closing at the last whole minute, STALE ten minutes earlier) and champions."""
    monkeypatch_module.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    redis.Redis.from_url(base_settings.services.redis_url).flushdb()
    now_minute = int(time.time()) // 60 * MINUTE_MS
    rows = feature_rows(FRESH, 600, now_minute)
    stale = [{**row, "pair": STALE} for row in feature_rows(FRESH, 600, now_minute - 10 * MINUTE_MS)]
    moving = [{**row, "pair": MOVING} for row in rows]
    write_features(base_settings, rows[-70:] + stale[-70:] + moving[-70:])
    model = fit_xgboost(rows[:-1])
    versions = {pair: register(tracking_uri, pair, 1, model, rows) for pair in (FRESH, STALE, MOVING)}
    settings = base_settings.override(
        mlflow_tracking_uri=tracking_uri, serve_pairs=[FRESH, STALE], serve_horizons=[1], alias_poll_interval_s=0.5
    )
    return SimpleNamespace(settings=settings, uri=tracking_uri, last=rows[-1], versions=versions)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def api(world) -> SimpleNamespace:
    """The API of FRESH and STALE with the default age limit, served over HTTP."""
    app = create_app(world.settings, world.uri)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        yield SimpleNamespace(app=app, url=url, client=client)


def serve(world, **overrides):
    return running(create_app(world.settings.override(**overrides), world.uri))


def test_the_champion_predicts_from_the_freshest_features(api, world):
    before = time.time()
    response = api.client.post("/predict", json={"pair": FRESH})
    assert response.status_code == 200, response.text
    body = response.json()
    last = world.last
    assert body["model_name"] == registered_model_name(FRESH, 1)
    assert body["model_version"] == world.versions[FRESH] and body["model_alias"] == "champion"
    assert body["horizon"] == 1 and body["current_price"] == last["close"]
    feature_time = pd.Timestamp(body["feature_time"])
    assert feature_time == pd.Timestamp(last["window_end_ms"], unit="ms", tz="UTC")
    assert (
        before - feature_time.timestamp() - 1
        <= body["feature_age_seconds"]
        <= time.time() - feature_time.timestamp() + 1
    )
    # The same number as the registered model itself gives on the row written to the online store.
    mlflow.set_registry_uri(world.uri)
    reference = mlflow.pyfunc.load_model(f"models:/{registered_model_name(FRESH, 1)}@champion")
    expected = reference.predict(pd.DataFrame([{name: last[name] for name in FEATURES}]))
    assert body["predicted_price"] == pytest.approx(expected["predicted_price"].iloc[0], rel=1e-12)
    assert body["predicted_return"] == pytest.approx(expected["predicted_log_return"].iloc[0], rel=1e-12)
    assert len({api.client.post("/predict", json={"pair": FRESH}).json()["prediction_id"] for _ in range(3)}) == 3


def _without_timing(body: bytes) -> bytes:
    """A prediction's bytes without the fields that differ between two requests (its id and the features' age)."""
    return re.sub(rb'"(prediction_id|feature_age_seconds)":("[0-9a-f]+"|[0-9.e+-]+)', rb'"\1":_', body)


def test_the_direct_path_answers_byte_for_byte_as_the_route(api):
    """POST /predict with a plain JSON body is answered before the framework (`direct.py`); a JSON subtype goes to
    the FastAPI route. Both give the same status, headers and bytes, for a prediction and for each refusal."""
    for body in (
        {"pair": FRESH},
        {"pair": FRESH, "horizon": 1},
        {"pair": "DOGE/USD"},
        {"pair": STALE},
        {"pair": FRESH, "horizon": 5},
    ):
        direct = api.client.post("/predict", json=body)
        routed = api.client.post(
            "/predict", content=json.dumps(body), headers={"content-type": "application/vnd.coinflow+json"}
        )
        assert direct.status_code == routed.status_code, (body, direct.text, routed.text)
        # The date and (with the age's digits) the length are timing; every other header is the same.
        timing = {"date", "content-length"}
        assert {k: v for k, v in direct.headers.items() if k not in timing} == {
            k: v for k, v in routed.headers.items() if k not in timing
        }
        assert int(direct.headers["content-length"]) == len(direct.content)
        assert _without_timing(direct.content) == _without_timing(routed.content), body


def test_online_read_equals_feasts_get_online_features(world):
    """The API's read (Feast's provider, per view) gives what Feast's get_online_features gives, also for a pair
    that was never written."""
    store = serving_store(world.settings)
    pairs = [FRESH, "NEVER/WRITTEN", STALE]
    rows = asyncio.run(OnlineFeatures(store).read(regression_service("1m"), pairs))
    expected = store.get_online_features(
        features=store.get_feature_service(regression_service("1m")), entity_rows=[{ENTITY: p} for p in pairs]
    ).to_dict(include_event_timestamps=True)
    for i, row in enumerate(rows):
        assert row.pair == pairs[i]
        assert list(row.values) == list(FEATURES)
        assert row.values == {name: expected[name][i] for name in FEATURES}
        times = [expected[f"{name}__ts"][i] for name in FEATURES if expected[name][i] is not None]
        assert row.feature_time == (datetime.fromtimestamp(min(times), UTC) if times else None)
    assert rows[0].missing == () and rows[0].values["close"] == world.last["close"]
    assert rows[1].feature_time is None and set(rows[1].missing) == set(FEATURES)


def test_a_sequence_model_is_served_from_its_pairs_online_window(world):
    """An LSTM champion reads the last N candles from the window view (one online row) and answers what its pyfunc
    answers on the same candles; a model reading more candles than the window holds is refused with the reason."""
    rows = feature_rows(FRESH, 600)
    lstm = LSTMPriceModel(
        FEATURES, {"sequence_length": 10, "epochs": 1, "hidden_size": 8, "batch_size": 64, "device": "cpu"}
    )
    frame = training_frame(rows[:-1])
    lstm.fit(frame.assign(event_timestamp=pd.to_datetime(frame["window_end_ms"], unit="ms", utc=True)))
    version = register(world.uri, FRESH, 5, lstm, rows)
    with serve(world, serve_pairs=[FRESH], serve_horizons=[5]) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        response = client.post("/predict", json={"pair": FRESH, "horizon": 5})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == version and body["current_price"] == world.last["close"]
        assert pd.Timestamp(body["feature_time"]) == pd.Timestamp(world.last["window_end_ms"], unit="ms", tz="UTC")
        reference = mlflow.pyfunc.load_model(f"models:/{registered_model_name(FRESH, 5)}/{version}").predict(
            pd.DataFrame(rows[-10:])[list(FEATURES)]
        )
        assert body["predicted_price"] == pytest.approx(reference["predicted_price"].iloc[-1], rel=1e-6)
    with (
        serve(world, serve_pairs=[FRESH], serve_horizons=[5], online_window_length=5) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        problem = wait_until(lambda: client.get("/models").json()["models"][0]["problem"])
        assert "10 candles per prediction; the online window holds 5" in problem
        assert client.post("/predict", json={"pair": FRESH, "horizon": 5}).status_code == 503


def test_models_health_and_readiness(api, world):
    assert api.client.get("/health").json() == {"status": "ok"}
    ready = api.client.get("/ready").json()
    assert ready == {"ready": True, "online_store": True, "models_loaded": 2, "models_expected": 2, "problems": []}
    models = api.client.get("/models").json()
    assert models["selector"] == "alias 'champion'"
    fresh = next(m for m in models["models"] if m["pair"] == FRESH)
    version = MlflowClient(world.uri, registry_uri=world.uri).get_model_version(
        registered_model_name(FRESH, 1), world.versions[FRESH]
    )
    assert fresh["loaded"] and fresh["run_id"] == version.run_id and fresh["model_type"] == "xgboost"
    service = feature_store(world.settings).get_feature_service(fresh["feature_service"])
    assert fresh["features"] == [f.name for p in service.feature_view_projections for f in p.features]


def test_bad_requests_get_4xx_naming_what_is_served(api):
    unknown = api.client.post("/predict", json={"pair": "DOGE/USD"})
    assert unknown.status_code == 404
    assert unknown.json()["served_pairs"] == [FRESH, STALE] and "DOGE/USD" in unknown.json()["detail"]
    horizon = api.client.post("/predict", json={"pair": FRESH, "horizon": 5})
    assert horizon.status_code == 404 and horizon.json()["served_horizons"] == [1]
    for body in (
        {},
        {"pair": 42},
        {"pair": "BTCUSDC"},
        {"pair": FRESH, "horizon": 0},
        {"pair": FRESH, "extra": 1},
        {"pairs": []},
        [FRESH],
    ):
        assert api.client.post("/predict", json=body).status_code == 422, body
    assert (
        api.client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert api.client.post("/predict/batch", json={"pairs": []}).status_code == 422
    assert api.client.post("/predict/batch", json={"pairs": [FRESH] * 101}).status_code == 422


def test_stale_features_are_refused_with_their_age(api):
    response = api.client.post("/predict", json={"pair": STALE})
    assert response.status_code == 503
    body = response.json()
    assert 600 <= body["feature_age_seconds"] < 600 + 120 and body["max_feature_age_seconds"] == 180
    assert STALE in body["detail"] and "older than the 180 s limit" in body["detail"]
    batch = api.client.post("/predict/batch", json={"pairs": [FRESH, STALE]})
    assert batch.status_code == 503 and STALE in batch.json()["detail"] and FRESH not in batch.json()["detail"]


def test_no_age_limit_and_a_batch_with_one_online_read(world):
    app = create_app(world.settings.override(max_feature_age_s=0), world.uri)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        features = app.state.runtime.features
        reads = Counter()
        read = features.read

        async def counted(service, pairs):
            reads[tuple(pairs)] += 1
            return await read(service, pairs)

        features.read = counted
        response = client.post("/predict/batch", json={"pairs": [STALE, FRESH]})
        assert response.status_code == 200, response.text
        assert [p["pair"] for p in response.json()["predictions"]] == [STALE, FRESH]
        assert reads == Counter({(STALE, FRESH): 1})
        single = client.post("/predict", json={"pair": FRESH}).json()
        assert response.json()["predictions"][1]["predicted_price"] == single["predicted_price"]


def test_no_model_for_the_alias_is_503_and_not_ready(world):
    with serve(world, serve_model_alias=CHALLENGER, serve_pairs=[FRESH]) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/models").json()["models"][0]["checked_at"])
        ready = client.get("/ready")
        assert ready.status_code == 503 and not ready.json()["ready"] and ready.json()["online_store"]
        assert f"alias '{CHALLENGER}'" in ready.json()["problems"][0]
        response = client.post("/predict", json={"pair": FRESH})
        assert response.status_code == 503 and registered_model_name(FRESH, 1) in response.json()["detail"]
    with serve(world, serve_pairs=[FRESH, UNMODELLED]) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_until(lambda: client.get("/models").json()["models"][0]["loaded"])
        assert client.post("/predict", json={"pair": FRESH}).status_code == 200
        assert client.post("/predict", json={"pair": UNMODELLED}).status_code == 503
        assert client.get("/ready").status_code == 503


def test_a_pinned_version_is_served_without_alias(world):
    with (
        serve(world, serve_model_version=int(world.versions[FRESH]), serve_pairs=[FRESH]) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        wait_until(lambda: client.get("/ready").status_code == 200)
        body = client.post("/predict", json={"pair": FRESH}).json()
        assert body["model_version"] == world.versions[FRESH] and body["model_alias"] is None
        assert client.get("/models").json()["selector"] == f"version {world.versions[FRESH]}"


def test_metrics_count_requests_feature_age_and_model_version(api, world):
    api.client.post("/predict", json={"pair": FRESH})
    api.client.post("/predict", json={"pair": "DOGE/USD"})
    text = api.client.get("/metrics").text
    assert 'coinflow_api_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'coinflow_api_requests_total{method="POST",route="/predict",status="404"}' in text
    assert 'coinflow_api_request_duration_seconds_bucket{le="0.01",method="POST",route="/predict"}' in text
    assert 'coinflow_prediction_feature_age_seconds_count{pair="BTC/USDC"}' in text
    version_line = (
        f'coinflow_model_version{{horizon="1",model="{registered_model_name(FRESH, 1)}",pair="{FRESH}",'
        f"selector=\"alias 'champion'\"}} {float(world.versions[FRESH])}"
    )
    assert version_line in text


def test_the_alias_moves_under_concurrent_requests_without_errors(world):
    """Four clients predict MOVING while its champion moves from the XGBoost version to a last-price one."""
    name = registered_model_name(MOVING, 1)
    xgboost_version = world.versions[MOVING]
    last_price_version = register(world.uri, MOVING, 1, LastPrice(), feature_rows(FRESH, 200), alias=None)
    stop, seen = threading.Event(), [[] for _ in range(4)]

    def client_loop(out: list, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/predict", json={"pair": MOVING})
                out.append((response.status_code, response.json()))

    with serve(world, serve_pairs=[MOVING]) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        threads = [threading.Thread(target=client_loop, args=(out, url)) for out in seen]
        for thread in threads:
            thread.start()
        wait_until(lambda: all(len(out) >= 20 for out in seen))
        MlflowClient(world.uri, registry_uri=world.uri).set_registered_model_alias(name, "champion", last_price_version)
        wait_until(lambda: all(out[-1][1].get("model_version") == last_price_version for out in seen), timeout_s=60)
        counts = [len(out) for out in seen]
        wait_until(lambda: all(len(out) >= n + 20 for out, n in zip(seen, counts, strict=True)))
        stop.set()
        for thread in threads:
            thread.join()
        assert client.get("/models").json()["models"][0]["version"] == last_price_version
    for out in seen:
        assert {status for status, _ in out} == {200}
        versions = [body["model_version"] for _, body in out]
        switch = versions.index(last_price_version)
        # Each client sees the old version, then only the new one: the swap is atomic and never goes back.
        assert set(versions[:switch]) == {xgboost_version} and set(versions[switch:]) == {last_price_version}
        for _, body in out[switch:]:
            assert body["predicted_return"] == 0.0 and body["predicted_price"] == body["current_price"]
        assert all(body["predicted_return"] != 0.0 for _, body in out[:switch])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _predictions_by_version(metrics: str, name: str) -> dict[str, float]:
    """The coinflow_predictions_total samples of model `name`, by version, from Prometheus text."""
    out = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "coinflow_predictions_total" and sample.labels["model"] == name:
                out[sample.labels["version"]] = sample.value
    return out


def test_two_workers_swap_the_champion_under_load_without_a_failed_request(world, tmp_path):
    """`serve --workers 2` under gunicorn: four clients on fresh connections (spread over both workers) predict
    while the champion moves. Not one request fails; once /models says the whole service serves the new version,
    every answer has it; /ready and /models speak for both workers, /metrics counts every request of both."""
    name = registered_model_name(MOVING, 1)
    old = world.settings
    old_version = MlflowClient(world.uri, registry_uri=world.uri).get_model_version_by_alias(name, "champion").version
    new_version = register(world.uri, MOVING, 1, LastPrice(), feature_rows(FRESH, 200), alias=None)
    port = free_port()
    settings = old.override(
        serve_pairs=[MOVING], serve_port=port, serve_workers=2, run_dir=tmp_path / "run", max_feature_age_s=0
    )
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    stop, seen = threading.Event(), [[] for _ in range(4)]

    def client_loop(out: list) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time: either worker answers
        with httpx.Client(base_url=url, timeout=30, limits=limits) as client:
            while not stop.is_set():
                sent = time.monotonic()  # a request sent before the swap may be answered by the old model after it
                response = client.post("/predict", json={"pair": MOVING})
                out.append((sent, response.status_code, response.json()))

    def service_serves(version: str) -> bool:
        (model,) = httpx.get(f"{url}/models", timeout=10).json()["models"]
        return model["loaded"] and model["version"] == version and model["problem"] is None

    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference_pipeline", "serve"],
            env=env_for(settings),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: process.poll() is not None or _answers(f"{url}/ready"), timeout_s=120)
        assert process.poll() is None, log.read_text()
        ready = httpx.get(f"{url}/ready").json()
        assert ready["ready"] and ready["problems"] == [], ready
        reports = list((settings.services.run_dir / "serve" / f"port-{port}" / "workers").glob("worker-*.json"))
        assert len(reports) == 2, reports
        threads = [threading.Thread(target=client_loop, args=(out,)) for out in seen]
        for thread in threads:
            thread.start()
        wait_until(lambda: all(len(out) >= 20 for out in seen))
        MlflowClient(world.uri, registry_uri=world.uri).set_registered_model_alias(name, "champion", new_version)
        wait_until(lambda: service_serves(new_version), timeout_s=60)
        swapped = time.monotonic()
        counts = [len(out) for out in seen]
        wait_until(lambda: all(len(out) >= n + 20 for out, n in zip(seen, counts, strict=True)))
        stop.set()
        for thread in threads:
            thread.join()
        metrics = httpx.get(f"{url}/metrics").text
        assert httpx.get(f"{url}/ready").json()["ready"]
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    answers_ = [answer for out in seen for answer in out]
    assert {status for _, status, _ in answers_} == {200}
    assert {body["model_version"] for _, _, body in answers_} == {old_version, new_version}
    late = sorted((at - swapped, body["model_version"]) for at, _, body in answers_ if at > swapped)
    stale = [(round(after, 3), version) for after, version in late if version != new_version]
    assert not stale, (
        f"{len(stale)} of {len(late)} late answers had an old version: {stale[:5]}\n{log.read_text()[-3000:]}"
    )
    # Every answer of both workers is counted once in the aggregated metrics.
    by_version = _predictions_by_version(metrics, name)
    assert sum(by_version.values()) == len(answers_), by_version
    versions = Counter(body["model_version"] for _, _, body in answers_)
    assert by_version == {v: float(n) for v, n in versions.items()}
    served_by = {path.name for path in (settings.services.run_dir / "serve" / f"port-{port}" / "metrics").iterdir()}
    assert len({n for n in served_by if n.startswith("counter_")}) == 2, served_by  # both workers counted requests
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.fixture
def own_redis(tmp_path, world):
    """A redis-server of this test on a spare port (append-only file, so a restart keeps the rows)."""
    port = free_port()
    binary = services._redis_binary()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(tmp_path),
    ]
    state = {}

    def start() -> None:
        state["process"] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: services.redis_healthy(f"redis://127.0.0.1:{port}/0"), timeout_s=20)

    def stop() -> None:
        state["process"].send_signal(signal.SIGKILL)
        state["process"].wait(timeout=10)

    start()
    yield SimpleNamespace(url=f"redis://127.0.0.1:{port}/0", start=start, stop=stop)
    if state["process"].poll() is None:
        stop()


def test_a_redis_restart_gives_503_then_recovers(world, own_redis, tmp_path):
    overrides = {"redis_url": own_redis.url, "serve_pairs": [FRESH], "feast_registry_path": tmp_path / "registry.db"}
    settings = world.settings.override(**overrides)
    apply_feature_repo(settings)
    write_features(settings, feature_rows(FRESH, 60)[-2:])
    statuses: list[int] = []
    stop = threading.Event()
    with (
        serve(world, **overrides) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        wait_until(lambda: client.get("/ready").status_code == 200)

        def requests() -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    statuses.append(c.post("/predict", json={"pair": FRESH}).status_code)

        worker = threading.Thread(target=requests)
        worker.start()
        wait_until(lambda: statuses.count(200) >= 20)
        own_redis.stop()
        wait_until(lambda: statuses[-1] == 503 and statuses.count(503) >= 20)
        down = client.get("/ready")
        assert down.status_code == 503 and down.json()["online_store"] is False
        assert client.get("/health").status_code == 200
        own_redis.start()
        wait_until(lambda: statuses[-1] == 200, timeout_s=30)
        served_again = len(statuses)
        wait_until(lambda: len(statuses) >= served_again + 20)
        stop.set()
        worker.join()
        assert client.get("/ready").status_code == 200
    assert set(statuses) == {200, 503}
    first_503 = statuses.index(503)
    recovered = len(statuses) - statuses[::-1].index(503)
    assert set(statuses[:first_503]) == {200} and set(statuses[recovered:]) == {200}
    assert len(statuses) - recovered >= 20


# The schema is the app's own; building the app does no I/O, so any settings do.
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None), "http://127.0.0.1:1").openapi())


def no_server_fault(ctx, response, case) -> None:
    """5xx only as documented: 503 when a model, features or the online store are unavailable; never a 500."""
    assert response.status_code < 500 or response.status_code == 503, f"{response.status_code}: {response.text[:300]}"


@schema.parametrize()
def test_schemathesis_finds_no_server_error(case, api):
    case.call_and_validate(base_url=api.url, excluded_checks=[not_a_server_error], additional_checks=[no_server_fault])
