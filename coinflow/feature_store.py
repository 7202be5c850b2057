"""The Feast feature store, configured from Settings, for all three pipelines.

feature_store.yaml keeps ``${VAR}`` placeholders (Feast's convention); here they
are filled from Settings instead of the process environment, so the one
Settings object decides where the registry, Redis and the project are.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from string import Template
from urllib.parse import urlparse

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from coinflow.settings import Settings


def feast_redis_connection(redis_url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N[,password=...]``) for a redis:// URL."""
    parsed = urlparse(redis_url)
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts.append(f"db={db}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def feast_variables(settings: Settings) -> dict[str, str]:
    """The values of the placeholders in feature_store.yaml."""
    return {
        "FEAST_PROJECT": settings.feast_project,
        "FEAST_REGISTRY_PATH": str(settings.registry_path.resolve()),
        "FEAST_REDIS_CONNECTION": feast_redis_connection(settings.redis_url),
    }


def repo_config(settings: Settings) -> RepoConfig:
    repo = settings.feature_repo_path.resolve()
    text = (repo / "feature_store.yaml").read_text()
    raw = yaml.safe_load(Template(text).substitute(feast_variables(settings)))
    config = RepoConfig(**raw)
    config.repo_path = repo
    return config


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore for the configured repository (the registry must exist: run the feature-repo step)."""
    settings.registry_path.parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.feature_repo_path.resolve()), config=repo_config(settings))


@contextlib.contextmanager
def _importable_from(path: Path):
    """Feast imports the repository's modules by bare name from its working directory."""
    before = Path.cwd()
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        os.chdir(before)


def apply_feature_repo(settings: Settings) -> FeatureStore:
    """Register the repository's definitions, as `feast apply` does, and return the store."""
    from feast.repo_operations import apply_total

    repo = settings.feature_repo_path.resolve()
    settings.registry_path.parent.mkdir(parents=True, exist_ok=True)
    # Feast imports the repository's modules by bare name; drop ones cached from another copy.
    for name in [
        m for m, mod in sys.modules.items() if getattr(mod, "__file__", None) and Path(mod.__file__).parent == repo
    ]:
        del sys.modules[name]
    sys.modules.pop("definitions", None)
    with _importable_from(repo):
        apply_total(repo_config(settings), repo, skip_source_validation=True)
    return feature_store(settings)
