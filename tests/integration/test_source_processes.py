"""Source processes: they die with a killed pipeline, `status` lists any left behind, their rejects and logs reach it.

Quix runs every source in a spawned process of its own; these tests use the real one (the `live` command
against the local Kraken v2 server, a trades file through the real pipeline and broker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from prometheus_client import REGISTRY

from coinflow.exchange_files import read_trades_csv
from coinflow.quality import Rejects
from coinflow.services import SPAWN_CHILD_FLAG
from feature_pipeline.sources.kraken_replay_server import KrakenReplayServer
from tests.support.feature_runs import PAIR, env_for, read_topic, replay
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

TRADES = Path("kraken") / "btcusd_trades_2019-07-01T00.csv"


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _spawn_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if child.cmdline()[-1:] == [SPAWN_CHILD_FLAG]:
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_a_killed_live_pipeline_leaves_no_source_process(settings, data_dir, tmp_path):
    real = read_trades_csv(data_dir / TRADES, PAIR, Rejects("test"))
    start_ms = int(time.time() * 1000)
    trades = [{**t, "timestamp_ms": start_ms + (t["timestamp_ms"] - real[0]["timestamp_ms"]) // 20} for t in real]
    server = KrakenReplayServer(trades, speed=1.0)  # about three minutes of trades: still streaming when killed
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    env = env_for(settings) | {
        "COINFLOW_KRAKEN_WS_URL": url,
        "COINFLOW_METRICS_PORT": "0",
        "COINFLOW_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "live.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feature_pipeline", "live", "--pairs", PAIR],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for(lambda: server.published(PAIR) > 0 and _spawn_children(proc.pid), 90, "the source to stream")
        # The source's INFO lines are printed by the parent's logging (before, the source process dropped them).
        wait_for(
            lambda: "INFO feature_pipeline.sources.ws_client: Connected to" in log.read_text(),
            30,
            "the source's log line in the parent's output",
        )
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: all(_gone(child) for child in children), 30, "the source process to die with its parent")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in the group, the orphan of a failed test included
        proc.wait()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


PLANT_ORPHAN = """
import multiprocessing, os, signal, time
child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(300,))
child.start()
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_status_lists_a_source_process_left_behind(tmp_path):
    pid_file = tmp_path / "orphan.pid"
    with open(pid_file, "w") as out:  # not a pipe: the orphan keeps its stdout open
        planter = subprocess.run([sys.executable, "-c", PLANT_ORPHAN], stdout=out, timeout=60, check=False)
    orphan = psutil.Process(int(pid_file.read_text()))
    try:
        assert planter.returncode == -signal.SIGKILL
        env = {k: v for k, v in os.environ.items() if not k.startswith("COINFLOW_")} | {
            "COINFLOW_RUN_DIR": str(tmp_path / "run")
        }
        status = subprocess.run(
            [sys.executable, "-m", "coinflow", "status"],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        listed = [line for line in lines if line.strip().startswith(f"pid {orphan.pid}: ")]
        assert len(listed) == 1 and listed[0].endswith(SPAWN_CHILD_FLAG)
        header = next(i for i, line in enumerate(lines) if line.startswith("orphans: "))
        assert "source process(es) whose pipeline is gone" in lines[header] and lines.index(listed[0]) > header
    finally:
        orphan.kill()


def _rejected_total(stage: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "coinflow_rejected"
        for sample in metric.samples
        if sample.name == "coinflow_rejected_total" and sample.labels["stage"] == stage
    )


def test_a_file_sources_rejects_and_logs_reach_the_run(settings, data_dir, tmp_path, caplog):
    lines = (data_dir / TRADES).read_text().splitlines()
    bad = [
        "1561939260000,2019-07-01T00:01:00Z,-5,0.1,buy",
        "1561939260000,2019-07-01T00:01:00Z,10500,0,sell",
        "1561939260000,2019-07-01T00:01:00Z,nan,0.1,buy",
        "1561939260000,2019-07-01T00:01:00Z,10500,0.1,hold",
    ]
    path = tmp_path / "trades_with_bad_rows.csv"
    path.write_text("\n".join([lines[0], *lines[1:150], *bad, *lines[150:301]]) + "\n")
    caplog.set_level(logging.INFO)
    before = _rejected_total("trades_file")

    summary = replay(settings, path)

    stages = {rejects.stage: rejects for rejects in summary.stages}
    assert list(stages) == ["trades_file", "dataflow", "feast_sink"]
    assert sum(stages["trades_file"].counts.values()) == 4, stages["trades_file"].summary()
    assert _rejected_total("trades_file") - before == 4  # this process's /metrics
    dead = [json.loads(m.value()) for m in read_topic(settings, settings.topics.dead_letters)]
    assert [d["stage"] for d in dead] == ["trades_file"] * 4  # the same stage for every run, not one per run id
    produced = [r for r in caplog.records if r.name == "feature_pipeline.sources.file_sources"]
    assert len(produced) == 1 and "produced 300 records" in produced[0].getMessage()
    assert produced[0].process != os.getpid()
