"""The live path end to end without internet: Kraken v2 replay server -> `live` command -> broker -> Feast.

The replay server speaks the Kraken v2 protocol from real trades, re-stamped
close to the wall clock (live sources close windows on wall-clock ticks). The
connection is dropped mid-stream; the source reconnects and resubscribes, the
snapshot repeats trades, and the stored candles must still equal an
independent computation: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from coinflow.exchange_files import read_trades_csv
from coinflow.quality import Rejects
from feature_pipeline.sources.kraken_replay_server import KrakenReplayServer
from tests.support.feature_runs import PAIR, assert_candles_equal, env_for, expected_candles, offline_view
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

COMPRESSION = 100  # the first 600 real trades (about 13 minutes) are replayed in about 8 s


def test_live_source_through_replay_server_with_a_forced_reconnect(settings, data_dir):
    real = read_trades_csv(data_dir / "kraken" / "btcusd_trades_2019-07-01T00.csv", PAIR, Rejects("test"))[:600]
    start_ms = int(time.time() * 1000) + 20_000
    first = real[0]["timestamp_ms"]
    trades = [{**t, "timestamp_ms": start_ms + (t["timestamp_ms"] - first) // COMPRESSION} for t in real]

    server = KrakenReplayServer(trades, speed=1.0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)

    env = env_for(settings) | {
        "COINFLOW_KRAKEN_WS_URL": url,
        "COINFLOW_RECONNECT_INITIAL_S": "0.1",
        "COINFLOW_RECONNECT_MAX_S": "1",
        "COINFLOW_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "feature_pipeline", "live", "--pairs", PAIR],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: server.published(PAIR) >= 300, 90, "half of the trades to be published")
        assert asyncio.run_coroutine_threadsafe(server.drop_connections(), loop).result(timeout=10) == 1
        wait_for(lambda: server.published(PAIR) == len(trades), 60, "every trade to be published")
        assert server.connections >= 2 and server.subscriptions >= 2

        expected = expected_candles(
            pd.DataFrame(
                {
                    "time_ms": [t["timestamp_ms"] for t in trades],
                    "price": [t["price"] for t in trades],
                    "qty": [t["qty"] for t in trades],
                }
            )
        )
        # Every window closes on the wall clock's ticks once its end (plus grace) has passed.
        wait_for(lambda: len(offline_view(settings, "ohlcv_1m")) == len(expected), 120, "every candle in the store")
        assert proc.poll() is None

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    assert_candles_equal(offline_view(settings, "ohlcv_1m"), expected)
