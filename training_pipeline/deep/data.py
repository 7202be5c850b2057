"""Windows of past rows for sequence models, built without look-ahead.

Rows of one or more pairs are laid out pair after pair, each pair's rows in
time order. The window that ends at row ``i`` holds rows ``i - N + 1 .. i`` of
the same pair: only rows known at row ``i``'s time (each row is stamped with
the end of its candle). Windows are gathered per batch from one array of rows
instead of being materialised (60 x 20 floats per row would be 280 MB for the
bundled quarter of 1-minute candles).

Training uses only windows with ``N`` real rows. At prediction time a row with
fewer predecessors gets a window padded at the front with copies of its
pair's first row, so every input row receives a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from feature_repo.names import ENTITY, EVENT_TIMESTAMP

UNKNOWN_PAIR = 0


@dataclass(frozen=True)
class Series:
    """Rows laid out pair after pair in time order, with where each row came from.

    ``values`` are model inputs (float32, rows x inputs), ``pair_ids`` the
    pair vocabulary index of each row, ``starts`` the position of the first
    row of each row's pair, ``targets`` the target of each row (NaN where it has
    none) and ``order`` the position of each laid-out row in the caller's frame.
    """

    values: np.ndarray
    pair_ids: np.ndarray
    starts: np.ndarray
    targets: np.ndarray
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def full_windows(self, length: int) -> np.ndarray:
        """Positions whose window holds ``length`` real rows of their pair."""
        return np.flatnonzero(np.arange(len(self)) - self.starts >= length - 1)


def pair_index(pairs: pd.Series, vocabulary: list[str]) -> np.ndarray:
    """Vocabulary index of each pair (1-based); pairs not in it map to `UNKNOWN_PAIR`."""
    lookup = {name: i + 1 for i, name in enumerate(vocabulary)}
    return pairs.map(lambda p: lookup.get(p, UNKNOWN_PAIR)).to_numpy(dtype=np.int64)


def lay_out(frame: pd.DataFrame, values: np.ndarray, pair_ids: np.ndarray, targets: np.ndarray | None = None) -> Series:
    """Order rows pair after pair and by time within a pair (stable: a frame without times keeps its row order)."""
    keys = pd.DataFrame({"pair": pair_ids, "position": np.arange(len(frame))})
    if EVENT_TIMESTAMP in frame.columns:
        keys["time"] = frame[EVENT_TIMESTAMP].to_numpy()
        order = keys.sort_values(["pair", "time"], kind="stable")["position"].to_numpy()
    else:
        order = keys.sort_values("pair", kind="stable")["position"].to_numpy()
    ordered_pairs = pair_ids[order]
    first = np.r_[True, ordered_pairs[1:] != ordered_pairs[:-1]] if len(order) else np.zeros(0, bool)
    starts = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0)) if len(order) else np.zeros(0, np.int64)
    target_values = np.full(len(frame), np.nan, np.float32) if targets is None else targets.astype(np.float32)
    return Series(
        values=values[order].astype(np.float32),
        pair_ids=ordered_pairs,
        starts=starts.astype(np.int64),
        targets=target_values[order],
        order=order,
    )


def window_index(ends: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Row positions of the windows ending at `ends` (one row per window, oldest first), clipped at the pair's first row."""
    index = ends[:, None] + np.arange(1 - length, 1)[None, :]
    return np.maximum(index, starts[ends][:, None])


def frame_rows(frame: pd.DataFrame, default_pair: str) -> pd.Series:
    """The pair of each row: the frame's ``pair`` column, or `default_pair` when it has none."""
    if ENTITY in frame.columns:
        return frame[ENTITY].astype(str)
    return pd.Series(default_pair, index=frame.index)


class Batches(Dataset[tuple[torch.Tensor, ...]]):
    """A map-style dataset of known length whose items are whole batches: ``dataset[list of positions]`` -> tensors,
    the last of them the targets (what `TrainingLoop` takes)."""

    def __len__(self) -> int:
        raise NotImplementedError


class WindowBatches(Batches):
    """A map-style dataset whose items are whole batches: ``dataset[list of positions]`` -> tensors.

    Gathering a batch with one indexing operation keeps the per-sample Python
    overhead out of the loop; use it with ``DataLoader(batch_size=None,
    sampler=BatchSampler(...))``. Returns (windows [B, N, inputs], pair ids
    [B], targets [B]) for the windows ending at the given positions of `ends`.
    """

    def __init__(self, series: Series, ends: np.ndarray, length: int) -> None:
        self.values = torch.from_numpy(series.values)
        self.pair_ids = torch.from_numpy(series.pair_ids)
        self.targets = torch.from_numpy(series.targets)
        self.starts = series.starts
        self.ends = ends
        self.length = length

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ends = self.ends[np.asarray(positions, dtype=np.int64)]  # typed: a rank's share of a batch may be empty
        index = torch.from_numpy(window_index(ends, self.starts, self.length))
        rows = torch.from_numpy(ends)
        return self.values[index], self.pair_ids[rows], self.targets[rows]


class TensorBatches(Batches):
    """Aligned tensors whose items are whole batches: ``dataset[list of positions]`` -> one slice of each."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("the tensors must have one row per sample each")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(positions, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)
