"""The candle pipeline's Feast sink: candle rows feed the OHLCV and indicator views of their interval, and each
write refreshes the pairs' window rows (the last candles, served to sequence models)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd
from feast import FeatureStore

from coinflow import parquet_writer
from coinflow.windows import window_row
from feature_pipeline.sinks.feast_sink import ROWS_WRITTEN, FeastSink, batch_file_source
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, INDICATOR_FEATURES, indicators_view, ohlcv_view, window_view


def candle_routes(frame: pd.DataFrame) -> Iterable[tuple[tuple[str, ...], pd.DataFrame]]:
    """Candle feature rows feed the OHLCV and indicator views of their interval."""
    for interval, group in frame.groupby("interval", sort=False):
        yield (ohlcv_view(interval), indicators_view(interval)), group


class CandleFeastSink(FeastSink):
    """`FeastSink` for candle feature rows; with a `window_length`, each batch also refreshes the window view of
    every (pair, interval) it holds."""

    def __init__(self, store_factory: Callable[[], FeatureStore], window_length: int | None = None, **options) -> None:
        super().__init__(store_factory, candle_routes, **options)
        self._window_length = window_length

    def after_write(self, frame: pd.DataFrame) -> None:
        if self._window_length and "interval" in frame.columns:
            self._write_windows(frame, self._window_length)

    def _history(self, view: str, pair: str, length: int) -> pd.DataFrame:
        root = parquet_writer.dataset_root(batch_file_source(self.view(view)[0]).path)
        return parquet_writer.tail_rows(root, pair, length)

    def _write_windows(self, frame: pd.DataFrame, length: int) -> None:
        """The window view of each (pair, interval) of the batch: the last rows of its offline history (just
        written), so the window a sequence model is served is the one it would be trained on."""
        for interval, group in frame.groupby("interval", sort=False):
            rows = []
            for pair in group[ENTITY].unique():
                candles = self._history(ohlcv_view(interval), pair, length)
                indicators = self._history(indicators_view(interval), pair, length)
                history = candles.merge(indicators[[EVENT_TIMESTAMP, *INDICATOR_FEATURES]], on=EVENT_TIMESTAMP)
                rows.append(window_row(history.tail(length), pair))
            name = window_view(interval)
            self.store.write_to_online_store(name, pd.DataFrame(rows))
            ROWS_WRITTEN.labels(name, "online").inc(len(rows))
