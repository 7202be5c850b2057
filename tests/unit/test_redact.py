"""Credentials are masked in URLs and messages; request guards parse strict JSON, bound echoes, compare keys."""

from __future__ import annotations

import io
import json
import logging

import pytest
from starlette.datastructures import Headers

from coinflow.redact import RedactingFormatter, redact
from inference_pipeline.guards import echo, key_matches, parse_json, presented_key, validation_errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:PASSWORD@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("http://user:pw@host:5000", "http://user:***@host:5000"),
        ("rediss://default:p%40ss@cache.example.com:6380/2", "rediss://default:***@cache.example.com:6380/2"),
        ("online store redis://:p@ss@h:1/0 does not answer", "online store redis://:***@h:1/0 does not answer"),
        ("http://ghp_TOKEN@github.com/x", "http://***@github.com/x"),
        ("http://host/api?x=1&token=abc&password=def", "http://host/api?x=1&token=***&password=***"),
        ("127.0.0.1:6379,db=0,password=hunter2,ssl=true", "127.0.0.1:6379,db=0,password=***,ssl=true"),
        (
            "API request to http://bob:S3CRET@127.0.0.1:5000/api/2.0/mlflow/runs failed",
            "API request to http://bob:***@127.0.0.1:5000/api/2.0/mlflow/runs failed",
        ),
    ],
)
def test_credentials_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:5000",
        "redis://127.0.0.1:6379/0",
        "kafka-1:9092,kafka-2:9092",
        "mail bob@example.com",
        "max_token_count=5",
    ],
)
def test_text_without_credentials_is_unchanged(text):
    assert redact(text) == text


def test_the_log_formatter_masks_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    logger = logging.getLogger("test_redact")
    logger.addHandler(handler)
    try:
        logger.warning("connecting to %s", "redis://:SECRET1@h:6379")
        try:
            raise ConnectionError("API request to http://u:SECRET2@h:5000/api failed")
        except ConnectionError:
            logger.exception("registry down")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "SECRET" not in out and "redis://:***@h:6379" in out and "http://u:***@h:5000/api" in out


@pytest.mark.parametrize(
    "body",
    [
        b'{"horizon": NaN}',
        b"[Infinity]",
        b'{"a": -Infinity}',
        b"[1e400]",
        b"[-1e999]",
        b"\xff{}",
        b'{"a": 1',
        b"[" * 100_000,
        b"[" + b"9" * 5000 + b"]",
    ],
)
def test_bodies_that_are_not_standard_json_are_refused(body):
    with pytest.raises((ValueError, RecursionError)):
        parse_json(body)


def test_standard_json_is_parsed():
    assert parse_json('{"pair": "BTC/USDC", "horizon": 1, "x": [1.5, -2e10, true, null, "é"]}'.encode()) == {
        "pair": "BTC/USDC",
        "horizon": 1,
        "x": [1.5, -2e10, True, None, "é"],
    }


def test_echoes_of_invalid_input_are_bounded_and_json_safe():
    assert echo({"pair": "BTC/USDC"}) == {"pair": "BTC/USDC"}
    long = echo("A" * 10_000)
    assert long.startswith("A" * 200) and long.endswith("(10000 characters)") and len(long) < 250
    assert echo(float("nan")) == "nan" and echo(b"\x00" * 5) == repr(b"\x00" * 5)
    errors = validation_errors(
        [
            {
                "type": "x",
                "loc": ("body", 0),
                "msg": "m",
                "input": [float("inf")] * 1000,
                "ctx": {"error": ValueError("bad"), "limit": 3},
            }
        ]
    )
    assert len(json.dumps(errors, allow_nan=False)) < 400
    assert errors[0]["ctx"] == {"error": "bad", "limit": 3} and errors[0]["loc"] == ["body", 0]


def test_the_api_key_is_read_from_either_header_and_compared_exactly():
    assert presented_key(Headers({"x-api-key": "k1"})) == "k1"
    assert presented_key(Headers({"authorization": "Bearer k2"})) == "k2"
    assert presented_key(Headers({"authorization": "Basic k3"})) is None
    assert presented_key(Headers({"authorization": "Bearer "})) is None
    assert presented_key(Headers({})) is None
    assert key_matches("secret", "secret")
    assert not key_matches("secreT", "secret") and not key_matches("secret-", "secret") and not key_matches(None, "s")
