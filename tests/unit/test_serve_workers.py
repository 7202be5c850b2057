"""The workers of one prediction API: their reports, what the whole service answers from them, gunicorn's options."""

from __future__ import annotations

import os
import subprocess
import sys

from coinflow.settings import Settings
from inference_pipeline.workers import (
    ModelReport,
    QuietWorker,
    ServeDirs,
    WorkerBoard,
    WorkerReport,
    gunicorn_options,
    service_model,
    service_problems,
)

KEY = "BTC/USDC|1"


def _report(pid: int, ready: bool = True, version: str | None = "3") -> WorkerReport:
    return WorkerReport(pid, ready, {KEY: ModelReport(version is not None, version, None if version else "no model")})


def test_the_service_is_ready_only_when_every_expected_worker_is():
    assert service_problems([_report(1), _report(2)], expected=2) == []
    assert service_problems([_report(1)], expected=2) == ["1 of 2 workers have reported (the others are starting)"]
    assert service_problems([_report(1), _report(2, ready=False)], expected=2) == [
        "workers 2 have not loaded every model yet"
    ]


def test_a_model_is_loaded_for_the_service_when_every_worker_has_it_and_a_swap_is_named():
    assert service_model(KEY, [_report(1), _report(2)], expected=2) == (True, None)
    assert service_model(KEY, [_report(1), _report(2, version="4")], expected=2) == (
        True,
        "workers serve versions 3, 4: a swap is under way",
    )
    assert service_model(KEY, [_report(1), _report(2, version=None)], expected=2) == (
        False,
        "workers 2 have no model loaded",
    )
    assert service_model(KEY, [_report(1)], expected=2) == (False, "1 of 2 workers have reported")


def test_reports_round_trip_and_those_of_dead_processes_are_ignored(tmp_path):
    board = WorkerBoard(tmp_path, expected=2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine, gone = _report(os.getpid()), _report(int(dead.stdout))
    board.publish(mine)
    board.publish(gone)
    (tmp_path / "worker-123.json").write_text("{half a rep")  # a file being written is skipped, not fatal
    assert board.reports() == [mine]
    board.withdraw(os.getpid())
    assert board.reports() == []


def test_the_shared_folders_are_per_port_and_wiped_at_start(tmp_path):
    settings = Settings(_env_file=None, run_dir=tmp_path, serve_port=8123)
    dirs = ServeDirs.of(settings)
    assert dirs.root == tmp_path / "serve" / "port-8123"
    dirs.reset()
    (dirs.metrics / "counter_1.db").write_bytes(b"old")
    dirs.reset()
    assert list(dirs.metrics.iterdir()) == [] and dirs.workers.is_dir()


def test_gunicorn_runs_quiet_uvicorn_workers_on_the_configured_address():
    settings = Settings(_env_file=None, serve_host="127.0.0.1", serve_port=8123)
    options = gunicorn_options(settings, workers=2, access_log=False)
    assert options["bind"] == "127.0.0.1:8123" and options["workers"] == 2
    assert options["worker_class"] == "inference_pipeline.workers.QuietWorker" and options["accesslog"] is None
    assert QuietWorker.CONFIG_KWARGS["access_log"] is False
    assert gunicorn_options(settings, 2, access_log=True)["worker_class"].endswith("LoggingWorker")
