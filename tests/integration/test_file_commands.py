"""The file commands on files that are not what they should be: one line naming the file and row, exit code 2.

They run the real CLI in a subprocess (the file sources read in a subprocess of their own, so the commands
must find these problems before the pipeline starts); nothing is started for them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

HEADER = b"time_ms,timestamp,price,qty,side\n"
ROW = b"1561939203172,2019-07-01T00:00:03.172Z,10749.4,0.004,sell\n"


def run_command(tmp_path, redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINFLOW_") and k not in ("REDIS_URL",)}
    # Where anything would go if the command wrongly went on: this test's own directory and broker port, the tests' Redis.
    env.update(
        COINFLOW_RUN_DIR=str(tmp_path / "run"),
        COINFLOW_EMBEDDED_BROKER_PORT="19452",
        REDIS_URL=redis_url,
        COLUMNS="80",
    )
    return subprocess.run(
        [sys.executable, "-m", "feature_pipeline", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "command, data, problem",
    [
        ("replay-trades", b"time_ms,price,qty\n1561939203172,10749.4,0.004\n", "missing timestamp,side"),
        ("replay-trades", ROW * 3, "row 1: expected a header time_ms,timestamp,price,qty,side"),  # no header
        ("replay-trades", bytes(range(256)) * 64, "row 1: not UTF-8 text"),
        ("replay-trades", b"", "the file is empty"),
        ("backfill-ohlcv", HEADER + ROW, "row 1: expected OHLCVT rows"),
        ("backfill-ohlcv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 32, "row 1: not UTF-8 text"),
    ],
    ids=[
        "trades-missing-columns",
        "trades-no-header",
        "trades-binary",
        "trades-empty",
        "ohlcvt-trades-file",
        "ohlcvt-binary",
    ],
)
def test_a_file_that_is_not_its_format_is_one_line_and_exit_code_2(tmp_path, redis_url, command, data, problem):
    path = tmp_path / "a-file-with-a-rather-long-name-so-that-the-message-is-wider-than-a-terminal.csv"
    path.write_bytes(data)
    result = run_command(tmp_path, redis_url, command, str(path), "--pair", "BTC/USD")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and problem in lines[0], result.stdout
    assert not (tmp_path / "run").exists()  # nothing was started
