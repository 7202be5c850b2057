"""`replay-session` end to end: the recorded Coinbase session -> local server -> Coinbase source -> broker ->
books -> book topic, Parquet and Feast (online and offline), and the session's trades -> candles."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pandas as pd
import pytest

from coinflow.feature_store import feature_store
from feature_repo.names import BID_SHARE_FEATURES, ORDERBOOK_FEATURES, ORDERBOOK_VIEW
from tests.support.book_sessions import agreement, recorded_tickers
from tests.support.feature_runs import env_for, offline_view
from tests.support.paths import COINBASE_SESSION

pytestmark = pytest.mark.integration


def test_replay_session_stores_book_states_and_order_book_features(settings, tmp_path):
    tag = uuid.uuid4().hex[:8]
    book_out = tmp_path / "books.parquet"
    env = env_for(settings) | {
        "COINFLOW_BOOK_UPDATES_TOPIC": f"book-updates-{tag}",
        "COINFLOW_BOOK_TOPIC": f"book-{tag}",
        "COINFLOW_BOOK_CONSUMER_GROUP": f"it-books-{tag}",
        "COINFLOW_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "feature_pipeline",
            "replay-session",
            str(COINBASE_SESSION),
            "--book-out",
            str(book_out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    states = pd.read_parquet(book_out)
    assert len(states) == 375 and set(states["product"]) == {"ETH-USD"}
    assert (states.best_bid < states.best_ask).all()
    assert states.sequence_num.is_monotonic_increasing
    assert agreement(states, recorded_tickers()) >= 0.9

    rows = offline_view(settings, ORDERBOOK_VIEW)
    assert len(rows) >= 5 and set(rows["product"]) == {"coinbase:ETH-USD"}
    assert all(ts.value % 4_000_000_000 == 0 for ts in rows.index)  # stamped at the end of each 4 s window
    assert rows[list(BID_SHARE_FEATURES)].sum(axis=1).round(9).eq(1.0).all()
    first, last = states.timestamp_ms.min(), states.timestamp_ms.max()
    assert rows.index.min().value // 1_000_000 > first and rows.index.max().value // 1_000_000 <= last

    online = (
        feature_store(settings)
        .get_online_features(
            features=[f"{ORDERBOOK_VIEW}:{name}" for name in ORDERBOOK_FEATURES],
            entity_rows=[{"product": "coinbase:ETH-USD"}],
        )
        .to_dict()
    )
    latest = rows.iloc[-1]
    assert online["mid"] == [pytest.approx(latest["mid"])]
    assert online["bid_share_00"] == [pytest.approx(latest["bid_share_00"])]

    candles = offline_view(settings, "ohlcv_1m")
    assert set(candles["pair"]) == {"ETH/USD"} and candles.trade_count.sum() > 0
