"""File readers: real files parse fully; bad rows are counted and skipped, never fatal; a file that is not one at all
is a FileFormatError naming the file and the row."""

import base64

import pytest

from coinflow.exchange_files import (
    FileFormatError,
    check_ohlcvt_csv,
    check_trades_csv,
    iter_ohlcvt_csv,
    read_trades_csv,
)
from coinflow.quality import Rejects
from coinflow.schemas import EARLIEST_EVENT_MS, time_trade_key

HEADER = b"time_ms,timestamp,price,qty,side\n"
T0 = 1_561_939_203_172  # 2019-07-01T00:00:03.172Z
TRADES = "btcusd_trades_2019-07-01T00.csv"


def write(tmp_path, data: bytes, name: str = "t.csv"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def rows(*lines: str) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def test_real_trades_file_parses_with_time_keys_as_ids(data_dir):
    rejects = Rejects("test")
    trades = read_trades_csv(data_dir / "kraken" / TRADES, "BTC/USD", rejects)
    assert len(trades) == 2672 and not rejects.counts
    assert trades[0] == {
        "exchange": "kraken",
        "pair": "BTC/USD",
        "trade_id": T0 * 1000,
        "id_space": "time",
        "price": 10749.4,
        "qty": 0.004,
        "side": "sell",
        "timestamp_ms": T0,
    }
    ids = [t["trade_id"] for t in trades]
    assert ids == sorted(set(ids))
    # The file holds trades sharing a millisecond: they get ordinals 0, 1, ... in file order.
    same = [t["trade_id"] for t in trades if t["timestamp_ms"] == 1561939956670]
    assert same == [1561939956670000 + i for i in range(len(same))] and len(same) > 1


def test_time_keys_are_ordinals_within_a_millisecond_and_rise_for_out_of_order_trades():
    keys, previous = [], None
    for ts in (T0, T0, T0 + 5, T0 + 2, T0 + 9):
        previous = time_trade_key(ts, previous)
        keys.append(previous)
    assert keys == [T0 * 1000, T0 * 1000 + 1, (T0 + 5) * 1000, (T0 + 5) * 1000 + 1, (T0 + 9) * 1000]


def test_a_later_file_gets_higher_ids_and_the_same_file_the_same(tmp_path, data_dir):
    original = data_dir / "kraken" / TRADES
    lines = original.read_text().splitlines()
    later = [lines[0]] + [f"{int(line.split(',', 1)[0]) + 3_600_000},{line.split(',', 1)[1]}" for line in lines[1:]]
    path = write(tmp_path, ("\n".join(later) + "\n").encode())
    first = read_trades_csv(original, "BTC/USD", Rejects("test"))
    second = read_trades_csv(path, "BTC/USD", Rejects("test"))
    assert min(t["trade_id"] for t in second) > max(t["trade_id"] for t in first)
    assert read_trades_csv(original, "BTC/USD", Rejects("test")) == first


def test_a_trade_id_column_gives_exchange_ids(tmp_path):
    path = write(
        tmp_path,
        rows(
            "time_ms,timestamp,price,qty,side,trade_id",
            f"{T0},x,10,1,buy,41",
            f"{T0 + 1},x,10,1,buy,abc",
            f"{T0 + 2},x,10,1,buy,-3",
            f"{T0 + 3},x,11,2,sell,42",
            f"{T0 + 4},x,11,2,sell,{2**64}",
        ),
    )
    rejects = Rejects("test")
    trades = read_trades_csv(path, "BTC/USD", rejects)
    assert [t["trade_id"] for t in trades] == [41, 42]
    assert "id_space" not in trades[0]
    assert dict(rejects.counts) == {"bad_trade_id": 3}


def test_columns_are_found_by_name(tmp_path):
    path = write(tmp_path, rows("side,qty,price,timestamp,time_ms", f"b,2,10,x,{T0}"))
    [trade] = read_trades_csv(path, "BTC/USD", Rejects("test"))
    assert (trade["side"], trade["qty"], trade["price"], trade["timestamp_ms"]) == ("buy", 2.0, 10.0, T0)


def test_bad_trade_rows_are_counted_by_reason(tmp_path):
    path = write(
        tmp_path,
        HEADER
        + rows(
            f"{T0},x,10,1,buy",
            f"{T0 + 1},x,-1,1,buy",
            f"{T0 + 2},x,nan,1,sell",
            f"{T0 + 3},x,10,1,hold",
            "abc,x,1,1,buy",
            f"{T0 + 5},x",
            f"{T0 + 6},x,11,2,s",
        ),
    )
    rejects = Rejects("test")
    trades = read_trades_csv(path, "BTC/USD", rejects)
    assert [t["timestamp_ms"] for t in trades] == [T0, T0 + 6]
    assert trades[1]["side"] == "sell"
    assert dict(rejects.counts) == {"non_positive_or_nan": 2, "bad_side": 1, "bad_timestamp": 1, "malformed_row": 1}


def test_implausible_trade_times_are_rejected(tmp_path):
    """1970 (a zero clock), a 31-digit time_ms and a time far ahead are rejected; the good rows around them stay."""
    path = write(
        tmp_path,
        HEADER
        + rows(
            f"{T0},x,10,1,buy",
            "1000,x,10,1,buy",
            f"{EARLIEST_EVENT_MS - 1},x,10,1,buy",
            f"{'9' * 31},x,10,1,buy",
            f"{T0 + 10**12},x,10,1,buy",
            f"{T0 + 1},x,10,1,buy",
        ),
    )
    rejects = Rejects("test")
    trades = read_trades_csv(path, "BTC/USD", rejects)
    assert [t["timestamp_ms"] for t in trades] == [T0, T0 + 1]
    assert dict(rejects.counts) == {"timestamp_before_2009": 2, "future_timestamp": 2}


def test_a_utf8_bom_is_handled(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + HEADER + rows(f"{T0},x,10,1,buy"))
    check_trades_csv(path)
    rejects = Rejects("test")
    assert len(read_trades_csv(path, "BTC/USD", rejects)) == 1 and not rejects.counts


def test_a_row_with_a_latin1_byte_is_rejected_and_dead_lettered_with_its_bytes(tmp_path):
    path = write(
        tmp_path,
        HEADER
        + rows(f"{T0},x,10,1,buy")
        + f"{T0 + 1},caf\xe9,10,1,buy\n".encode("latin-1")
        + rows(f"{T0 + 2},x,10,1,sell"),
    )
    dead = []
    rejects = Rejects("test", forward=dead.append)
    trades = read_trades_csv(path, "BTC/USD", rejects)
    assert [t["timestamp_ms"] for t in trades] == [T0, T0 + 2]
    assert dict(rejects.counts) == {"not_utf8": 1}
    assert base64.b64decode(dead[0]["raw"]) == f"{T0 + 1},caf\xe9,10,1,buy".encode("latin-1")


def test_a_field_over_the_csv_limit_is_a_rejected_row(tmp_path):
    huge = "x" * 140_000  # over csv's field limit of 131,072 characters
    path = write(tmp_path, HEADER + rows(f"{T0},x,10,1,buy", f"{T0 + 1},{huge},10,1,buy", f"{T0 + 2},x,10,1,buy"))
    dead = []
    rejects = Rejects("test", forward=dead.append)
    trades = read_trades_csv(path, "BTC/USD", rejects)
    assert [t["timestamp_ms"] for t in trades] == [T0, T0 + 2]
    assert dict(rejects.counts) == {"unreadable_row": 1}
    assert dead[0]["raw"] == "line 3: field larger than field limit (131072)"


def test_binary_garbage_in_a_row_is_rejected(tmp_path):
    garbage = bytes(b for b in range(256) if b not in b"\r\n")
    path = write(tmp_path, HEADER + rows(f"{T0},x,10,1,buy") + garbage + b"\n" + rows(f"{T0 + 2},x,10,1,buy"))
    rejects = Rejects("test")
    assert [t["timestamp_ms"] for t in read_trades_csv(path, "BTC/USD", rejects)] == [T0, T0 + 2]
    assert dict(rejects.counts) == {"not_utf8": 1}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"a,b,c\n1,2,3\n", "row 1: expected a header time_ms,timestamp,price,qty,side"),
        (rows("time_ms,price,qty", f"{T0},10,1"), "missing timestamp,side"),
        (rows(f"{T0},x,10,1,buy"), "row 1: expected a header"),  # no header
        (b"", "the file is empty"),
        (bytes(range(256)) * 4, "row 1: not UTF-8 text"),
        (b"\x00\x01\x02binary\x00\n", "row 1: not UTF-8 text"),
        (b"time_ms," + b"x" * 140_000 + b"\n", "row 1: field larger than field limit"),
    ],
)
def test_a_file_that_is_no_trades_csv_is_a_clear_error(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(FileFormatError, match=message) as raised:
        check_trades_csv(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)
    with pytest.raises(FileFormatError, match=message):
        read_trades_csv(path, "BTC/USD", Rejects("test"))


def test_real_ohlcvt_file_parses_and_candles_end_an_interval_after_they_start(data_dir):
    rejects = Rejects("test")
    path = data_dir / "kraken" / "ohlcvt_XBTUSD_5m_2023Q1.csv"
    check_ohlcvt_csv(path)
    candles = list(iter_ohlcvt_csv(path, "BTC/USD", "5m", 300, rejects))
    assert len(candles) == 25901 and not rejects.counts
    first = candles[0]
    assert first["window_end_ms"] - first["window_start_ms"] == 300_000
    assert first["low"] <= min(first["open"], first["close"]) <= max(first["open"], first["close"]) <= first["high"]


S0 = 1_672_531_200  # 2023-01-01T00:00:00Z, in seconds


def test_bad_ohlcvt_rows_are_counted(tmp_path):
    path = write(
        tmp_path,
        rows(
            f"{S0},1,2,0.5,1.5,3,4",
            f"{S0 + 60},1,2,0.5",
            f"{S0 + 120},1,0.9,0.5,1,3,4",
            f"{S0 + 180},1,2,0.5,1.5,-3,4",
            f"{S0 + 240},x,2,1,1,1,1",
            f"{S0 + 300},1,2,1,1,1,inf",
            f"{S0 + 360},1,2,1,1,1,-2",
        ),
    )
    rejects = Rejects("test")
    candles = list(iter_ohlcvt_csv(path, "BTC/USD", "1m", 60, rejects))
    assert [c["window_start_ms"] for c in candles] == [S0 * 1000]
    assert dict(rejects.counts) == {
        "malformed_row": 2,
        "inconsistent_ohlc": 1,
        "non_positive_or_nan": 1,
        "bad_trade_count": 2,
    }


def test_implausible_ohlcvt_times_are_rejected_and_the_rest_is_read(tmp_path):
    path = write(
        tmp_path,
        rows(
            f"{S0},1,2,0.5,1.5,3,4",
            "1e30,1,2,0.5,1.5,3,4",
            "inf,1,2,0.5,1.5,3,4",
            "nan,1,2,0.5,1.5,3,4",
            "60,1,2,0.5,1.5,3,4",
            "99999999999,1,2,0.5,1.5,3,4",
            f"{S0 + 60}.0,1,2,0.5,1.5,3,4",
        ),
    )
    check_ohlcvt_csv(path)
    rejects = Rejects("test")
    candles = list(iter_ohlcvt_csv(path, "BTC/USD", "1m", 60, rejects))
    assert [c["window_start_ms"] for c in candles] == [S0 * 1000, (S0 + 60) * 1000]
    assert dict(rejects.counts) == {"future_timestamp": 2, "bad_timestamp": 2, "timestamp_before_2009": 1}


@pytest.mark.parametrize(
    "data, message",
    [
        (rows("unix,open,high,low,close,volume,trades", f"{S0},1,2,0.5,1.5,3,4"), "row 1: expected OHLCVT rows"),
        (HEADER + rows(f"{T0},x,10,1,buy"), "row 1: expected OHLCVT rows"),
        (b"", "the file is empty"),
        (bytes(range(256)) * 4, "row 1: not UTF-8 text"),
    ],
)
def test_a_file_that_is_no_ohlcvt_export_is_a_clear_error(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(FileFormatError, match=message) as raised:
        check_ohlcvt_csv(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)
