"""`replay-snapshots` end to end: the first 300 rows of the bundled Coinbase BTC-USD snapshots (and a crossed copy
of one) -> file source -> broker -> books -> book topic, Parquet, dead letters and Feast's offline store."""

from __future__ import annotations

import bisect
import csv
import gzip
import itertools
import json
import subprocess
import sys
import uuid
from decimal import Decimal

import pandas as pd
import pytest

from feature_repo.names import ORDERBOOK_VIEW
from tests.support.feature_runs import env_for, offline_view, read_topic
from tests.support.paths import COINBASE_SNAPSHOTS

pytestmark = pytest.mark.integration

ROWS = 300
SAMPLE_MS = 4000


def first_rows(n: int) -> tuple[list[str], list[list[str]]]:
    with gzip.open(COINBASE_SNAPSHOTS, "rt", newline="") as handle:
        reader = csv.reader(handle)
        return next(reader), list(itertools.islice(reader, n))


def test_replay_snapshots_stores_a_feature_row_per_4_s_with_the_top_of_the_latest_snapshot(settings, tmp_path):
    header, rows = first_rows(ROWS)
    bid_at, ask_at = header.index("Bid_1_Price"), header.index("Ask_1_Price")
    crossed = list(rows[150])
    crossed[bid_at] = crossed[ask_at]
    path = tmp_path / "snapshots.csv.gz"
    with gzip.open(path, "wt", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *rows[:151], crossed, *rows[151:]])
    tag = uuid.uuid4().hex[:8]
    book_out = tmp_path / "books.parquet"
    env = env_for(settings) | {
        "COINFLOW_BOOK_UPDATES_TOPIC": f"book-updates-{tag}",
        "COINFLOW_BOOK_TOPIC": f"book-{tag}",
        "COINFLOW_BOOK_CONSUMER_GROUP": f"it-books-{tag}",
        "COINFLOW_METRICS_PORT": "0",
    }
    command = ["-m", "feature_pipeline", "replay-snapshots", str(path), "--product", "coinbase:BTC-USD"]
    done = subprocess.run(
        [sys.executable, *command, "--book-out", str(book_out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "snapshots_file: rejected 1 (crossed_book=1)" in done.stdout

    # Exchange times in UTC ms, from the file's ISO times by pandas (an independent route).
    times = [ts.value // 1_000_000 for ts in pd.to_datetime([row[0] for row in rows], utc=True)]
    first, last = times[0], times[-1]
    features = offline_view(settings, ORDERBOOK_VIEW)
    boundaries = [ts.value // 1_000_000 for ts in features.index]
    assert len(features) == last // SAMPLE_MS - first // SAMPLE_MS == 75  # every 4 s boundary in (first, last]
    assert boundaries == list(range((first // SAMPLE_MS + 1) * SAMPLE_MS, last + 1, SAMPLE_MS))
    assert set(features["product"]) == {"coinbase:BTC-USD"}
    for boundary, (mid, spread) in zip(boundaries, features[["mid", "spread"]].itertuples(index=False), strict=True):
        latest = rows[bisect.bisect_left(times, boundary) - 1]  # the last snapshot stamped before the boundary
        bid, ask = Decimal(latest[bid_at]), Decimal(latest[ask_at])
        assert (mid, spread) == (float((bid + ask) / 2), float(ask - bid)), boundary

    states = pd.read_parquet(book_out)
    assert list(states.timestamp_ms) == times
    assert list(states.sequence_num) == [int(row[1]) for row in rows]
    assert list(states.best_bid) == [float(row[bid_at]) for row in rows] and (states.levels == 100).all()

    letters = [json.loads(m.value()) for m in read_topic(settings, settings.topics.dead_letters)]
    assert [(d["stage"], d["reason"], d["raw"]) for d in letters] == [
        ("snapshots_file", "crossed_book", ",".join(crossed))
    ]
