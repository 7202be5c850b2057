"""Training checkpoints in a local folder or any fsspec URL (s3://, gs://, memory://).

A checkpoint is one ``torch.save`` blob holding tensors and plain Python
values only, so it loads with ``weights_only=True`` (no unpickling of
arbitrary objects). Local writes go to a temporary name first and are then
renamed, so a process killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
import uuid
from typing import Any

import fsspec
import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem

LAST = "last.pt"


class CheckpointStore:
    """Checkpoints of one training run under `url` (created on first save)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def load(self, name: str = LAST) -> dict[str, Any] | None:
        """The checkpoint called `name`, or None when there is none."""
        path = self._path(name)
        if not self.fs.exists(path):
            return None
        return torch.load(io.BytesIO(self.fs.cat_file(path)), map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any], name: str = LAST) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self._path(name)
        self.fs.makedirs(self.root, exist_ok=True)
        if isinstance(self.fs, LocalFileSystem):
            partial = f"{path}.{uuid.uuid4().hex}.partial"
            self.fs.pipe_file(partial, buffer.getvalue())
            self.fs.mv(partial, path)
        else:
            self.fs.pipe_file(path, buffer.getvalue())


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The states of every random generator training may draw from, as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple), "the global generator is MT19937, whose legacy state is a tuple"
    kind, keys, position, has_gauss, cached = numpy_state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": generator.get_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": position,
            "has_gauss": has_gauss,
            "cached": cached,
        },
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["loader"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached"]))
