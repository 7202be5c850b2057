"""Universe candle files (`read_candle_file`): the real Binance and Kraken files parse fully, stamped at the close;
bad rows are counted and dropped, never fatal; a file that is no candle file is a FileFormatError."""

import gzip
import math
import shutil

import pandas as pd
import pytest

from coinflow.exchange_files import (
    CANDLE_FRAME_COLUMNS,
    FileFormatError,
    candle_file_pair,
    check_candle_file,
    iter_ohlcvt_csv,
    read_candle_file,
    read_candle_folder,
)
from coinflow.quality import Rejects
from tests.support.paths import BINANCE_1M, BINANCE_5M

needs_binance = pytest.mark.skipif(
    not BINANCE_1M.is_dir(), reason="the shared Binance candles are not beside the checkout"
)
T0 = 1_621_092_240_000  # 2021-05-15T15:24:00Z, the first open of the 1-minute Binance files
HEADER = "timestamp_ms,open,high,low,close,volume"


def write_gz(path, *lines: str):
    with gzip.open(path, "wt") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    return path


@needs_binance
def test_a_real_binance_file_parses_fully_stamped_at_the_close():
    rejects = Rejects("test")
    path = BINANCE_1M / "ETHUSDT.csv.gz"
    frame = read_candle_file(path, 60, rejects)
    raw = pd.read_csv(path)
    assert not rejects.counts and len(frame) == len(raw) > 30_000
    assert tuple(frame.columns) == CANDLE_FRAME_COLUMNS
    assert (frame.pair == "ETH/USDT").all()
    assert str(frame.event_timestamp.dtype) == "datetime64[ns, UTC]"
    assert frame.event_timestamp.iloc[0] == pd.Timestamp(T0 + 60_000, unit="ms", tz="UTC")
    expected = pd.to_datetime(raw.timestamp_ms + 60_000, unit="ms", utc=True)
    assert (frame.event_timestamp.to_numpy() == expected.to_numpy()).all()
    assert frame.event_timestamp.is_monotonic_increasing and frame.event_timestamp.is_unique
    for name in ("open", "high", "low", "close", "volume"):
        assert frame[name].dtype == "float64" and (frame[name].to_numpy() == raw[name].to_numpy()).all()


@needs_binance
def test_a_ticker_listed_mid_period_starts_later():
    kite = read_candle_file(BINANCE_5M / "KITEUSDT.csv.gz", 300)
    btc = read_candle_file(BINANCE_5M / "BTCUSDT.csv.gz", 300)
    assert kite.pair.iloc[0] == "KITE/USDT" and btc.pair.iloc[0] == "BTC/USDT"
    assert kite.event_timestamp.iloc[0] > btc.event_timestamp.iloc[0] + pd.Timedelta(days=300)
    assert kite.event_timestamp.iloc[0] == pd.Timestamp(1_762_174_800_000 + 300_000, unit="ms", tz="UTC")


def test_a_kraken_ohlcvt_file_reads_with_its_gaps_through_the_kraken_parser(data_dir, tmp_path):
    path = shutil.copy(data_dir / "kraken" / "ohlcvt_XBTUSD_5m_2023Q1.csv", tmp_path / "XBTUSD_5.csv")
    rejects = Rejects("test")
    frame = read_candle_file(path, 300, rejects)
    candles = list(iter_ohlcvt_csv(path, "BTC/USD", "5m", 300, Rejects("kraken")))
    assert not rejects.counts and len(frame) == len(candles) == 25_901
    assert (frame.pair == "BTC/USD").all()
    ends = pd.to_datetime([c["window_end_ms"] for c in candles], unit="ms", utc=True)
    assert (frame.event_timestamp.to_numpy() == ends.to_numpy()).all()
    assert frame.close.tolist() == [c["close"] for c in candles]
    steps = frame.event_timestamp.diff().dropna()
    assert steps.min() == pd.Timedelta(minutes=5) and steps.max() > pd.Timedelta(minutes=5)  # minutes without trades


def test_bad_rows_are_counted_and_dropped(tmp_path):
    t = T0
    path = write_gz(
        tmp_path / "ETHUSDT.csv.gz",
        HEADER,
        f"{t},10,11,9,10.5,1",
        f"{t + 60_000},0,11,9,10.5,1",  # zero price
        f"{t + 60_000},10,11,-9,10.5,1",  # negative price
        f"{t + 60_000},nan,11,9,10.5,1",
        f"{t + 60_000},10,inf,9,10.5,1",
        f"{t + 60_000},10,9,11,10.5,1",  # high below low
        f"{t + 60_000},10,11,9,10.5,-1",  # negative volume
        f"{t + 60_000},10,11,9,10.5",  # a field short
        "x,10,11,9,10.5,1",
        f"{t},10,11,9,10.5,1",  # the same time again
        f"{t + 120_000},10,11,9,10.25,2",
        f"{t + 60_000},10,11,9,10.5,1",  # before the last one taken
        f"{t + 180_000},10,10,10,10,0",  # a constant candle without volume is a candle
    )
    rejects = Rejects("test")
    frame = read_candle_file(path, 60, rejects)
    assert frame.close.tolist() == [10.5, 10.25, 10.0]
    assert frame.event_timestamp.tolist() == [pd.Timestamp(t + k * 60_000, unit="ms", tz="UTC") for k in (1, 3, 4)]
    assert rejects.counts == {
        "non_positive_or_nan": 5,
        "inconsistent_ohlc": 1,
        "malformed_row": 1,
        "bad_timestamp": 1,
        "duplicate_time": 1,
        "timestamp_backwards": 1,
    }


def test_bad_kraken_rows_are_counted_alike(tmp_path):
    s = T0 // 1000
    path = tmp_path / "XBTUSD_1.csv"
    path.write_text(f"{s},10,11,9,10.5,1,3\n{s + 60},10,11,0,10.5,1,3\n{s},10,11,9,10.5,1,3\n{s + 60},10,11,9,11,1,3\n")
    rejects = Rejects("test")
    frame = read_candle_file(path, 60)  # rejects are optional
    assert frame.close.tolist() == [10.5, 11.0]
    frame = read_candle_file(path, 60, rejects)
    assert rejects.counts == {"non_positive_or_nan": 1, "duplicate_time": 1}


def test_a_cut_gzip_keeps_the_rows_before_the_cut(tmp_path):
    whole = write_gz(tmp_path / "whole.gz", HEADER, *(f"{T0 + i * 60_000},10,11,9,10.5,1" for i in range(5000)))
    cut = tmp_path / "SOLUSDT.csv.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    rejects = Rejects("test")
    frame = read_candle_file(cut, 60, rejects)
    assert 0 < len(frame) < 5000 and rejects.counts["unreadable_file"] == 1


def test_an_empty_binance_file_is_an_empty_frame_of_the_contract(tmp_path):
    frame = read_candle_file(write_gz(tmp_path / "ADAUSDT.csv.gz", HEADER), 60)
    assert frame.empty and tuple(frame.columns) == CANDLE_FRAME_COLUMNS
    assert str(frame.event_timestamp.dtype) == "datetime64[ns, UTC]" and frame.close.dtype == "float64"


@pytest.mark.parametrize(
    ("name", "pair"),
    [
        ("ETHUSDT.csv.gz", "ETH/USDT"),
        ("USD1USDT.csv.gz", "USD1/USDT"),
        ("XBTUSD_1.csv", "BTC/USD"),
        ("ohlcvt_XBTUSDC_1m_2023Q1.csv", "BTC/USDC"),
        ("XDGUSD_5.csv", "DOGE/USD"),
        ("ETHXBT_1.csv", "ETH/BTC"),
        ("ETH-USDT.csv", "ETH/USDT"),
    ],
)
def test_the_pair_comes_from_the_file_name(tmp_path, name, pair):
    assert candle_file_pair(tmp_path / name) == pair


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("candles.csv", f"{HEADER}\n", "no pair in the file name"),
        ("ETHUSDT.csv", "", "the file is empty"),
        ("ETHUSDT.csv", "time,price\n1,2\n", "missing timestamp_ms"),
        ("ETHUSDT.csv", "1621092240,10,11\n", "missing timestamp_ms"),
        ("ETHUSDT.csv.gz", "not gzip at all", "cannot be read"),
    ],
)
def test_a_file_that_is_no_candle_file_is_a_clear_error(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_text(data)
    with pytest.raises(FileFormatError, match=message):
        check_candle_file(path)
    with pytest.raises(FileFormatError, match=message):
        read_candle_file(path, 60)


@needs_binance
def test_a_folder_reads_pair_by_pair(tmp_path):
    for base in ("BTT", "ETH", "XRP"):
        raw = pd.read_csv(BINANCE_1M / f"{base}USDT.csv.gz", nrows=100)
        raw.to_csv(tmp_path / f"{base}USDT.csv.gz", index=False)
    (tmp_path / "notes.txt").write_text("not a candle file")
    frame = read_candle_folder(tmp_path, 60)
    assert frame.pair.unique().tolist() == ["BTT/USDT", "ETH/USDT", "XRP/USDT"]
    assert len(frame) == 300 and not math.isnan(frame.close.sum())
