"""Shared test set-up: torch on one thread, and where the bundled real data lives."""

import importlib.util
from pathlib import Path

import pytest

from tests.support.paths import DATA


def pytest_configure(config: pytest.Config) -> None:
    """Run CPU torch on one thread: its tensors here are small, and on a machine of few cores a thread per core
    makes the deep-model tests slower (about twice, on two), not faster. Set in this process only, so the
    pipelines' subprocesses keep their defaults."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
