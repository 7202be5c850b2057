"""L2 snapshot files: real rows become exact ``snapshot`` frames stamped in UTC; each kind of bad row is a counted,
dead-lettered reject and the read goes on; consecutive snapshots of one book keep its feature averages."""

from __future__ import annotations

import csv
import functools
import gzip
import itertools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from coinflow.books import CONTROL_RESET, FRAME_SNAPSHOT, BookFrame, OrderBook, frame_sides
from coinflow.exchange_files import (
    FileFormatError,
    SnapshotColumns,
    check_snapshot_csv,
    iso_time_ms,
    iter_snapshot_csv,
    parse_snapshot_row,
    snapshot_columns,
)
from coinflow.quality import Rejects
from coinflow.schemas import MAX_FUTURE_MS
from coinflow.settings import Settings
from feature_pipeline.books.dataflow import BookProcessor
from feature_pipeline.transforms.book_features import depth_shares
from feature_repo.names import BID_SHARE_FEATURES
from tests.support.paths import COINBASE_SNAPSHOTS

NOW_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
LEVELS = 50
FIRST_MS = 1_586_649_183_571  # the file's first row, 2020-04-11 19:53:03.571342-04:00: 23:53:03.571 UTC


@functools.cache
def real_file() -> tuple[list[str], list[list[str]]]:
    """The header and first 410 rows of the bundled file, as csv reads them (read once, when first needed)."""
    with gzip.open(COINBASE_SNAPSHOTS, "rt", newline="") as handle:
        reader = csv.reader(handle)
        return next(reader), list(itertools.islice(reader, 410))


def real_header() -> list[str]:
    return real_file()[0]


def real_rows() -> list[list[str]]:
    return real_file()[1]


def parse(fields: list[str], previous_ms: int | None = None) -> BookFrame | str:
    columns = snapshot_columns(real_header())
    return parse_snapshot_row(fields, columns, "coinbase", "BTC-USD", previous_ms, NOW_MS, MAX_FUTURE_MS)


def frame(fields: list[str]) -> BookFrame:
    """The frame of a good row."""
    parsed = parse(fields)
    assert not isinstance(parsed, str), parsed
    return parsed


def column(name: str) -> int:
    return real_header().index(name)


def changed(row: list[str], **fields: str) -> list[str]:
    """`row` with some of its fields (by column name) replaced."""
    out = list(row)
    for name, value in fields.items():
        out[column(name)] = value
    return out


def write_gz(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with gzip.open(path, "wt", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *rows])
    return path


def test_the_header_gives_fifty_levels_a_side_by_name():
    assert snapshot_columns(real_header()) == SnapshotColumns(
        timestamp=0,
        sequence=1,
        bids=tuple((2 + 3 * i, 3 + 3 * i) for i in range(LEVELS)),
        asks=tuple((152 + 3 * i, 153 + 3 * i) for i in range(LEVELS)),
        width=301,
    )


def test_a_real_row_is_an_exact_snapshot_stamped_in_utc():
    row = real_rows()[0]
    first = frame(row)
    assert first["kind"] == FRAME_SNAPSHOT and (first["exchange"], first["product"]) == ("coinbase", "BTC-USD")
    assert first["timestamp_ms"] == FIRST_MS
    assert datetime.fromtimestamp(FIRST_MS / 1000, UTC).isoformat() == "2020-04-11T23:53:03.571000+00:00"
    assert first["sequence_num"] == 13441934353 and first["checksum_ok"] is None
    assert len(first["bids"]) == len(first["asks"]) == LEVELS
    for side, levels in (("Bid", first["bids"]), ("Ask", first["asks"])):
        written = [[row[column(f"{side}_{i}_{f}")] for f in ("Price", "Size")] for i in range(1, LEVELS + 1)]
        assert levels == written  # the file's own digits, never through a float
    assert first["bids"][:2] == [["6889", "2.82392258"], ["6888.43", "0.37145832"]]
    assert first["asks"][0] == ["6889.82", "4"]
    assert book_of(first).best_bid() == (Decimal("6889"), Decimal("2.82392258"))


def test_iso_times_are_converted_to_utc_by_their_offset():
    assert iso_time_ms("2020-04-11 19:53:03.571342-04:00") == FIRST_MS
    assert iso_time_ms("2020-04-11T23:53:03.571999+00:00") == FIRST_MS  # truncated, not rounded
    assert iso_time_ms("2020-04-12 01:53:03.571+02:00") == FIRST_MS
    assert iso_time_ms("2020-04-11 19:53:03.571342") == "timestamp_without_offset"
    assert iso_time_ms("yesterday") == "bad_timestamp"


def test_the_first_rows_of_the_file_are_read_in_order_though_the_sequence_goes_down():
    rejects = Rejects("test_snapshots")
    frames = list(itertools.islice(iter_snapshot_csv(COINBASE_SNAPSHOTS, "coinbase", "BTC-USD", rejects), 410))
    assert len(frames) == len(real_rows()) and not rejects.counts
    times = [f["timestamp_ms"] for f in frames]
    sequences = [f["sequence_num"] for f in frames]
    assert times == sorted(times) and times[0] == FIRST_MS
    written = [int(row[1]) for row in real_rows()]
    assert sequences == written and written[405] < written[404] == 13441985419  # the feed's, carried as they are


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"Timestamp": "2020-04-11 25:61:00-04:00"}, "bad_timestamp"),
        ({"Timestamp": "2020-04-11 19:53:03.571342"}, "timestamp_without_offset"),
        ({"Timestamp": "2008-12-31 23:00:00+00:00"}, "timestamp_before_2009"),
        ({"Timestamp": "2999-01-01 00:00:00+00:00"}, "future_timestamp"),
        ({"Sequence": "-5"}, "bad_sequence"),
        ({"Bid_3_Price": "abc"}, "not_a_decimal"),
        ({"Ask_50_Price": ""}, "not_a_decimal"),
        ({"Bid_50_Price": "NaN"}, "not_a_decimal"),
        ({"Bid_7_Price": "0"}, "non_positive_price"),
        ({"Ask_2_Price": "-6890"}, "non_positive_price"),
        ({"Ask_4_Size": "-0.5"}, "negative_qty"),
        ({"Bid_1_Size": "0"}, "zero_qty"),
        ({"Bid_1_Price": "6889.82"}, "crossed_book"),  # at the best ask
        ({"Ask_50_Price": "6888"}, "crossed_book"),  # below the best bid, deep in the row
    ],
)
def test_each_kind_of_bad_row_is_a_reason(changes, reason):
    assert parse(changed(real_rows()[0], **changes)) == reason


def test_a_row_short_of_the_level_columns_is_malformed():
    assert parse(real_rows()[0][:150]) == "malformed_row"


def test_a_row_stamped_before_the_last_row_taken_is_refused():
    real = real_rows()
    first, second = frame(real[0]), frame(real[1])
    assert parse(real[0], previous_ms=second["timestamp_ms"]) == "timestamp_backwards"
    assert isinstance(parse(real[0], previous_ms=first["timestamp_ms"]), dict)  # the same time is no step back


def test_bad_rows_are_counted_logged_once_and_dead_lettered_and_the_read_goes_on(tmp_path, caplog):
    real = real_rows()
    rows = [
        real[0],
        changed(real[1], Bid_1_Price="6889.82"),
        changed(real[2], Ask_4_Size="-1"),
        real[3],
        real[1],  # stamped before real[3]
        changed(real[4], Bid_1_Price="7000"),
        real[5],
    ]
    letters: list[dict] = []
    rejects = Rejects("test_snapshots", forward=letters.append)
    frames = list(
        iter_snapshot_csv(write_gz(tmp_path / "s.csv.gz", real_header(), rows), "coinbase", "BTC-USD", rejects)
    )
    assert frames == [frame(row) for row in (real[0], real[3], real[5])]
    assert rejects.counts == {"crossed_book": 2, "negative_qty": 1, "timestamp_backwards": 1}
    assert [letter["reason"] for letter in letters] == [
        "crossed_book",
        "negative_qty",
        "timestamp_backwards",
        "crossed_book",
    ]
    assert letters[0]["raw"] == ",".join(rows[1]) and letters[0]["stage"] == "test_snapshots"
    logged = [r.getMessage() for r in caplog.records if "rejected an input (crossed_book)" in r.getMessage()]
    assert len(logged) == 1 and "Sample: 2020-04-11 19:53:04" in logged[0]


def test_a_compressed_file_cut_short_keeps_its_rows_and_says_so(tmp_path):
    whole = write_gz(tmp_path / "s.csv.gz", real_header(), real_rows()[:200]).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    rejects = Rejects("test_snapshots")
    frames = list(iter_snapshot_csv(cut, "coinbase", "BTC-USD", rejects))
    assert 0 < len(frames) < 200 and rejects.counts == {"unreadable_file": 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"time_ms,timestamp,price,qty,side\n1,x,1,1,buy\n", "missing sequence,bid_1_price"),
        (b"Timestamp,Sequence,Bid_1_Price,Bid_1_Size\n", "missing ask_1_price,ask_1_size"),
    ],
)
def test_a_file_that_is_no_snapshots_csv_is_a_clear_error(tmp_path, data, message):
    path = tmp_path / "s.csv.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(FileFormatError, match=message):
        check_snapshot_csv(path)


def test_a_gz_name_on_a_plain_file_is_a_clear_error(tmp_path):
    path = tmp_path / "s.csv.gz"
    path.write_text(",".join(real_header()))
    with pytest.raises(FileFormatError, match="cannot be read: Not a gzipped file"):
        check_snapshot_csv(path)
    check_snapshot_csv(COINBASE_SNAPSHOTS)


def book_of(frame: BookFrame) -> OrderBook:
    """The book a snapshot frame describes, built from its wire levels."""
    sides = frame_sides(frame["bids"], frame["asks"])
    assert not isinstance(sides, str)
    book = OrderBook()
    book.apply(*sides)
    return book


def bid_shares(book: OrderBook) -> list[float]:
    """The bid depth shares of one sample of `book`."""
    bid, ask = book.best_bid(), book.best_ask()
    assert bid is not None and ask is not None
    return depth_shares(book, (bid[0] + ask[0]) / 2)[0]


def feature_rows(processor: BookProcessor, records: list) -> list[Mapping[str, Any]]:
    """The 4 s feature rows `processor` makes of `records` (frames and control records)."""
    return [
        out
        for record in records
        for out in processor.step(json.dumps(record).encode(), "coinbase:BTC-USD", 0, None)
        if "window_end_ms" in out
    ]


def test_consecutive_snapshots_of_a_book_keep_its_three_sample_averages_and_a_reset_starts_them_afresh():
    """Every row is a snapshot: the depth shares of a 4 s row still average the book's last 3 samples, as they do
    over a live feed's updates; only a dropped book starts afresh."""
    processor = BookProcessor(Settings(_env_file=None), Rejects("test_dataflow"))
    frames = [frame(row) for row in real_rows()[:30]]
    rows = feature_rows(processor, frames[:20])
    # A row at boundary b samples the book of the last snapshot stamped before b.
    singles = [bid_shares(book_of([f for f in frames if f["timestamp_ms"] < r["window_end_ms"]][-1])) for r in rows]
    assert len(rows) >= 4 and singles[2] != singles[3]  # the book moved: one sample alone would differ
    for i, row in enumerate(rows):
        window = singles[max(0, i - 2) : i + 1]
        expected = [sum(s[b] for s in window) / len(window) for b in range(len(BID_SHARE_FEATURES))]
        assert [row[name] for name in BID_SHARE_FEATURES] == pytest.approx(expected, abs=1e-12)

    reset = {"control": CONTROL_RESET, "exchange": "coinbase", "product": "BTC-USD"}
    fresh = feature_rows(processor, [{**reset, "timestamp_ms": frames[19]["timestamp_ms"]}, *frames[20:]])
    assert fresh, "the rebuilt book is sampled again"
    book = book_of([f for f in frames if f["timestamp_ms"] < fresh[0]["window_end_ms"]][-1])
    assert [fresh[0][name] for name in BID_SHARE_FEATURES] == pytest.approx(bid_shares(book), abs=1e-12)
