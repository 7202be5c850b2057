"""Kraken REST backfill against a fake Trades endpoint serving the real Kraken trades file.

The fake (tests/support/fake_kraken.py, an httpx.MockTransport) pages like
Kraken: trades strictly after ``since`` (ns), a page at a time, ``last`` = the
last trade's time in ns; it can be told to answer some calls with errors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from quixstreams.models.topics import Topic

from coinflow.exchange_files import read_trades_csv
from coinflow.quality import Rejects
from coinflow.schemas import Trade
from feature_pipeline.sources.kraken_rest import (
    KrakenApiError,
    KrakenRestClient,
    KrakenRestSource,
    backfill_trades,
    load_checkpoint,
)
from tests.support.fake_kraken import PAIR, FakeKraken
from tests.support.paths import KRAKEN_TRADES_CSV

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def trades() -> list[Trade]:
    rejects = Rejects("test_csv")
    # Served as Kraken's own trades: their ids are the exchange's, not a file's time keys (no id_space).
    loaded = [
        {k: v for k, v in t.items() if k != "id_space"} for t in read_trades_csv(KRAKEN_TRADES_CSV, PAIR, rejects)
    ]
    assert len(loaded) > 2000 and not rejects.counts
    return loaded


def _rate_limited(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"error": ["EAPI:Rate limit exceeded"]})


def _too_many(request: httpx.Request) -> httpx.Response:
    return httpx.Response(429, text="Too Many Requests")


def _bad_gateway(request: httpx.Request) -> httpx.Response:
    return httpx.Response(502, text="<html>Bad gateway</html>")


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def _internal_error(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"error": ["EGeneral:Internal error"]})


def _client(fake: FakeKraken, sleeps: list[float] | None = None, **options: Any) -> KrakenRestClient:
    options.setdefault("min_interval_s", 0.0)
    return KrakenRestClient(
        "https://kraken.test",
        transport=fake.transport(),
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        **options,
    )


def _flat(batches: Any) -> list[Trade]:
    return [trade for batch in batches for trade in batch]


def _window(trades: list[Trade], first: int, stop: int) -> tuple[int, int, list[Trade]]:
    """A range from trade ``first``'s time to trade ``stop``'s time and the trades inside."""
    start_ms, end_ms = trades[first]["timestamp_ms"], trades[stop]["timestamp_ms"]
    return start_ms, end_ms, [t for t in trades if start_ms <= t["timestamp_ms"] < end_ms]


def test_pagination_covers_the_range_without_gaps_or_duplicates(trades: list[Trade], tmp_path: Path) -> None:
    fake = FakeKraken(trades, page_size=97)
    start_ms, end_ms, expected = _window(trades, 150, 2400)
    checkpoint = tmp_path / "backfill.json"

    with _client(fake) as client:
        batches = list(backfill_trades(client, PAIR, start_ms, end_ms, checkpoint, progress=False))

    assert len(expected) > 2000
    assert _flat(batches) == expected  # same trades, same order, every field
    assert all(len(batch) <= 97 for batch in batches) and len(batches) > 20
    assert fake.since_of_call(1) == start_ms * 1_000_000 - 1
    # Each call continues from the previous page's last trade.
    for number in range(2, len(fake.requests) + 1):
        assert fake.since_of_call(number) > fake.since_of_call(number - 1)
    assert load_checkpoint(checkpoint)[PAIR] == {
        "since_ns": end_ms * 1_000_000 - 1,
        "last_trade_id": expected[-1]["trade_id"],
    }
    assert not list(tmp_path.glob("*.tmp"))


def test_backfill_stops_when_caught_up_with_the_present(trades: list[Trade]) -> None:
    fake = FakeKraken(trades, page_size=500)
    start_ms = trades[2000]["timestamp_ms"]
    with _client(fake) as client:
        got = _flat(backfill_trades(client, PAIR, start_ms, start_ms + 10 * 86_400_000, None, progress=False))
    assert got == [t for t in trades if t["timestamp_ms"] >= start_ms]
    assert len(fake.requests) == 3  # two pages, then an empty one


def test_rate_limits_server_errors_and_timeouts_are_retried_with_backoff(trades: list[Trade]) -> None:
    fake = FakeKraken(trades, page_size=200)
    fake.faults = {2: _rate_limited, 3: _too_many, 4: _bad_gateway, 5: _timeout}
    start_ms, end_ms, expected = _window(trades, 0, 1000)
    sleeps: list[float] = []

    with _client(fake, sleeps, backoff_initial_s=0.5, backoff_max_s=3.0) as client:
        got = _flat(backfill_trades(client, PAIR, start_ms, end_ms, None, progress=False))

    assert got == expected
    assert sleeps == [0.5, 1.0, 2.0, 3.0]  # doubling, capped
    assert fake.since_of_call(6) == fake.since_of_call(2)  # the failed page was asked again


def test_retries_run_out_with_a_clear_error(trades: list[Trade]) -> None:
    fake = FakeKraken(trades)
    fake.faults = {n: _rate_limited for n in range(1, 10)}
    with _client(fake, max_attempts=3) as client, pytest.raises(KrakenApiError, match="3 times.*Rate limit"):
        client.trades(PAIR, 0)
    assert len(fake.requests) == 3


def test_calls_keep_the_minimum_interval(trades: list[Trade]) -> None:
    fake = FakeKraken(trades, page_size=1000)
    sleeps: list[float] = []
    with _client(fake, sleeps, min_interval_s=10.0) as client:  # the fake sleep returns at once
        for _ in range(4):
            client.trades(PAIR, 0)
    assert len(sleeps) == 3 and all(9.0 < s <= 10.0 for s in sleeps)


def test_interrupted_backfill_resumes_from_the_checkpoint(trades: list[Trade], tmp_path: Path) -> None:
    start_ms, end_ms, expected = _window(trades, 10, 1900)
    checkpoint = tmp_path / "state" / "backfill.json"

    uninterrupted_fake = FakeKraken(trades, page_size=150)
    with _client(uninterrupted_fake) as client:
        uninterrupted = _flat(backfill_trades(client, PAIR, start_ms, end_ms, None, progress=False))
    assert uninterrupted == expected

    first_fake = FakeKraken(trades, page_size=150)
    first_fake.faults = {4: _internal_error}  # dies after three pages
    first: list[Trade] = []
    with _client(first_fake) as client, pytest.raises(KrakenApiError, match="EGeneral:Internal error"):
        for batch in backfill_trades(client, PAIR, start_ms, end_ms, checkpoint, progress=False):
            first.extend(batch)
    assert len(first) == 3 * 150
    assert load_checkpoint(checkpoint)[PAIR]["last_trade_id"] == first[-1]["trade_id"]

    second_fake = FakeKraken(trades, page_size=150)
    with _client(second_fake) as client:
        second = _flat(backfill_trades(client, PAIR, start_ms, end_ms, checkpoint, progress=False))

    assert first + second == uninterrupted  # nothing lost, nothing twice
    assert second_fake.since_of_call(1) == first_fake.since_of_call(4)  # picked up where it stopped
    with _client(FakeKraken(trades)) as client:  # a finished range has nothing left
        assert list(backfill_trades(client, PAIR, start_ms, end_ms, checkpoint, progress=False)) == []


def test_a_consumer_that_stops_early_gets_the_unconfirmed_page_again(trades: list[Trade], tmp_path: Path) -> None:
    start_ms, end_ms, expected = _window(trades, 0, 1000)
    checkpoint = tmp_path / "backfill.json"
    with _client(FakeKraken(trades, page_size=100)) as client:
        first: list[Trade] = []
        for batch in backfill_trades(client, PAIR, start_ms, end_ms, checkpoint, progress=False):
            first.extend(batch)
            if len(first) == 300:
                break  # e.g. crashed while producing the third page
        second = _flat(backfill_trades(client, PAIR, start_ms, end_ms, checkpoint, progress=False))
    assert second[0] == first[200]  # the third page was not confirmed: fetched again
    assert first[:200] + second == expected


def test_unknown_pair_raises_a_clear_error_without_retrying(trades: list[Trade], tmp_path: Path) -> None:
    fake = FakeKraken(trades)
    with (
        _client(fake) as client,
        pytest.raises(KrakenApiError, match=r"FOO/USD \(FOOUSD\).*EQuery:Unknown asset pair"),
    ):
        list(backfill_trades(client, "FOO/USD", 0, 10**13, tmp_path / "c.json", progress=False))
    assert len(fake.requests) == 1


def test_bad_rows_are_rejected_and_the_rest_kept(trades: list[Trade]) -> None:
    fake = FakeKraken(trades[:50], page_size=100)
    fake.rows[10][1][0] = "NaN"
    fake.rows[20][1][3] = "?"
    rejected: list[dict] = []
    with _client(fake) as client:
        got = _flat(
            backfill_trades(
                client, PAIR, 0, 10**13, None, rejects=Rejects("test_rest", forward=rejected.append), progress=False
            )
        )
    assert [t["trade_id"] for t in got] == [t["trade_id"] for i, t in enumerate(trades[:50]) if i not in (10, 20)]
    assert [r["reason"] for r in rejected] == ["non_positive_or_nan", "bad_side"]


class _FakeProducer:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.flushes = 0

    def produce(self, topic: str, value: Any = None, key: Any = None, timestamp: int | None = None, **_: Any) -> None:
        self.messages.append({"topic": topic, "key": key, "value": json.loads(value), "timestamp": timestamp})

    def flush(self, timeout: float | None = None) -> int:
        self.flushes += 1
        return 0


def _rest_source(fake: FakeKraken, checkpoint: Path) -> tuple[KrakenRestSource, _FakeProducer]:
    source = KrakenRestSource(
        [PAIR],
        days=365 * 40,  # the file is from 2019
        checkpoint_path=checkpoint,
        dead_letter_topic="dead-letters",
        close_after_ms=60_000,
        run_id="run-1",
        min_interval_s=0.0,
        progress=False,
        transport=fake.transport(),
    )
    producer = _FakeProducer()
    source.configure(Topic("trades", key_serializer="string", value_serializer="json"), producer)
    return source, producer


def test_rest_source_produces_trades_then_an_end_marker(trades: list[Trade], tmp_path: Path) -> None:
    checkpoint = tmp_path / "backfill.json"
    source, producer = _rest_source(FakeKraken(trades[:250], page_size=100), checkpoint)
    source.start()

    assert all(m["topic"] == "trades" and m["key"] == PAIR.encode() for m in producer.messages)
    *trade_messages, end = producer.messages
    assert [m["value"] for m in trade_messages] == trades[:250]
    assert [m["timestamp"] for m in trade_messages] == [t["timestamp_ms"] for t in trades[:250]]
    assert end["value"] == {
        "control": "end",
        "pair": PAIR,
        "timestamp_ms": trades[249]["timestamp_ms"] + 60_000,
        "run_id": "run-1",
    }
    assert end["timestamp"] == end["value"]["timestamp_ms"]
    assert producer.flushes >= 3  # once per page, before the checkpoint moves on

    # Run again: nothing new since the checkpoint, so only an end marker at the end of the range (now).
    before_ms = int(time.time() * 1000)
    again, producer = _rest_source(FakeKraken(trades[:250], page_size=100), checkpoint)
    again.start()
    [end] = producer.messages
    assert end["value"]["control"] == "end"
    assert before_ms <= end["value"]["timestamp_ms"] <= time.time() * 1000


def test_rest_source_fails_loudly_on_an_unknown_pair(trades: list[Trade], tmp_path: Path) -> None:
    source, producer = _rest_source(FakeKraken(trades[:10]), tmp_path / "backfill.json")
    source.pairs = ["FOO/USD"]
    with pytest.raises(KrakenApiError, match="FOO/USD"):
        source.start()
    assert producer.messages == []
