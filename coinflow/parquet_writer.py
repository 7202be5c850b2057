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
import pyarrow.compute as pc
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


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly the columns of `schema`, in its order and types (a column it lacks is all null),
    and no pandas metadata, so that tables from files and from frames concatenate."""
    columns = [
        table[field.name].cast(field.type) if field.name in table.column_names else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def merge_tables(existing: pa.Table | None, new: pa.Table, entity: str = ENTITY) -> pa.Table:
    """Union of two row sets (conformed to one schema) with one row per (entity, event_timestamp): the newest
    created wins, and of two rows created at once the one in `new`. Sorted by entity, then event time."""
    table = new if existing is None or existing.num_rows == 0 else pa.concat_tables([existing, new])
    order = pc.sort_indices(  # a stable sort: a tie keeps `new` after `existing`
        table, sort_keys=[(entity, "ascending"), (EVENT_TIMESTAMP, "ascending"), (CREATED_TIMESTAMP, "ascending")]
    )
    table = table.take(order)
    if table.num_rows < 2:
        return table
    superseded = pc.and_(
        pc.equal(table[entity].slice(0, table.num_rows - 1), table[entity].slice(1)),
        pc.equal(table[EVENT_TIMESTAMP].slice(0, table.num_rows - 1), table[EVENT_TIMESTAMP].slice(1)),
    )
    keep = pa.concat_arrays([pc.invert(superseded).combine_chunks(), pa.array([True])])
    return table.filter(keep)


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_table(path: Path) -> pa.Table:
    """One Parquet file as an Arrow table, read through a single open handle.

    A writer replaces files atomically (`_write_atomically`), but pyarrow given
    a path looks at the file more than once (its size, then its pages), and a
    replacement in between mixes two files ("Page was smaller than expected").
    One handle pins one file.
    """
    with open(path, "rb") as handle:
        return pq.read_table(handle)


def read_file(path: Path) -> pd.DataFrame:
    """One Parquet file as a frame (`read_table`)."""
    return read_table(path).to_pandas()


def write_rows(root: Path, rows: pd.DataFrame, schema: pa.Schema, entity: str = ENTITY) -> int:
    """Merge rows (columns of `schema`) into the dataset at `root`; returns the files written.

    The merge runs in Arrow (`merge_tables`): a pandas round trip per file cost
    five times as much, and the sink writes every view's files at every
    checkpoint.
    """
    table = conform(pa.Table.from_pandas(rows, schema=schema, preserve_index=False), schema)
    days = rows[EVENT_TIMESTAMP].dt.strftime("%Y-%m-%d")
    written = 0
    for (key, day), index in rows.groupby([rows[entity], days], sort=False).indices.items():
        path = partition_path(root, key, day)
        existing = conform(read_table(path), schema) if path.exists() else None
        _write_atomically(merge_tables(existing, table.take(index), entity), path)
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
