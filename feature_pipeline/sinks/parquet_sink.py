"""A Quix sink appending records to one Parquet file (book-state records for research: `replay-session --book-out`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from quixstreams.sinks import BatchingSink, SinkBatch


class ParquetSink(BatchingSink):
    """Appends each checkpoint's records as a row group; `close` finishes the file (call it after the app stops)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        super().__init__()
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, batch: SinkBatch) -> None:
        records = [item.value for item in batch]
        if not records:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, self.schema)
        self._writer.write_table(pa.Table.from_pylist(records, schema=self.schema))
        self.rows += len(records)

    def close(self) -> None:
        """Finish the file; an empty run still leaves a valid file with the schema."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(self.schema.empty_table(), self.path)
        else:
            self._writer.close()
            self._writer = None
