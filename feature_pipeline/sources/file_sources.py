"""Quix sources that replay files: a trades CSV (into the trades topic), OHLCVT candles (into the candles topic),
full L2 book snapshots (into the book-updates topic) and a universe's candle files (into the universe candles topic).

All are finite: after the data they send an end-of-input marker per pair (or
book) carrying the run's id, which closes the last window and lets the
pipeline stop once everything is in the feature store.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from coinflow.books import book_key
from coinflow.exchange_files import (
    FileCandle,
    candle_file_pair,
    iter_candle_file,
    iter_ohlcvt_csv,
    iter_snapshot_csv,
    iter_trades_csv,
)
from coinflow.quality import DEAD_LETTER_MAX_BYTES, Rejects
from coinflow.schemas import CONTROL_END, MAX_FUTURE_MS, Control
from feature_pipeline.sources.base import RecordSource
from feature_pipeline.sources.book_source import BookSource

logger = logging.getLogger(__name__)

Record = TypeVar("Record", bound=Mapping[str, Any])


def paced(records: Iterable[Record], speed: float, time_field: str = "timestamp_ms") -> Iterator[Record]:
    """Yield records at `speed` times their recorded pace (0: as fast as possible)."""
    if speed <= 0:
        yield from records
        return
    first_event = start = None
    for record in records:
        if first_event is None:
            first_event, start = record[time_field], time.monotonic()
        due = start + (record[time_field] - first_event) / 1000.0 / speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield record


class FiniteFileSource(RecordSource):
    """Produces the records of a file keyed by pair, then an end marker per pair."""

    stage: str  # of its rejects and dead letters: one per kind of file (the source's name is unique per run)

    def __init__(
        self,
        name: str,
        path: Path,
        pair: str,
        run_id: str,
        dead_letter_topic: str,
        close_after_ms: int,
        max_future_ms: int = MAX_FUTURE_MS,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(name, dead_letter_topic, dead_letter_max_bytes=dead_letter_max_bytes)
        self.max_future_ms = max_future_ms
        self.path = Path(path)
        self.pair = pair
        self.run_id = run_id
        self.close_after_ms = close_after_ms

    def records(self, rejects: Rejects) -> Iterable[Mapping[str, Any]]:
        raise NotImplementedError

    def event_time(self, record: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def run(self) -> None:
        rejects = Rejects(self.stage, forward=self.produce_dead_letter)
        last_ts = None
        count = 0
        for record in self.records(rejects):
            if not self.running:
                logger.info("%s stopped after %d records", self.name, count)
                return
            ts = self.event_time(record)
            self.produce_record(self.pair, record, ts)
            last_ts = ts if last_ts is None else max(last_ts, ts)
            count += 1
        end_ts = (last_ts or 0) + self.close_after_ms
        marker = Control(control=CONTROL_END, pair=self.pair, timestamp_ms=end_ts, run_id=self.run_id)
        self.produce_record(self.pair, marker, end_ts)
        self.flush()
        logger.info("%s produced %d records from %s; %s", self.name, count, self.path, rejects.summary())


class TradesFileSource(FiniteFileSource):
    """Trades from a CSV (time_ms,timestamp,price,qty,side[,trade_id]), optionally at real time x `speed`."""

    stage = "trades_file"

    def __init__(
        self,
        path: Path,
        pair: str,
        run_id: str,
        dead_letter_topic: str,
        close_after_ms: int,
        speed: float = 0.0,
        exchange: str = "kraken",
        max_future_ms: int = MAX_FUTURE_MS,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(
            f"trades-file-{run_id}",
            path,
            pair,
            run_id,
            dead_letter_topic,
            close_after_ms,
            max_future_ms,
            dead_letter_max_bytes,
        )
        self.speed = speed
        self.exchange = exchange

    def records(self, rejects: Rejects) -> Iterable[Mapping[str, Any]]:
        trades = iter_trades_csv(self.path, self.pair, rejects, self.exchange, max_future_ms=self.max_future_ms)
        return paced(trades, self.speed)

    def event_time(self, record: Mapping[str, Any]) -> int:
        return record["timestamp_ms"]


class CandlesFileSource(FiniteFileSource):
    """Candles from Kraken's OHLCVT export, straight into the candles topic."""

    stage = "candles_file"

    def __init__(
        self,
        path: Path,
        pair: str,
        run_id: str,
        dead_letter_topic: str,
        interval: str,
        seconds: int,
        max_future_ms: int = MAX_FUTURE_MS,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(
            f"candles-file-{run_id}", path, pair, run_id, dead_letter_topic, 0, max_future_ms, dead_letter_max_bytes
        )
        self.interval = interval
        self.seconds = seconds

    def records(self, rejects: Rejects) -> Iterable[Mapping[str, Any]]:
        return iter_ohlcvt_csv(
            self.path, self.pair, self.interval, self.seconds, rejects, max_future_ms=self.max_future_ms
        )

    def event_time(self, record: Mapping[str, Any]) -> int:
        return record["window_end_ms"]


class SnapshotsFileSource(BookSource):
    """A book's full L2 snapshots from a CSV (`iter_snapshot_csv`), each row one ``snapshot`` frame on the
    book-updates topic, optionally at real time x `speed`; then the book's end marker. The file has no trades."""

    stage = "snapshots_file"

    def __init__(
        self,
        path: Path,
        exchange: str,
        product: str,
        run_id: str,
        dead_letter_topic: str,
        speed: float = 0.0,
        max_future_ms: int = MAX_FUTURE_MS,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(
            f"snapshots-file-{run_id}", dead_letter_topic, None, run_id, dead_letter_max_bytes=dead_letter_max_bytes
        )
        self.path = Path(path)
        self.exchange = exchange
        self.product = product
        self.speed = speed
        self.max_future_ms = max_future_ms

    def run(self) -> None:
        rejects = Rejects(self.stage, forward=self.produce_dead_letter)
        key = book_key(self.exchange, self.product)
        frames = iter_snapshot_csv(self.path, self.exchange, self.product, rejects, max_future_ms=self.max_future_ms)
        count = 0
        for frame in paced(frames, self.speed):
            if not self.running:
                logger.info("%s stopped after %d snapshots", self.name, count)
                return
            self.emit(key, frame)
            count += 1
        self._produce_end_markers()
        self.flush()
        logger.info("%s produced %d snapshots from %s; %s", self.name, count, self.path, rejects.summary())

    def end_keys(self) -> tuple[list[str], list[str]]:
        return [book_key(self.exchange, self.product)], []


def universe_candle(candle: FileCandle, interval: str) -> dict[str, Any]:
    """A file's candle as the universe dataflow reads it: pair, interval, window_end_ms (its close) and OHLCV."""
    return {
        "pair": candle["pair"],
        "interval": interval,
        "window_end_ms": candle["timestamp_ms"],
        "open": candle["open"],
        "high": candle["high"],
        "low": candle["low"],
        "close": candle["close"],
        "volume": candle["volume"],
    }


class UniverseFilesSource(RecordSource):
    """The candle files of a universe (`coinflow.exchange_files.iter_candle_file`, one file a pair), merged in
    time order as a live feed of them would come, keyed by pair; then an end marker per pair."""

    stage = "candle_files"

    def __init__(
        self,
        paths: list[Path],
        interval: str,
        seconds: int,
        run_id: str,
        dead_letter_topic: str,
        max_future_ms: int = MAX_FUTURE_MS,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(f"candle-files-{run_id}", dead_letter_topic, dead_letter_max_bytes=dead_letter_max_bytes)
        self.paths = [Path(p) for p in paths]
        self.interval = interval
        self.seconds = seconds
        self.run_id = run_id
        self.max_future_ms = max_future_ms

    def pairs(self) -> list[str]:
        return [candle_file_pair(path) for path in self.paths]

    def run(self) -> None:
        rejects = Rejects(self.stage, forward=self.produce_dead_letter)
        files = [iter_candle_file(path, self.seconds, rejects, max_future_ms=self.max_future_ms) for path in self.paths]
        last: dict[str, int] = {}
        count = 0
        for candle in heapq.merge(*files, key=lambda c: c["timestamp_ms"]):
            if not self.running:
                logger.info("%s stopped after %d candles", self.name, count)
                return
            self.produce_record(candle["pair"], universe_candle(candle, self.interval), candle["timestamp_ms"])
            last[candle["pair"]] = candle["timestamp_ms"]
            count += 1
        for pair in self.pairs():
            end_ts = last.get(pair, 0)
            marker = Control(control=CONTROL_END, pair=pair, timestamp_ms=end_ts, run_id=self.run_id)
            self.produce_record(pair, marker, end_ts)
        self.flush()
        logger.info("%s produced %d candles of %d files; %s", self.name, count, len(self.paths), rejects.summary())
