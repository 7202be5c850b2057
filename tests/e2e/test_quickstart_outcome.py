"""What `make quickstart` must leave behind: a registered model, features in Redis, a serving API."""

from __future__ import annotations

import math

import httpx
import pytest
from mlflow import MlflowClient

from coinflow import services
from coinflow.contracts import registered_model_name
from coinflow.feature_store import feature_store
from coinflow.settings import Settings
from feature_repo.names import regression_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def pair(settings: Settings) -> str:
    return settings.training.pairs[0]


def test_a_model_is_registered_with_a_served_alias(settings: Settings, pair: str):
    tracking_uri = services.ensure_mlflow(settings)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    name = registered_model_name(pair, settings.training.horizon_minutes)
    assert client.search_model_versions(f"name='{name}'"), f"no version of {name}"
    assert client.get_model_version_by_alias(name, "challenger").version


def test_the_online_store_holds_features_of_the_pair(settings: Settings, pair: str):
    store = feature_store(settings)
    service = store.get_feature_service(regression_service(settings.stream.candle_interval))
    row = store.get_online_features(features=service, entity_rows=[{"pair": pair}]).to_dict()
    assert row["close"][0] is not None and row["close"][0] > 0
    assert row["rsi_14"][0] is not None and 0 <= row["rsi_14"][0] <= 100


def test_the_api_serves_a_prediction(settings: Settings, pair: str):
    base = f"http://{settings.serve.host}:{settings.serve.port}"
    assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
    response = httpx.post(f"{base}/predict", json={"pair": pair}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pair"] == pair
    assert math.isfinite(body["predicted_price"]) and body["predicted_price"] > 0
    # A one-minute forecast stays within a few percent of the current price.
    assert abs(body["predicted_price"] / body["current_price"] - 1) < 0.05
