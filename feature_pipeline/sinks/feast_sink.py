"""A Quix Streams sink that writes feature rows to Feast: Redis online, Parquet offline, for any feature view.

Quix calls `write` with the rows of one checkpoint; offsets are committed only
after it returns, so a crash replays the batch (at-least-once) and the writes
are idempotent: the online store keeps the newest row per entity (Feast's Redis
store ignores older event times) and the offline store merges by
(entity, event_timestamp). A routing function says which feature views each
row feeds (`single_view` for one; the candle pipeline routes by interval).
Everything else comes from the views: the entity, timestamp and created
columns and the Arrow type of every feature (Feast's own type mapping, so
string, integer and list features are stored as declared). A row's event time
is its `time_field` (milliseconds). A pipeline that must do more after a write
(the candle pipeline's windows) overrides `after_write`.
Transient failures (the stores down) are retried with backoff;
when they persist the sink asks Quix to pause and re-deliver the batch later.
A row that can never be written (one that fails the conversion to the
stores' types on its own) is rejected instead, counted and dead-lettered, and
the rest of the batch is written: a bad row never holds a batch back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable

import pandas as pd
import pyarrow as pa
import redis
from feast import FeatureStore, FeatureView, FileSource
from feast.type_map import feast_value_type_to_pa
from prometheus_client import Counter, Histogram
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from coinflow import parquet_writer
from coinflow.quality import Rejects
from feature_repo.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP

logger = logging.getLogger(__name__)

ROWS_WRITTEN = Counter(
    "coinflow_feature_rows_written_total", "Feature rows written, by view and store.", ["view", "store"]
)
WRITE_SECONDS = Histogram("coinflow_feature_write_seconds", "Time to write one checkpoint's rows to the feature store.")
FRESHNESS_SECONDS = Histogram(
    "coinflow_feature_freshness_seconds",
    "Wall-clock time from a row's event timestamp to its online write.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


def feature_frame(rows: list[dict], time_field: str = "window_end_ms") -> pd.DataFrame:
    """Feature rows as a frame with Feast's columns: the event time from the rows' `time_field` (ms), created now.

    All the project's views name these two columns alike (`feature_repo.names`); `FeastSink` checks each view."""
    frame = pd.DataFrame.from_records(rows)
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame[time_field], unit="ms", utc=True)
    frame[CREATED_TIMESTAMP] = pd.Timestamp.now(tz="UTC")
    return frame


def latest_per_entity(frame: pd.DataFrame, entity: str) -> pd.DataFrame:
    """The newest row of each entity: all the online store keeps."""
    return frame.sort_values(EVENT_TIMESTAMP, kind="stable").drop_duplicates(entity, keep="last")


# What the conversion of a row to a frame and to the stores' Arrow types raises for a value it cannot hold.
ROW_ERRORS = (ValueError, TypeError, KeyError, OverflowError, pa.ArrowException)
# What the stores raise when they cannot be reached: never a row's fault, even where a class is also a row error.
TRANSIENT_ERRORS = (OSError, redis.ConnectionError, redis.TimeoutError)


def is_row_error(exc: BaseException) -> bool:
    """Whether a failed write may be a row's fault (then the rows are checked one by one) rather than the stores'."""
    return isinstance(exc, ROW_ERRORS) and not isinstance(exc, TRANSIENT_ERRORS)


Routes = Callable[[pd.DataFrame], Iterable[tuple[tuple[str, ...], pd.DataFrame]]]


def single_view(name: str) -> Routes:
    """Every row feeds one view."""
    return lambda frame: [((name,), frame)]


def view_entity(view: FeatureView) -> str:
    """The entity (join key) column of a single-entity view."""
    return view.entity_columns[0].name


def batch_file_source(view: FeatureView) -> FileSource:
    """The view's batch source: the Parquet files its offline rows are written to (a clear error if it has none)."""
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise ValueError(
            f"Feature view {view.name}: FeastSink writes Parquet files, but its batch source is {source!r}"
        )
    return source


def check_timestamp_columns(view: FeatureView) -> None:
    """The view's source must name its event and created times as `feature_frame` does (a clear error, not a
    KeyError at the first write)."""
    source = batch_file_source(view)
    if (source.timestamp_field, source.created_timestamp_column) != (EVENT_TIMESTAMP, CREATED_TIMESTAMP):
        raise ValueError(
            f"Feature view {view.name}: its source's timestamp columns are ({source.timestamp_field!r}, "
            f"{source.created_timestamp_column!r}); FeastSink writes ({EVENT_TIMESTAMP!r}, {CREATED_TIMESTAMP!r})"
        )


def arrow_schema(view: FeatureView) -> pa.Schema:
    """The Parquet schema of a view's rows: its entity, the two timestamps and its features, typed as Feast
    declares them."""
    entity = view.entity_columns[0]
    fields = [
        pa.field(entity.name, feast_value_type_to_pa(entity.dtype.to_value_type())),
        pa.field(EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC")),
        pa.field(CREATED_TIMESTAMP, pa.timestamp("us", tz="UTC")),
    ]
    fields += [pa.field(f.name, feast_value_type_to_pa(f.dtype.to_value_type())) for f in view.features]
    return pa.schema(fields)


class FeastSink(BatchingSink):
    """Writes feature rows to the views `routes` names; reports end markers (``control`` records) once written."""

    def __init__(
        self,
        store_factory: Callable[[], FeatureStore],
        routes: Routes,
        *,
        time_field: str = "window_end_ms",
        retries: int = 5,
        on_end: Callable[[dict], None] | None = None,
        retry_after_s: float = 5.0,
        dead_letter: Callable[[dict], None] | None = None,
        stage: str = "feast_sink",
    ) -> None:
        super().__init__()
        self.rejects = Rejects(stage, forward=dead_letter)
        self._routes = routes
        self._time_field = time_field
        self._store_factory = store_factory
        self._retries = retries
        self._on_end = on_end
        self._retry_after_s = retry_after_s
        self._store: FeatureStore | None = None
        self._views: dict[str, tuple[FeatureView, pa.Schema]] = {}
        self.rows_written: Tally[str] = Tally()

    def setup(self) -> None:
        self._store = self._store_factory()

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            raise RuntimeError("FeastSink.setup() has not run")
        return self._store

    def view(self, name: str) -> tuple[FeatureView, pa.Schema]:
        """The feature view `name` and its Arrow schema (read from the registry once)."""
        if name not in self._views:
            view = self.store.get_feature_view(name)
            check_timestamp_columns(view)
            self._views[name] = (view, arrow_schema(view))
        return self._views[name]

    def conversion_error(self, row: dict) -> Exception | None:
        """What converting this row alone, as `write_rows` does, raises (None if it converts): a row error."""
        try:
            for names, group in self._routes(feature_frame([row], self._time_field)):
                for name in names:
                    schema = self.view(name)[1]
                    pa.Table.from_pandas(group[schema.names], schema=schema, preserve_index=False)
        except ROW_ERRORS as exc:
            return exc
        return None

    def reject_unwritable(self, rows: list[dict]) -> list[dict]:
        """The rows that convert; each of the others is counted and dead-lettered (``unwritable_row``)."""
        writable = []
        for row in rows:
            error = self.conversion_error(row)
            if error is None:
                writable.append(row)
                continue
            logger.warning("A feature row cannot be written (%s: %s); it is dead-lettered", type(error).__name__, error)
            self.rejects.reject("unwritable_row", row)
        return writable

    def write_rows(self, rows: list[dict]) -> None:
        """Write feature rows to both stores (idempotent; raises on failure).

        Online first: serving sees a row as soon as possible, and the offline
        merge (the slower write) does not delay it.
        """
        frame = feature_frame(rows, self._time_field)
        for names, group in self._routes(frame):
            views = [self.view(name) for name in names]
            for view, schema in views:
                latest = latest_per_entity(group[schema.names], view_entity(view))
                self.store.write_to_online_store(view.name, latest)
                ROWS_WRITTEN.labels(view.name, "online").inc(len(latest))
            now = pd.Timestamp.now(tz="UTC")
            for ts in latest_per_entity(group, view_entity(views[0][0]))[EVENT_TIMESTAMP]:
                FRESHNESS_SECONDS.observe(max((now - ts).total_seconds(), 0.0))
            for view, schema in views:
                parquet_writer.write_rows(
                    parquet_writer.dataset_root(batch_file_source(view).path),
                    group[schema.names],
                    schema,
                    view_entity(view),
                )
                ROWS_WRITTEN.labels(view.name, "offline").inc(len(group))
                self.rows_written[view.name] += len(group)
        self.after_write(frame)

    def after_write(self, frame: pd.DataFrame) -> None:
        """Called after each batch's rows are in both stores (with the whole batch's frame); nothing by default."""

    def write(self, batch: SinkBatch) -> None:
        rows, ends = [], []
        for item in batch:
            value = item.value
            if "control" in value:
                ends.append(value)
            else:
                rows.append(value)
        if rows:
            started = time.perf_counter()
            attempt = 0
            while rows:
                try:
                    self.write_rows(rows)
                    break
                except Exception as exc:  # noqa: BLE001 - store clients raise many kinds; all are retried
                    if is_row_error(exc):
                        writable = self.reject_unwritable(rows)
                        if len(writable) < len(rows):
                            rows = writable
                            continue
                    attempt += 1
                    if attempt == self._retries:
                        logger.error(
                            "Feature store write failed %d times (%s); Quix will re-deliver the batch in %.0f s",
                            attempt,
                            exc,
                            self._retry_after_s,
                        )
                        raise SinkBackpressureError(retry_after=self._retry_after_s) from exc
                    delay = min(0.2 * 2 ** (attempt - 1), 5.0)
                    logger.warning(
                        "Feature store write failed (%s); retry %d/%d in %.1f s", exc, attempt, self._retries, delay
                    )
                    time.sleep(delay)
            WRITE_SECONDS.observe(time.perf_counter() - started)
        if self._on_end is not None:
            for end in ends:
                self._on_end(end)
