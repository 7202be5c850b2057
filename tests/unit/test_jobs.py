"""The job interface (`coinflow.jobs`): hooks called in order, state per key with writes kept only when process
returns, a raising process counted and dead-lettered (never a crash), recover called for restored state, end markers
passed through, and job files loaded with clear errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from coinflow.jobs import DEAD, NOT_JSON, OUT, PROCESS_ERROR, Job, KeyState, Reject, job_step
from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from feature_pipeline.universe import job as universe_job

SETTINGS = Settings(_env_file=None)


class JsonState:
    """Quix's State interface over a dict, each value through JSON as Quix's store keeps it."""

    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key, default=None):
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key, value) -> None:
        self.values[key] = json.dumps(value)

    def delete(self, key) -> None:
        self.values.pop(key, None)

    def exists(self, key) -> bool:
        return key in self.values


def counter_job(calls: list) -> Job:
    """Counts records per key; raises on a record marked bad; drops a record marked quiet."""

    def setup(settings):
        calls.append(("setup",))
        return {"calls": calls}

    def process(record, state):
        state.config["calls"].append(("process", state.key, record["n"]))
        state.set("count", state.get("count", 0) + 1)
        if record.get("bad"):
            raise ValueError("a bug on this record")
        if record.get("reject"):
            raise Reject("negative")
        if record.get("quiet"):
            return None
        return {"key": state.key, "count": state.get("count")}

    def recover(state):
        state.config["calls"].append(("recover", state.key, state.get("count")))

    return Job("counter", process, setup, recover)


def run(step, records, states):
    return [step(value, key, 0, None, states.setdefault(key, JsonState())) for key, value in records]


def test_setup_once_then_process_per_record_with_state_per_key():
    calls: list = []
    job = counter_job(calls)
    config = job.setup(SETTINGS)
    rejects = Rejects("job_counter")
    out = run(job_step(job, config, rejects), [("a", {"n": 1}), ("b", {"n": 2}), ("a", {"n": 3})], {})
    assert out == [(OUT, {"key": "a", "count": 1}), (OUT, {"key": "b", "count": 1}), (OUT, {"key": "a", "count": 2})]
    assert calls == [("setup",), ("process", "a", 1), ("process", "b", 2), ("process", "a", 3)]
    assert not rejects.counts


def test_a_raising_process_is_dead_lettered_and_counted_and_leaves_the_state_alone():
    calls: list = []
    job = counter_job(calls)
    rejects = Rejects("job_counter")
    states: dict = {}
    records = [("a", {"n": 1}), ("a", {"n": 2, "bad": True}), ("a", {"n": 3, "reject": True}), ("a", b"{not json")]
    records.append(("a", {"n": 4}))
    out = run(job_step(job, job.setup(SETTINGS), rejects), records, states)
    assert [tag for tag, _ in out] == [OUT, DEAD, DEAD, DEAD, OUT]
    assert out[1][1]["stage"] == "job_counter" and out[1][1]["reason"] == PROCESS_ERROR
    assert json.loads(out[1][1]["raw"]) == {"n": 2, "bad": True}
    assert out[2][1]["reason"] == "negative" and out[3][1]["reason"] == NOT_JSON
    assert rejects.counts == {PROCESS_ERROR: 1, "negative": 1, NOT_JSON: 1}
    assert out[4] == (OUT, {"key": "a", "count": 2})  # the rejected records' writes were dropped


def test_recover_is_called_once_per_restored_key_before_its_first_record():
    calls: list = []
    job = counter_job(calls)
    states: dict = {}
    run(job_step(job, job.setup(SETTINGS), Rejects("s")), [("a", {"n": 1}), ("a", {"n": 2})], states)
    assert not [c for c in calls if c[0] == "recover"]  # nothing restored in the first run
    calls.clear()
    restarted = job_step(job, job.setup(SETTINGS), Rejects("s"))  # a new process over the same store
    out = run(restarted, [("a", {"n": 3}), ("b", {"n": 4}), ("a", {"n": 5})], states)
    assert calls == [("setup",), ("recover", "a", 2), ("process", "a", 3), ("process", "b", 4), ("process", "a", 5)]
    assert out[2] == (OUT, {"key": "a", "count": 4})


def test_end_markers_ride_through_and_none_drops_the_record():
    job = counter_job([])
    step = job_step(job, job.setup(SETTINGS), Rejects("s"))
    marker = {"control": CONTROL_END, "pair": "a", "run_id": "r"}
    states: dict = {}
    assert run(step, [("a", marker), ("a", {"n": 1, "quiet": True})], states) == [(OUT, marker), None]
    assert states["a"].get("count") == 1  # a dropped record still keeps its state


def test_key_state_holds_writes_until_commit():
    inner: Any = JsonState()  # Quix's State interface
    inner.set("x", 1)
    state = KeyState(inner, "k", None)
    state.set("y", [1, 2])
    state.delete("x")
    assert state.get("y") == [1, 2] and "x" not in state and inner.get("x") == 1 and inner.get("y") is None
    assert state.commit(marked=False)
    assert inner.get("y") == [1, 2] and not inner.exists("x")
    with pytest.raises(ValueError, match="delete"):
        state.set("z", None)


def test_a_job_file_is_loaded_and_a_bad_one_refused_clearly(tmp_path):
    path = tmp_path / "double.py"
    path.write_text("def process(record, state):\n    return {'x': 2 * record['x']}\n")
    job = Job.load(path)
    assert job.name == "double" and job.recover is None and job.setup(SETTINGS) is None
    assert job_step(job, None, Rejects("s"))({"x": 2}, "k", 0, None, JsonState()) == (OUT, {"x": 4})
    (tmp_path / "none.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match=r"no process\(record, state\)"):
        Job.load(tmp_path / "none.py")
    (tmp_path / "arity.py").write_text(textwrap.dedent("def process(record):\n    return record\n"))
    with pytest.raises(ValueError, match="process must take 2"):
        Job.load(tmp_path / "arity.py")
    with pytest.raises(ValueError, match="No such job file"):
        Job.load(tmp_path / "missing.py")


def test_the_universe_job_is_a_job_file():
    job = Job.load(Path(str(universe_job.__file__)))
    assert job.name == "job" and job.setup(SETTINGS).params["1m"].interval_ms == 60_000


def test_run_job_refuses_a_missing_destination_or_job_file_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from feature_pipeline.__main__ import app

    runner = CliRunner()
    result = runner.invoke(app, ["run-job", str(tmp_path / "x.py"), "--input", "t"])
    assert result.exit_code == 2 and "--output TOPIC, --view VIEW" in result.output
    result = runner.invoke(app, ["run-job", str(tmp_path / "x.py"), "--input", "t", "--output", "o"])
    assert result.exit_code == 2 and "No such job file" in result.output
