"""The feature store sink against the real Redis and Feast: a row it can never write is rejected, not retried."""

from __future__ import annotations

import json

import pytest
from quixstreams.sinks import SinkBackpressureError, SinkBatch

from coinflow import parquet_writer
from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from feature_pipeline.sinks.feast_sink import FeastSink
from feature_pipeline.sources.csv_readers import iter_ohlcvt_csv
from feature_pipeline.transforms.indicators import new_indicator_state, update_indicators

pytestmark = pytest.mark.integration

PAIR = "BTC/USD"


def feature_rows(data_dir, count: int) -> list[dict]:
    """Real one-minute candles with their indicators, as the dataflow hands them to the sink."""
    candles = list(
        iter_ohlcvt_csv(data_dir / "kraken" / "ohlcvt_XBTUSDC_1m_2023Q1.csv", PAIR, "1m", 60, Rejects("test"))
    )[:count]
    state = new_indicator_state()
    return [{**candle, **update_indicators(state, candle)} for candle in candles]


def batch_of(values: list[dict]) -> SinkBatch:
    batch = SinkBatch("candles", 0)
    for offset, value in enumerate(values):
        batch.append(value=value, key=PAIR, timestamp=0, headers=[], offset=offset)
    return batch


def written(settings, view: str) -> list[int]:
    root = parquet_writer.dataset_root(feature_store(settings).get_feature_view(view).batch_source.path)
    rows = parquet_writer.read_rows(root)
    return sorted(int(ts.timestamp() * 1000) for ts in rows["event_timestamp"])


def test_rows_that_cannot_be_converted_are_dead_lettered_and_the_rest_written(settings, data_dir):
    rows = feature_rows(data_dir, 30)
    year_5138 = {**rows[10], "window_end_ms": 99_999_999_999_000}  # beyond what pandas' timestamps hold
    not_a_number = {**rows[20], "rsi_14": "abc"}
    end = {"control": "end", "pair": PAIR, "timestamp_ms": rows[-1]["window_end_ms"], "run_id": "r"}
    dead, ends = [], []
    sink = FeastSink(lambda: feature_store(settings), retries=2, on_end=ends.append, dead_letter=dead.append)
    sink.setup()

    sink.write(batch_of([*rows[:10], year_5138, *rows[10:20], not_a_number, *rows[20:], end]))

    assert dict(sink.rejects.counts) == {"unwritable_row": 2}
    assert [json.loads(d["raw"]) for d in dead] == [year_5138, not_a_number]
    assert {d["stage"] for d in dead} == {"feast_sink"}
    expected = [row["window_end_ms"] for row in rows]
    assert written(settings, "ohlcv_1m") == written(settings, "indicators_1m") == expected
    assert sink.rows_written["ohlcv_1m"] == 30
    assert ends == [end]


def test_an_unreachable_store_is_retried_then_backpressure_with_nothing_rejected(settings, data_dir):
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:19459/0"})  # nothing listens there
    sink = FeastSink(lambda: feature_store(down), retries=2, retry_after_s=0.1)
    sink.setup()
    with pytest.raises(SinkBackpressureError):
        sink.write(batch_of(feature_rows(data_dir, 5)))
    assert not sink.rejects.counts
