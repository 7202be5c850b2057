"""The L2 book, Kraken's checksum on a captured session, bad levels, and the order-book features against pandas."""

from __future__ import annotations

import gzip
import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coinflow.books import OrderBook, book_state, frame_levels, to_level, wire_levels
from feature_pipeline.sources.coinbase_protocol import parse_message
from feature_pipeline.sources.kraken_protocol import book_checksum, checksum_text
from feature_pipeline.transforms.book_features import BookSampler
from feature_repo.names import ASK_SHARE_FEATURES, BID_SHARE_FEATURES, MID_HISTORY_FEATURES
from tests.support.paths import DATA


def _data(relative: str) -> Path:
    return DATA / relative


def D(text: str) -> Decimal:
    return Decimal(text)


def test_levels_are_exact_decimals_and_zero_removes():
    book = OrderBook()
    book.apply([(D("0.1") + D("0.2"), D("1"))], [(D("0.4"), D("2"))])
    book.apply([(D("0.3"), D("5"))], [])
    assert list(book.bids.items()) == [(D("0.3"), D("5"))]  # 0.1 + 0.2 is the same level as 0.3
    book.apply([(D("0.30"), D("0"))], [])
    assert book.best_bid() is None and book.best_ask() == (D("0.4"), D("2"))


def test_top_of_book_depth_and_truncation():
    book = OrderBook(depth=3)
    book.apply(
        [(D(p), D("1")) for p in ("99", "98", "97", "96")], [(D(p), D("2")) for p in ("101", "102", "103", "104")]
    )
    assert [p for p, _ in book.top_bids(10)] == [D("99"), D("98"), D("97")]  # the worst bid fell out of scope
    assert [p for p, _ in book.top_asks(2)] == [D("101"), D("102")]
    assert [p for p, _ in book.bids_down_to(D("98"))] == [D("99"), D("98")]
    assert [p for p, _ in book.asks_up_to(D("102.5"))] == [D("101"), D("102")]
    state = book_state(book, "x", "P", 1, imbalance_levels=2)
    assert state["mid"] == 100.0 and state["spread"] == 2.0
    assert state["microprice"] == pytest.approx((99 * 2 + 101 * 1) / 3)
    assert state["imbalance"] == pytest.approx((2 - 4) / 6)


def test_a_crossed_or_one_sided_book_has_no_state():
    book = OrderBook()
    book.apply([(D("100"), D("1"))], [(D("100"), D("1"))])
    assert book.crossed() and book_state(book, "x", "P", 1, 10) is None
    one_sided = OrderBook()
    one_sided.apply([(D("100"), D("1"))], [])
    assert book_state(one_sided, "x", "P", 1, 10) is None


@pytest.mark.parametrize(
    ("price", "qty", "reason"),
    [
        ("abc", "1", "not_a_decimal"),
        ("1", "-0.5", "negative_qty"),
        ("0", "1", "non_positive_price"),
        ("NaN", "1", "not_a_decimal"),
        ("1", "Infinity", "not_a_decimal"),
        (1.5, "1", "not_a_decimal"),
        (None, "1", "not_a_decimal"),
    ],
)
def test_bad_levels_are_named(price, qty, reason):
    assert to_level(price, qty) == reason


def test_wire_levels_round_trip_exactly():
    levels = [(D("0.00000131"), D("1E-8")), (D("1919.440"), D("0"))]
    wire = wire_levels(levels)
    assert wire == [["0.00000131", "0.00000001"], ["1919.440", "0"]]
    assert frame_levels(wire) == levels
    assert frame_levels([["1", "-1"]]) == "negative_qty"
    assert frame_levels("nope") == "malformed_levels"


def test_kraken_checksum_string_follows_the_documented_example():
    book = OrderBook()
    book.apply([(D("0.05005"), D("0.00000500"))], [(D("0.05010"), D("0.00000500"))])
    assert checksum_text(book) == "50105005005500"


def test_kraken_checksum_matches_every_update_of_a_captured_session():
    """Kraken's own checksums over 30 s of real book-1000 traffic (WebSocket v1: the same CRC32 as v2)."""
    books: dict[str, OrderBook] = {}
    verified = 0
    for line in _data("kraken/ws_v1_2021-04-17/book.log").read_text().splitlines():
        _, sep, body = line.partition(": ")
        if not sep or not body.startswith("["):
            continue
        message = json.loads(body)
        pair, parts = message[-1], message[1:-2]
        checksum = None
        for part in parts:
            if "as" in part or "bs" in part:
                books[pair] = OrderBook(depth=1000)
            levels = [[(D(p), D(q)) for p, q, *_ in part.get(k, [])] for k in ("bs", "b", "as", "a")]
            books[pair].apply(levels[0] + levels[1], levels[2] + levels[3])
            checksum = part.get("c", checksum)
        if checksum is not None:
            assert book_checksum(books[pair]) == int(checksum), pair
            verified += 1
    assert verified > 4000


# --- features against pandas -------------------------------------------------


def _session_l2_frames() -> list[tuple[int, list]]:
    """The raw text of every level2 frame of the recorded Coinbase session."""
    frames = []
    with gzip.open(_data("coinbase/advanced_trade_ETH-USD_2026-08-09.jsonl.gz"), "rt") as lines:
        for line in lines:
            entry = json.loads(line)
            if entry["t"] == "recv" and '"l2_data"' in entry["data"]:
                frames.append(entry["data"])
    return frames


def _pandas_features(samples: dict[int, pd.DataFrame], mids_30s: pd.Series) -> pd.DataFrame:
    """The features by an independent route: floats, pandas bucketing, rolling means, an as-of mid grid."""
    rows = []
    for at_ms, levels in samples.items():
        bids = levels[levels.side == "bid"]
        asks = levels[levels.side == "offer"]
        mid = (bids.price.max() + asks.price.min()) / 2
        row = {"window_end_ms": at_ms, "mid": mid}
        for name, side, distance in (("bid", bids, (mid - bids.price) / mid), ("ask", asks, (asks.price - mid) / mid)):
            bucket = np.floor(distance / 0.001)
            inside = side[bucket < 20].assign(bucket=bucket[bucket < 20].astype(int))
            shares = inside.groupby("bucket").qty.sum().reindex(range(20), fill_value=0.0)
            row.update({f"{name}_share_{i:02d}": v for i, v in (shares / shares.sum()).items()})
        grid = mids_30s[mids_30s.index <= at_ms].iloc[::-1].head(10)
        row.update({f"mid_30s_{i}": v for i, v in enumerate(grid.to_list())})
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("window_end_ms").sort_index()
    shares = list(BID_SHARE_FEATURES + ASK_SHARE_FEATURES)
    frame[shares] = frame[shares].rolling(3, min_periods=1).mean()
    return frame


def test_features_agree_with_an_independent_pandas_computation():
    book = OrderBook()
    sampler = BookSampler("coinbase:ETH-USD", sample_ms=4000, imbalance_levels=10)
    reference: dict[int, dict] = {}  # the book as a plain dict, maintained from the raw strings
    samples: dict[int, pd.DataFrame] = {}
    mids: dict[int, float] = {}
    clock = None
    rows = []
    for text in _session_l2_frames():
        frame = parse_message(text)
        ts = frame.timestamp_ms
        if clock is not None and ts // 1000 > clock // 1000:
            snapshot = pd.DataFrame(
                [(side, float(p), float(q)) for (side, p), q in reference.items()], columns=["side", "price", "qty"]
            )
            best_bid = snapshot[snapshot.side == "bid"].price.max()
            best_ask = snapshot[snapshot.side == "offer"].price.min()
            for boundary in range(clock // 1000 + 1, ts // 1000 + 1):
                at = boundary * 1000
                if at % 4000 == 0:
                    samples[at] = snapshot
                if at % 30000 == 0:
                    mids[at] = (best_bid + best_ask) / 2
        rows += sampler.advance(book, ts)
        clock = ts
        for event in frame.books:
            if event.snapshot:
                book = OrderBook()
                reference.clear()
            book.apply(event.bids, event.asks)
        raw = json.loads(text)
        for event in raw["events"]:
            for u in event["updates"]:
                key = (u["side"], u["price_level"])
                if Decimal(u["new_quantity"]):
                    reference[key] = u["new_quantity"]
                else:
                    reference.pop(key, None)
    assert len(rows) >= 5
    got = pd.DataFrame(rows).set_index("window_end_ms").sort_index()
    want = _pandas_features(samples, pd.Series(mids).sort_index())
    assert list(got.index) == list(want.index)
    for name in ("mid", *BID_SHARE_FEATURES, *ASK_SHARE_FEATURES):
        np.testing.assert_allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    history = got[list(MID_HISTORY_FEATURES)].to_numpy()
    expected = want.reindex(columns=list(MID_HISTORY_FEATURES)).to_numpy()
    np.testing.assert_allclose(history, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(history[:, 1]).all()  # a 25 s session holds one 30 s boundary: no older mids are invented
    assert not np.isnan(history[-1, 0])


def test_three_sample_average_and_mid_history_on_a_constructed_book():
    book = OrderBook()
    sampler = BookSampler("x:P", sample_ms=4000, imbalance_levels=1)
    book.apply([(D("99.95"), D("1"))], [(D("100.05"), D("1"))])  # mid 100: both in bucket 0
    assert sampler.advance(book, 1_000) == []
    first = sampler.advance(book, 4_000)
    # The bid moves to bucket 1: just over 0.1 % below the new mid, 99.95.
    book.apply([(D("99.95"), D("0")), (D("99.85"), D("3"))], [])
    second = sampler.advance(book, 8_000)
    third = sampler.advance(book, 12_000)
    fourth = sampler.advance(book, 16_000)
    assert first[0]["bid_share_00"] == 1.0
    assert second[0]["bid_share_00"] == pytest.approx(1 / 2) and second[0]["bid_share_01"] == pytest.approx(1 / 2)
    assert third[0]["bid_share_00"] == pytest.approx(1 / 3)
    assert fourth[0]["bid_share_00"] == 0.0 and fourth[0]["bid_share_01"] == pytest.approx(1.0)
    rows = sampler.advance(book, 61_000)  # 4 s rows through 60 s, and the 30 s and 60 s mids
    assert [r["window_end_ms"] for r in rows] == list(range(20_000, 61_000, 4000))
    assert rows[-1]["mid_30s_0"] == pytest.approx(99.95) and rows[-1]["mid_30s_1"] == pytest.approx(99.95)
    assert math.isnan(rows[-1]["mid_30s_2"])
    sampler.reset()
    assert sampler.advance(None, 70_000) == []  # no book, no rows


def test_order_book_settings_come_from_the_environment(monkeypatch):
    from pydantic import ValidationError

    from coinflow.settings import Settings

    monkeypatch.setenv("COINFLOW_COINBASE_PRODUCTS", "BTC-USD, SOL-USD")
    monkeypatch.setenv("COINFLOW_KRAKEN_BOOK_DEPTH", "100")
    monkeypatch.setenv("COINFLOW_COINBASE_API_SECRET", "-----BEGIN EC PRIVATE KEY-----")
    settings = Settings(_env_file=None)
    assert (
        settings.exchanges.coinbase_products == ["BTC-USD", "SOL-USD"] and settings.exchanges.kraken_book_depth == 100
    )
    assert "BEGIN" not in repr(settings)  # the CDP key never reaches logs
    monkeypatch.setenv("COINFLOW_KRAKEN_BOOK_DEPTH", "7")
    with pytest.raises(ValidationError, match="depth must be"):
        Settings(_env_file=None)
