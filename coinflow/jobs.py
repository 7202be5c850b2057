"""The job interface: a feature or model job is one Python file of hooks; Quix Streams does everything else.

A job file defines

- ``setup(settings) -> config`` (optional): called once at start with the settings tree; what it returns (params,
  a model, counters, caches) is handed to the other hooks as ``state.config``;
- ``process(record, state) -> record | None`` (required): one input record (a dict) in, one output record (a
  dict) or None out. ``state`` is the record's key's state (`KeyState`: ``get``/``set``/``delete`` of JSON
  values, ``key``, ``config``), kept by Quix in its state store and checkpointed with the consumer's offsets;
  writes are kept only when ``process`` returns. Raise `Reject` ("reason") for a bad input: it is counted and
  dead-lettered under that reason; any other exception is counted as ``process_error`` and dead-lettered too,
  and the stream goes on;
- ``recover(state)`` (optional): called before the first record of a key whose state was restored from an
  earlier run (after a restart), so the job can rebuild in-memory caches from it.

Records with a ``control`` field (end markers) ride through to the output untouched. `build_job_dataflow` wires a
job into a Quix `Application`; a pipeline adds its sink (the feature pipeline's ``run-job`` its `FeastSink`).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink
from quixstreams.state import State

from coinflow.quality import Rejects
from coinflow.settings import Settings

logger = logging.getLogger(__name__)

PROCESS_ERROR = "process_error"  # process raised something other than Reject
NOT_JSON = "not_json"
NOT_A_RECORD = "not_an_object"  # an input that is no JSON object
BAD_OUTPUT = "output_not_a_record"  # process returned something other than a dict or None
_MARK = "__job_state__"  # set in a key's state once the job stored something there: restored state is recognised
_MISSING = object()

OUT, DEAD = "out", "dead"  # the tags of what `job_step` returns


class Reject(Exception):  # noqa: N818 - the job's word for "this input is bad", as Rejects counts it
    """Raised by ``process`` for a bad input: counted under ``reason`` and dead-lettered, the key's state unchanged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyState:
    """One key's state as a job sees it: Quix's `State` with writes held until ``process`` returns."""

    def __init__(self, state: State, key: Any, config: Any) -> None:
        self.key = key
        self.config = config
        self._state = state
        self._writes: dict[str, Any] = {}

    def get(self, name: str, default: Any = None) -> Any:
        value = self._writes.get(name, _MISSING)
        if value is _MISSING:
            return self._state.get(name, default)
        return default if value is None else value

    def set(self, name: str, value: Any) -> None:
        """Keep a JSON-serialisable value under ``name`` (not None: `delete` removes a value)."""
        if value is None:
            raise ValueError("state values cannot be None; use delete()")
        self._writes[name] = value

    def delete(self, name: str) -> None:
        self._writes[name] = None

    def __contains__(self, name: str) -> bool:
        return self.get(name, _MISSING) is not _MISSING

    def commit(self, marked: bool) -> bool:
        """Apply the held writes to Quix's state (the framework calls it once ``process`` has returned); marks the
        key's state as the job's unless ``marked`` already. Whether it is marked now."""
        if not self._writes:
            return marked
        for name, value in self._writes.items():
            if value is None:
                self._state.delete(name)
            else:
                self._state.set(name, value)
        self._writes.clear()
        if not marked:
            self._state.set(_MARK, True)
        return True


def _no_setup(settings: Settings) -> None:
    return None


@dataclass(frozen=True)
class Job:
    """A job's hooks (see the module's docstring)."""

    name: str
    process: Callable[[dict, KeyState], dict | None]
    setup: Callable[[Settings], Any] = _no_setup
    recover: Callable[[KeyState], None] | None = None

    @classmethod
    def from_module(cls, module: ModuleType, name: str | None = None) -> Job:
        """The hooks a module defines; a clear error when ``process`` is missing or a hook has the wrong shape."""
        label = name or module.__name__.rsplit(".", 1)[-1]
        process = getattr(module, "process", None)
        if not callable(process):
            raise ValueError(f"Job {label} ({module.__file__}) defines no process(record, state) function")
        hooks = {"process": (process, 2)}
        setup, recover = getattr(module, "setup", None), getattr(module, "recover", None)
        if setup is not None:
            hooks["setup"] = (setup, 1)
        if recover is not None:
            hooks["recover"] = (recover, 1)
        for hook, (function, arity) in hooks.items():
            try:
                inspect.signature(function).bind(*range(arity))
            except TypeError as exc:
                raise ValueError(f"Job {label}: {hook} must take {arity} argument(s) ({exc})") from None
        return cls(label, process, setup or _no_setup, recover)

    @classmethod
    def load(cls, path: Path) -> Job:
        """The job of a Python file (imported under a private module name; its imports work as in any script)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"No such job file: {path}")
        module_name = f"coinflow_job_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"Not a Python file: {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return cls.from_module(module, path.stem)


def parse_record(value: Any) -> dict:
    """An input value as the record ``process`` gets: raw bytes are parsed here, so bad JSON is a reject."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Reject(NOT_JSON) from None
    if not isinstance(value, dict):
        raise Reject(NOT_A_RECORD)
    return value


def job_step(job: Job, config: Any, rejects: Rejects) -> Callable[..., tuple[str, dict] | None]:
    """The stateful Quix step (``apply(stateful=True, metadata=True)``) running ``job`` on one record:
    (OUT, output), (DEAD, dead-letter record) or None."""
    seen: set[Any] = set()  # keys met in this process
    marked: set[Any] = set()  # keys whose state holds the job's mark

    def step(value: Any, key: Any, timestamp: int, headers: Any, state: State) -> tuple[str, dict] | None:
        if isinstance(value, dict) and "control" in value:
            return OUT, value
        keyed = KeyState(state, key, config)
        if key not in seen:
            seen.add(key)
            if state.get(_MARK) is not None:  # state restored from an earlier run
                marked.add(key)
                if job.recover is not None:
                    job.recover(keyed)  # a bug here stops the run: it is no record's fault
        try:
            out = job.process(parse_record(value), keyed)
        except Reject as exc:
            return DEAD, rejects.reject(exc.reason, value)
        except Exception:  # noqa: BLE001 - a job's bug on one record is that record's reject, not a crash
            if rejects.counts[PROCESS_ERROR] == 0:
                logger.exception("Job %s raised on a record of key %r; it is dead-lettered", job.name, key)
            return DEAD, rejects.reject(PROCESS_ERROR, value)
        if out is not None and not isinstance(out, dict):
            return DEAD, rejects.reject(BAD_OUTPUT, value)
        if keyed.commit(key in marked):
            marked.add(key)
        return None if out is None else (OUT, out)

    return step


@dataclass
class JobRun:
    """A job wired into an application: its config (setup's result), its rejects and its outputs' dataframe."""

    job: Job
    config: Any
    rejects: Rejects
    outputs: StreamingDataFrame = field(repr=False)


def build_job_dataflow(
    app: Application,
    job: Job,
    settings: Settings,
    source: Topic,
    dead_letters: Topic,
    *,
    output: Topic | None = None,
    sink: BaseSink | None = None,
    config: Any = _MISSING,
    rejects: Rejects | None = None,
) -> JobRun:
    """Wire ``job`` into ``app``: ``source`` -> process (state per message key) -> ``output`` and/or ``sink``,
    rejects -> ``dead_letters``. Calls ``setup(settings)`` once here unless ``config`` is given."""
    config = job.setup(settings) if config is _MISSING else config
    rejects = rejects or Rejects(f"job_{job.name}")
    tagged = app.dataframe(source).apply(job_step(job, config, rejects), stateful=True, metadata=True)
    tagged = tagged.filter(lambda tagged_value: tagged_value is not None)
    tagged.filter(lambda t: t[0] == DEAD).apply(lambda t: t[1]).to_topic(dead_letters)
    outputs = tagged.filter(lambda t: t[0] == OUT).apply(lambda t: t[1])
    if output is not None:
        outputs.to_topic(output)
    if sink is not None:
        outputs.sink(sink)
    return JobRun(job, config, rejects, outputs)
