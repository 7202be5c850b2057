"""Integration fixtures: a real embedded broker, the real Redis and a real Feast repository.

The tests get their own broker port, Redis database, Feast project and a copy
of the feature repository in a temporary directory, so they never touch a
user's data; each test gets its own topics and consumer group.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import redis

from coinflow import services
from coinflow.feature_store import apply_feature_repo
from coinflow.settings import Settings

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
# Overridable so that two test sessions on one machine do not share a broker or database.
TEST_REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('COINFLOW_IT_REDIS_DB', '13')}"
TEST_BROKER_PORT = int(os.environ.get("COINFLOW_IT_BROKER_PORT", "19392"))


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("coinflow")
    repo = root / "feature_repo"
    repo.mkdir()
    for name in ("definitions.py", "names.py", "feature_store.yaml", ".feastignore"):
        shutil.copy(REPO / name, repo / name)
    settings = Settings(
        run_dir=root / "run",
        embedded_broker_port=TEST_BROKER_PORT,
        redis_url=TEST_REDIS_URL,
        feature_repo_path=repo,
        feast_project="coinflow_it",
        commit_interval_s=0.2,
        metrics_port=0,
        _env_file=None,
    )
    services.ensure_redis(settings)
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    services.ensure_broker(settings)
    apply_feature_repo(settings)
    yield settings
    services.stop_services(settings)


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Settings with topics, consumer group and offline data of this test only."""
    tag = uuid.uuid4().hex[:8]
    offline = base_settings.feast.repo_path / "data" / "offline"
    shutil.rmtree(offline, ignore_errors=True)
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    return base_settings.override(
        trades_topic=f"trades-{tag}",
        candles_topic=f"candles-{tag}",
        features_topic=f"features-{tag}",
        dead_letter_topic=f"dead-letters-{tag}",
        consumer_group=f"it-{tag}",
    )
