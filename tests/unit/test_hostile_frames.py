"""Hostile frames from an exchange: each kind ends as a counted reject with a dead letter that fits a broker message.

Every kind (nesting past the parser's recursion limit, a 400-digit number, an id past 2**64, a 10 MB malformed
frame, a binary frame that is not UTF-8, a symbol never subscribed) goes through the protocol functions and the
stream client of each source: Kraken v2 trades and book, Coinbase level2 and market_trades. The frame builders
(tests/support/hostile_frames.py) are shared with the integration test, which sends the same frames over a real
connection.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from coinflow.coinbase_auth import cdp_jwt, cdp_signing_key
from coinflow.quality import DEAD_LETTER_MAX_BYTES, Rejects, configure_dead_letters, dead_letter
from feature_pipeline.__main__ import app
from feature_pipeline.sources import coinbase_protocol, kraken_protocol
from feature_pipeline.sources.coinbase_ws import CoinbaseSource, CoinbaseStream
from feature_pipeline.sources.kraken_ws import KrakenBookStream, KrakenTradeStream
from tests.support.hostile_frames import (
    COINBASE_PRODUCT,
    KINDS,
    KRAKEN_PAIR,
    NOT_UTF8,
    TEN_MB,
    coinbase_frame,
    coinbase_l2_hostile,
    coinbase_trade,
    coinbase_trades_hostile,
    kraken_book_frame,
    kraken_book_hostile,
    kraken_trade,
    kraken_trade_hostile,
    kraken_trades_frame,
)


def assert_dead_letters_fit(records: list[dict], frame: str | bytes, limit: int = DEAD_LETTER_MAX_BYTES) -> None:
    """Every dead letter fits ``limit`` as JSON; one of a whole frame keeps its original length (and its bytes)."""
    assert records
    size = len(frame.encode() if isinstance(frame, str) else frame)
    for record in records:
        assert len(json.dumps(record).encode()) <= limit
        assert record["truncated"] == (record["raw_bytes"] > len(record["raw"]))
    whole = [r for r in records if r["raw_bytes"] == size]
    if size > limit or isinstance(frame, bytes):
        assert whole, "the frame's dead letter does not carry its original length"
    for record in whole:
        if record["encoding"] == "base64":
            assert frame.startswith(base64.b64decode(record["raw"]))  # type: ignore[arg-type]
        else:
            assert (frame if isinstance(frame, str) else frame.decode()).startswith(record["raw"])


# --- the protocol functions ---------------------------------------------------------------------------


def _kraken_reasons(message: kraken_protocol.Message) -> list[str]:
    if isinstance(message, kraken_protocol.Rejected):
        return [message.reason]
    assert isinstance(message, kraken_protocol.TradeBatch | kraken_protocol.BookBatch)
    books = message.books if isinstance(message, kraken_protocol.BookBatch) else []
    assert not getattr(message, "trades", [])
    return [reason for reason, _ in message.rejects] + [b.reject for b in books if b.reject]


def _coinbase_reasons(message: coinbase_protocol.Message) -> list[str]:
    if isinstance(message, coinbase_protocol.Rejected):
        return [message.reason]
    assert isinstance(message, coinbase_protocol.Frame) and not message.trades
    assert all(book.reject for book in message.books)
    return [reason for reason, _ in message.rejects]


@pytest.mark.parametrize("kind", KINDS)
def test_kraken_trade_frames(kind: str) -> None:
    frame, reason = kraken_trade_hostile(kind)
    assert _kraken_reasons(kraken_protocol.parse_message(frame, frozenset({KRAKEN_PAIR}))) == [reason]


@pytest.mark.parametrize("kind", KINDS)
def test_kraken_book_frames(kind: str) -> None:
    frame, reason = kraken_book_hostile(kind)
    assert _kraken_reasons(kraken_protocol.parse_message(frame, frozenset({KRAKEN_PAIR}))) == [reason]


@pytest.mark.parametrize("kind", KINDS)
def test_coinbase_level2_frames(kind: str) -> None:
    frame, reason = coinbase_l2_hostile(kind)
    assert _coinbase_reasons(coinbase_protocol.parse_message(frame, frozenset({COINBASE_PRODUCT}))) == [reason]


@pytest.mark.parametrize("kind", KINDS)
def test_coinbase_market_trades_frames(kind: str) -> None:
    frame, reason = coinbase_trades_hostile(kind)
    assert _coinbase_reasons(coinbase_protocol.parse_message(frame, frozenset({COINBASE_PRODUCT}))) == [reason]


def test_good_frames_still_parse_and_numbers_at_the_edges_are_kept() -> None:
    batch = kraken_protocol.parse_message(kraken_trades_frame(kraken_trade(2**63 - 1)), frozenset({KRAKEN_PAIR}))
    assert [t["trade_id"] for t in batch.trades] == [2**63 - 1]  # type: ignore[union-attr]
    book = kraken_protocol.parse_message(kraken_book_frame(price="0.00000001"), frozenset({KRAKEN_PAIR}))
    assert book.books[0].reject is None and str(book.books[0].bids[0][0]) == "1E-8"  # type: ignore[union-attr]
    trades = coinbase_protocol.parse_message(
        coinbase_frame("market_trades", [{"type": "update", "trades": [coinbase_trade(str(2**63 - 1))]}])
    )
    assert [t["trade_id"] for t in trades.trades] == [2**63 - 1]  # type: ignore[union-attr]
    for bad_id in ("-1", "1_000", " 5", "0x10"):
        assert coinbase_protocol.parse_trade(coinbase_trade(bad_id)) == "bad_trade_id"
    assert kraken_protocol.checked_level("1e-400", "1") == "out_of_range"  # a price a float would make 0
    assert kraken_protocol.checked_level("1", "1" + "0" * 45) == "out_of_range"


# --- the stream clients: a counted reject each, dead letters within the limit, the stream goes on ------


def _kraken_trade_stream(rejects: Rejects, out: list) -> tuple[KrakenTradeStream, str]:
    return KrakenTradeStream("ws://unused", [KRAKEN_PAIR], out.extend, rejects), kraken_trades_frame(kraken_trade(9))


def _kraken_book_stream(rejects: Rejects, out: list) -> tuple[KrakenBookStream, str]:
    stream = KrakenBookStream("ws://unused", [KRAKEN_PAIR], 10, lambda key, record: out.append(record), rejects)
    return stream, json.dumps({"channel": "heartbeat"})


def _coinbase_stream(rejects: Rejects, out: list) -> tuple[CoinbaseStream, str]:
    stream = CoinbaseStream("ws://unused", [COINBASE_PRODUCT], lambda key, record: None, out.extend, rejects)
    return stream, coinbase_frame("market_trades", [{"type": "update", "trades": [coinbase_trade("9")]}], 0)


STREAMS: dict[str, tuple[Callable, Callable]] = {
    "kraken_trade": (_kraken_trade_stream, kraken_trade_hostile),
    "kraken_book": (_kraken_book_stream, kraken_book_hostile),
    "coinbase_level2": (_coinbase_stream, coinbase_l2_hostile),
    "coinbase_market_trades": (_coinbase_stream, coinbase_trades_hostile),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", sorted(STREAMS))
def test_each_hostile_frame_is_one_counted_reject_and_the_stream_goes_on(source: str, kind: str) -> None:
    records: list[dict] = []
    rejects = Rejects("test", forward=records.append)
    make_stream, hostile = STREAMS[source]
    out: list = []
    stream, good = make_stream(rejects, out)
    frame, reason = hostile(kind)
    stream._handle(frame)
    assert dict(rejects.counts) == {reason: 1}
    assert_dead_letters_fit(records, frame)
    stream._handle(good)
    assert dict(rejects.counts) == {reason: 1} and stream.stats.failed_frames == 0
    if source in ("kraken_trade", "coinbase_market_trades"):
        assert [t["trade_id"] for t in out] == [9]


def test_a_frame_that_fails_after_parsing_is_rejected_not_fatal() -> None:
    """The last line: whatever a frame's handling raises (here: the producer refusing a record) costs that frame."""
    records: list[dict] = []
    produced: list = []

    def produce(trades: list) -> None:
        if trades[0]["trade_id"] == 1:
            raise RuntimeError("the broker refused the record")
        produced.extend(trades)

    stream = KrakenTradeStream("ws://unused", [KRAKEN_PAIR], produce, Rejects("test", forward=records.append))
    stream._handle(kraken_trades_frame(kraken_trade(1)))
    stream._handle(kraken_trades_frame(kraken_trade(2)))
    assert [r["reason"] for r in records] == ["unhandled_frame"] and stream.stats.failed_frames == 1
    assert [t["trade_id"] for t in produced] == [2]


# --- dead letters -------------------------------------------------------------------------------------


def test_a_dead_letter_keeps_small_inputs_whole() -> None:
    record = dead_letter("stage", "reason", '{"a": 1}')
    assert record["raw"] == '{"a": 1}' and record["raw_bytes"] == 8 and record["truncated"] is False
    assert record["encoding"] == "utf-8" and {"stage", "reason", "rejected_at_ms"} <= set(record)
    assert dead_letter("s", "r", {"price": 1})["raw"] == '{"price": 1}'  # objects as their JSON, as before
    assert dead_letter("s", "r", "é".encode())["raw"] == "é"  # UTF-8 bytes stay readable


def test_a_large_input_is_cut_to_the_limit_and_keeps_its_length() -> None:
    for raw in ("x" * TEN_MB, "\x00" * 200_000, "\u20ac" * 100_000):  # escapes make JSON up to 6x the text
        record = dead_letter("stage", "reason", raw, max_bytes=10_000)
        assert len(json.dumps(record).encode()) <= 10_000 and record["truncated"] is True
        assert raw.startswith(record["raw"]) and len(json.dumps(record).encode()) > 9_000
        assert record["raw_bytes"] == len(raw.encode())


def test_binary_input_keeps_its_bytes_in_base64() -> None:
    record = dead_letter("stage", "reason", NOT_UTF8)
    assert record["encoding"] == "base64" and base64.b64decode(record["raw"]) == NOT_UTF8
    big = NOT_UTF8 * 10_000
    cut = dead_letter("stage", "reason", big, max_bytes=4096)
    assert len(json.dumps(cut)) <= 4096 and cut["truncated"] is True and cut["raw_bytes"] == len(big)
    assert big.startswith(base64.b64decode(cut["raw"]))


def test_an_object_without_json_gets_a_bounded_repr() -> None:
    deep: list = []
    for _ in range(50_000):
        deep = [deep]
    cyclic: list = []
    cyclic.append(cyclic)
    for raw in (deep, cyclic):
        record = dead_letter("stage", "reason", raw)
        assert record["encoding"] == "repr" and record["raw"].startswith("[[")
        assert len(json.dumps(record)) <= DEAD_LETTER_MAX_BYTES


def test_the_process_limit_is_configurable() -> None:
    try:
        configure_dead_letters(2048)
        assert len(json.dumps(dead_letter("s", "r", "y" * 10_000))) <= 2048
        with pytest.raises(ValueError, match="no room"):
            configure_dead_letters(100)
    finally:
        configure_dead_letters(DEAD_LETTER_MAX_BYTES)
    assert len(dead_letter("s", "r", "y" * 10_000)["raw"]) == 10_000


# --- an invalid Coinbase key: one clear error at start-up ----------------------------------------------


def _pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def test_a_cdp_key_must_be_a_p256_ec_private_key() -> None:
    good = ec.generate_private_key(ec.SECP256R1())
    token = cdp_jwt("organizations/x/apiKeys/y", _pem(good), 1_700_000_000)
    import jwt

    claims = jwt.decode(
        token, good.public_key(), algorithms=["ES256"], options={"verify_exp": False, "verify_nbf": False}
    )
    assert claims["sub"] == "organizations/x/apiKeys/y"
    secret = "-----BEGIN EC PRIVATE KEY-----\nSECRETSTUFF\n-----END EC PRIVATE KEY-----\n"
    for bad, message in (
        (secret, "not a PEM private key"),
        ("hunter2", "not a PEM private key"),
        (_pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
        (_pem(rsa.generate_private_key(65537, 2048)), "not an EC private key"),
    ):
        with pytest.raises(ValueError, match=message) as raised:
            cdp_signing_key(bad)
        assert "SECRETSTUFF" not in str(raised.value) and "hunter2" not in str(raised.value)
    with pytest.raises(ValueError, match="not a PEM"):
        CoinbaseSource("ws://unused", [COINBASE_PRODUCT], "dead-letters", None, api_key="k", api_secret="hunter2")


def test_live_books_with_an_invalid_key_says_so_in_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("COINFLOW_COINBASE_API_KEY", "organizations/x/apiKeys/y")
    monkeypatch.setenv("COINFLOW_COINBASE_API_SECRET", "hunter2")
    monkeypatch.setenv("COINFLOW_METRICS_PORT", "0")
    monkeypatch.setenv("COINFLOW_KAFKA_BROKER_ADDRESS", "127.0.0.1:1")  # nothing may be started or reached
    result = CliRunner().invoke(app, ["live-books", "--exchange", "coinbase"])
    assert result.exit_code == 2, result.output
    assert "COINFLOW_COINBASE_API_SECRET: not a PEM private key" in result.output
    assert "Traceback" not in result.output and "hunter2" not in result.output
