"""Running the candle pipeline in tests and reading back what it wrote: the broker's topics, the offline store,
independent pandas candles to compare with, and the environment of a pipeline subprocess."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, TopicPartition

from coinflow import parquet_writer
from coinflow.feature_store import feature_store
from coinflow.settings import Settings
from feature_pipeline.candles.runner import run_pipeline
from feature_pipeline.sources.file_sources import TradesFileSource
from feature_repo.names import OHLCV_FEATURES

PAIR = "BTC/USD"
MINUTE_MS = 60_000


def expected_candles(trades: pd.DataFrame) -> pd.DataFrame:
    """Independent pandas candles: one per minute with trades, stamped at the window end."""
    frame = trades.assign(window_end=(trades.time_ms // MINUTE_MS + 1) * MINUTE_MS, notional=trades.price * trades.qty)
    grouped = frame.sort_values("time_ms", kind="stable").groupby("window_end")
    out = pd.DataFrame(
        {
            "open": grouped.price.first(),
            "high": grouped.price.max(),
            "low": grouped.price.min(),
            "close": grouped.price.last(),
            "volume": grouped.qty.sum(),
            "vwap": grouped.notional.sum() / grouped.qty.sum(),
            "trade_count": grouped.price.size(),
        }
    )
    out.index = pd.to_datetime(out.index, unit="ms", utc=True)
    return out


def offline_view(settings: Settings, view: str) -> pd.DataFrame:
    """The rows of an offline view, by event time."""
    root = parquet_writer.dataset_root(feature_store(settings).get_feature_view(view).batch_source.path)
    rows = parquet_writer.read_rows(root)
    return rows.sort_values("event_timestamp").set_index("event_timestamp") if len(rows) else rows


def replay(settings: Settings, path: Path, speed: float = 0.0):
    """Replay a trades file of `PAIR` through the candle pipeline, in this process, to its end."""
    run_id = uuid.uuid4().hex
    close_after = settings.stream.candle_close_after_ms
    source = TradesFileSource(path, PAIR, run_id, settings.topics.dead_letters, close_after, speed)
    return run_pipeline(settings, source, finite_pairs={PAIR}, run_id=run_id)


def assert_candles_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same windows, and the same OHLCV values to 1e-9."""
    assert list(actual.index) == list(expected.index)
    for column in OHLCV_FEATURES:
        np.testing.assert_allclose(
            actual[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9, err_msg=column
        )


def read_topic(settings: Settings, topic: str) -> list:
    """Every message of partition 0 of `topic`, from the start (stops after 3 s without one)."""
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}",
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages = []
    while (message := consumer.poll(3.0)) is not None:
        if not message.error():
            messages.append(message)
    consumer.close()
    return messages


def env_for(settings: Settings) -> dict[str, str]:
    """The environment of a pipeline subprocess run with `settings`: every setting by its variable, and none of
    this shell's COINFLOW_ variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINFLOW_")}
    env.update(settings.as_environment())
    return env
