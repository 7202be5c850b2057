"""Plain Feast on the repository: the `feast` CLI and `FeatureStore(path)`, with no variable exported.

The registry is applied by the project's own step into a temporary copy of the repository, with the
committed feature_store.yaml unchanged; its Redis (database 0) is never touched here: listing views and
the UI read only the registry. Online reads go to the test's Redis database through a copy whose yaml
is rendered from Settings, as benchmarks and tests give plain Feast their store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
import redis
from feast.repo_config import load_repo_config

from coinflow import services
from coinflow.feature_store import apply_feature_repo, feature_store, feature_store_yaml, is_registered
from coinflow.settings import Settings
from feature_repo.names import (
    OHLCV_FEATURES,
    ORDERBOOK_VIEW,
    indicators_view,
    ohlcv_view,
    pair_spread_view,
    universe_view,
    window_view,
)
from tests.support.paths import copy_feature_repo
from tests.support.polling import wait_for
from tests.support.ports import free_port

FEAST = str(Path(sys.executable).with_name("feast"))
VIEWS = sorted(
    [
        ORDERBOOK_VIEW,
        pair_spread_view("1m"),
        *(f(interval) for interval in ("1m", "5m") for f in (ohlcv_view, indicators_view, window_view, universe_view)),
    ]
)
STORE_VIEWS = (
    "from feast import FeatureStore; print(sorted(v.name for v in FeatureStore('feature_repo').list_feature_views()))"
)


def plain_environment() -> dict[str, str]:
    """The environment without anything Feast or coinflow would read (FEAST_*, COINFLOW_*, REDIS_URL)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FEAST_", "COINFLOW_")) and name not in ("REDIS_URL", "FEATURE_REPO_DIR_ENV_VAR")
    }


def plain(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would in ``cwd``, the folder holding ``feature_repo``; fail on an error exit."""
    done = subprocess.run(args, cwd=cwd, env=plain_environment(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def applied(tmp_path, redis_url: str) -> Settings:
    """A copy of the repository, its yaml as committed, applied by the project with the yaml's project and registry."""
    repo = copy_feature_repo(tmp_path)
    committed = load_repo_config(repo, repo / "feature_store.yaml")
    settings = Settings(
        run_dir=tmp_path / "run",
        feature_repo_path=repo,
        feast_project=committed.project,
        feast_registry_path=repo / committed.registry.path,
        redis_url=redis_url,
        _env_file=None,
    )
    redis.Redis.from_url(redis_url).flushdb()
    apply_feature_repo(settings)
    yield settings
    services.stop_services(settings)


def listed_views(table: str) -> list[str]:
    """The NAME column of `feast feature-views list`."""
    return sorted(line.split()[0] for line in table.strip().splitlines()[1:])


def test_the_plain_cli_lists_the_views_of_the_committed_repository(applied):
    done = plain([FEAST, "-c", "feature_repo", "feature-views", "list"], cwd=applied.feast.repo_path.parent)
    assert listed_views(done.stdout) == VIEWS


def test_a_feature_store_on_the_folder_lists_the_views(applied):
    done = plain([sys.executable, "-c", STORE_VIEWS], cwd=applied.feast.repo_path.parent)
    assert done.stdout.strip() == str(VIEWS)


def ui_views(url: str, project: str) -> list[str]:
    """The feature views the running UI's registry API lists (none while it is starting)."""
    try:
        answer = httpx.get(f"{url}/api/v1/feature_views", params={"project": project}, timeout=5)
    except httpx.TransportError:
        return []
    return sorted(view["spec"]["name"] for view in answer.json()["featureViews"]) if answer.is_success else []


def test_the_plain_ui_serves_the_views(applied):
    port = free_port()
    log = applied.services.run_dir / "ui.log"
    applied.services.run_dir.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        ui = subprocess.Popen(
            [FEAST, "-c", "feature_repo", "ui", "-h", "127.0.0.1", "-p", str(port)],
            cwd=applied.feast.repo_path.parent,
            env=plain_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: ui.poll() is not None or ui_views(f"http://127.0.0.1:{port}", applied.feast.project) == VIEWS,
            timeout=120,
            what="`feast ui` serving the feature views",
            log=log,
        )
        assert ui.poll() is None, log.read_text()[-4000:]
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def test_plain_feast_reads_the_online_store_a_rendered_yaml_names(applied):
    repo = applied.feast.repo_path
    now = pd.Timestamp.now(tz="UTC").floor("min")
    row = {name: 7 if name == "trade_count" else 123.5 for name in OHLCV_FEATURES}
    frame = pd.DataFrame([{"pair": "BTC/USD", "event_timestamp": now, "created": now, **row}])
    feature_store(applied).write_to_online_store(ohlcv_view("1m"), frame)
    (repo / "feature_store.yaml").write_text(feature_store_yaml(applied))
    done = plain(
        [FEAST, "-c", "feature_repo", "get-online-features", "-e", "pair=BTC/USD", "-f", f"{ohlcv_view('1m')}:close"],
        cwd=repo.parent,
    )
    assert json.loads(done.stdout) == {"pair": ["BTC/USD"], "close": [123.5]}


def test_a_registry_plain_feast_left_empty_is_not_taken_for_the_projects(tmp_path, redis_url):
    """Plain Feast run before the project's first apply writes an empty registry; the project's commands still
    apply the definitions (they check for views, not for the file)."""
    repo = copy_feature_repo(tmp_path)
    plain([sys.executable, "-c", STORE_VIEWS], cwd=tmp_path)
    settings = Settings(feature_repo_path=repo, redis_url=redis_url, _env_file=None)
    assert settings.feast.registry_path.exists()
    assert not is_registered(settings)
    apply_feature_repo(settings)
    assert is_registered(settings)
