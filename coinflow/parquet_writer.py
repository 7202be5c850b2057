"""Idempotent writes to the Parquet offline store behind Feast's FileSources.

Feast's own offline append rewrites one file and keeps duplicates; a replay
must leave the same rows, not twice as many. Rows are kept one file per
(view, entity value, UTC day) under the FileSource's directory, and a write
merges into that file, keeping for each (entity, event_timestamp) the row with
the newest ``created`` time. The entity column is ``pair`` unless a view says
otherwise (order books: ``product``). Files are replaced atomically, so readers never see
half a file and a crash mid-write loses nothing already written.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coinflow.schemas import pair_slug
from feature_repo.names import CREATED_TIMESTAMP, ENTITY, EVENT_TIMESTAMP


def dataset_root(file_source_path: str) -> Path:
    """The directory of a view's dataset, from its FileSource glob (``<root>/*/*.parquet``)."""
    path = Path(file_source_path)
    while any(ch in path.name for ch in "*?["):
        path = path.parent
    return path


def partition_path(root: Path, pair: str, day: str) -> Path:
    return root / pair_slug(pair) / f"{day}.parquet"


def merge_rows(existing: pd.DataFrame | None, new: pd.DataFrame, entity: str = ENTITY) -> pd.DataFrame:
    """Union of two row sets with one row per (entity, event_timestamp): the newest created wins."""
    frame = new if existing is None or existing.empty else pd.concat([existing, new], ignore_index=True)
    frame = frame.sort_values([entity, EVENT_TIMESTAMP, CREATED_TIMESTAMP], kind="stable")
    frame = frame.drop_duplicates([entity, EVENT_TIMESTAMP], keep="last")
    return frame.reset_index(drop=True)


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_file(path: Path) -> pd.DataFrame:
    """One Parquet file as a frame, read through a single open handle.

    A writer replaces files atomically (`_write_atomically`), but pyarrow given
    a path looks at the file more than once (its size, then its pages), and a
    replacement in between mixes two files ("Page was smaller than expected").
    One handle pins one file.
    """
    with open(path, "rb") as handle:
        return pq.read_table(handle).to_pandas()


def write_rows(root: Path, rows: pd.DataFrame, schema: pa.Schema, entity: str = ENTITY) -> int:
    """Merge rows (columns of `schema`) into the dataset at `root`; returns the files written."""
    days = rows[EVENT_TIMESTAMP].dt.strftime("%Y-%m-%d")
    written = 0
    for (key, day), group in rows.groupby([rows[entity], days], sort=False):
        path = partition_path(root, key, day)
        existing = read_file(path) if path.exists() else None
        merged = merge_rows(existing, group, entity)
        _write_atomically(pa.Table.from_pandas(merged, schema=schema, preserve_index=False), path)
        written += 1
    return written


def tail_rows(root: Path, key: str, n: int) -> pd.DataFrame:
    """The last `n` rows (by event time) of one entity of a view's dataset, reading its newest days first."""
    parts, count = [], 0
    for path in sorted((root / pair_slug(key)).glob("*.parquet"), reverse=True):
        part = read_file(path)
        parts.append(part)
        count += len(part)
        if count >= n:
            break
    if not parts:
        return pd.DataFrame()
    return (
        pd.concat(parts, ignore_index=True).sort_values(EVENT_TIMESTAMP, kind="stable").tail(n).reset_index(drop=True)
    )


def read_rows(root: Path) -> pd.DataFrame:
    """Every row of a view's dataset (for tests and inspection; training reads through Feast)."""
    files = sorted(root.glob("*/*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([read_file(f) for f in files], ignore_index=True)
