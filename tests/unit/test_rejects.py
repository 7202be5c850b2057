"""Rejects counted in another process reach the parent: its Rejects, REJECTED_TOTAL and logging (no services)."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import REGISTRY

from coinflow.quality import Rejects
from coinflow.services import SPAWN_CHILD_FLAG, is_orphaned_spawn_child
from feature_pipeline.sources.process import SourceLink, SourceRelay

STAGE = "unit_relay_stage"


def _rejected_total(stage: str, reason: str) -> float:
    return REGISTRY.get_sample_value("coinflow_rejected_total", {"stage": stage, "reason": reason}) or 0.0


def test_add_counts_without_logging_or_forwarding(caplog):
    forwarded: list[dict] = []
    rejects = Rejects("unit_add_stage", forward=forwarded.append)
    before = _rejected_total("unit_add_stage", "bad_side")
    rejects.add({"bad_side": 3})
    assert rejects.counts == {"bad_side": 3}
    assert _rejected_total("unit_add_stage", "bad_side") - before == 3
    assert forwarded == [] and caplog.records == []
    assert rejects.summary() == "unit_add_stage: rejected 3 (bad_side=3)"


def _child(link: SourceLink) -> None:
    """A stand-in for a source's process: what it rejects and logs, after entering its link."""
    link.enter()
    quiet = Rejects("unit_quiet_stage")
    rejects = Rejects(STAGE)
    rejects.reject("bad_side", "1,2,3,4,hold")
    rejects.reject("bad_side", "1,2,3,4,x")
    rejects.reject("non_positive_or_nan", "1,2,-1,4,buy")
    logging.getLogger("feature_pipeline.sources.unit").info("child stats: %d frames", 7)
    logging.getLogger("feature_pipeline.sources.unit").debug("below the parent's level")
    assert quiet.counts == {}


def test_a_child_process_rejects_and_logs_reach_the_parent(caplog):
    caplog.set_level(logging.INFO)
    before = _rejected_total(STAGE, "bad_side")
    with SourceRelay() as relay:
        source = SimpleNamespace(link=None)  # what attach fills in on a source
        relay.attach(source)
        child = multiprocessing.get_context("spawn").Process(target=_child, args=(source.link,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
    stages = {r.stage: r for r in relay.rejects}
    assert list(stages) == ["unit_quiet_stage", STAGE]
    assert stages[STAGE].counts == {"bad_side": 2, "non_positive_or_nan": 1}
    assert stages["unit_quiet_stage"].summary() == "unit_quiet_stage: nothing rejected"
    assert _rejected_total(STAGE, "bad_side") - before == 2
    relayed = [r for r in caplog.records if r.name == "feature_pipeline.sources.unit"]
    assert [(r.levelno, r.getMessage()) for r in relayed] == [(logging.INFO, "child stats: 7 frames")]
    assert relayed[0].process == child.pid
    # The first reject of each reason is logged in the child with a sample, and arrives here too.
    samples = [r.getMessage() for r in caplog.records if r.name == "coinflow.quality" and r.process == child.pid]
    assert len(samples) == 2 and "1,2,3,4,hold" in samples[0]


BIN = Path("/venv/bin")
SPAWNED = [str(BIN / "python"), "-c", "from multiprocessing.spawn import spawn_main; spawn_main()", SPAWN_CHILD_FLAG]
PYTHON = "/usr/lib/python3.11"


def test_orphaned_spawn_child_is_one_whose_parent_no_longer_runs_its_python():
    assert not is_orphaned_spawn_child(SPAWNED, PYTHON, 4242, PYTHON, BIN)  # its pipeline is alive
    assert is_orphaned_spawn_child(SPAWNED, PYTHON, 1, None, BIN)  # reparented to init
    assert is_orphaned_spawn_child(SPAWNED, PYTHON, 77, "/usr/bin/tini", BIN)  # to a subreaper
    assert is_orphaned_spawn_child(SPAWNED, PYTHON, 4242, None, BIN)  # the parent is gone
    assert not is_orphaned_spawn_child(SPAWNED, PYTHON, 1, None, Path("/other/venv/bin"))  # another environment's
    assert not is_orphaned_spawn_child([str(BIN / "python"), "-m", "feature_pipeline", "live"], PYTHON, 1, None, BIN)
