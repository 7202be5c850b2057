"""Several server processes behind one port: gunicorn forks N uvicorn workers of one app and restarts any that dies.

Each worker runs the app's lifespan itself, so it has its own online-store
client, models and alias watcher, and swaps its models atomically as one
process does. What they share lives in one folder of the run directory per
port (`ServeDirs`), wiped when the service starts:

- ``metrics/``: prometheus-client's multiprocess mode. Counters and
  histograms add up across workers; the model gauges show the most recent
  value of the live workers. A series a worker removes (a model no longer
  served) stays until that worker exits, a limit of the mode.
- ``workers/``: each worker's report after every registry check (pid, whether
  it is ready, the version it serves per key), so /ready and /models answer for
  the whole service (`service_problems`, `service_model`). A report whose
  process is gone is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess, values
from uvicorn_worker import UvicornWorker

from coinflow.settings import Settings


class QuietWorker(UvicornWorker):
    """A uvicorn worker without access log (the metrics count every request)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto", "access_log": False}


class LoggingWorker(UvicornWorker):
    """A uvicorn worker that logs every request."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto", "access_log": True}


@dataclass(frozen=True)
class ServeDirs:
    """The folders the workers of the API on one port share."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> ServeDirs:
        return cls(settings.services.run_dir / "serve" / f"port-{settings.serve.port}")

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    def reset(self) -> None:
        """Empty folders for a service starting (the multiprocess files of an earlier one would add up)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.metrics.mkdir(parents=True)
        self.workers.mkdir(parents=True)


def use_multiprocess_metrics(directory: Path) -> None:
    """Make the metrics created from now on in this process (and its forks) keep their values in `directory`.

    prometheus-client chooses its value class from PROMETHEUS_MULTIPROC_DIR when
    it is imported; the CLI imports it before it knows the number of workers, so
    the choice is made again here, by the library's own function."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.get_value_class()


@dataclass(frozen=True)
class ModelReport:
    """What one worker serves for one (pair, horizon)."""

    loaded: bool
    version: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class WorkerReport:
    pid: int
    ready: bool
    models: dict[str, ModelReport] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerReport:
        data = json.loads(text)
        models = {key: ModelReport(**value) for key, value in data["models"].items()}
        return cls(int(data["pid"]), bool(data["ready"]), models)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerBoard:
    """The workers' reports in one folder: each writes its own (atomically) and any worker reads them all."""

    def __init__(self, directory: Path, expected: int) -> None:
        self.directory = directory
        self.expected = expected

    def _path(self, pid: int) -> Path:
        return self.directory / f"worker-{pid}.json"

    def publish(self, report: WorkerReport) -> None:
        path = self._path(report.pid)
        partial = path.with_suffix(".tmp")
        partial.write_text(report.to_json())
        partial.replace(path)

    def withdraw(self, pid: int) -> None:
        self._path(pid).unlink(missing_ok=True)

    def reports(self) -> list[WorkerReport]:
        """The reports of the workers that are alive, oldest pid first."""
        out = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                report = WorkerReport.from_json(path.read_text())
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or removed by a worker that stopped
            if _alive(report.pid):
                out.append(report)
        return sorted(out, key=lambda r: r.pid)


def service_problems(reports: Sequence[WorkerReport], expected: int) -> list[str]:
    """Why the service as a whole is not ready, from its live workers' reports (empty: every worker is ready)."""
    problems = []
    if len(reports) < expected:
        problems.append(f"{len(reports)} of {expected} workers have reported (the others are starting)")
    unready = [r.pid for r in reports if not r.ready]
    if unready:
        problems.append(f"workers {', '.join(map(str, unready))} have not loaded every model yet")
    return problems


def service_model(key: str, reports: Sequence[WorkerReport], expected: int) -> tuple[bool, str | None]:
    """(whether every worker serves a model for `key`, and one version; why not, or which versions differ)."""
    found = [r.models.get(key, ModelReport(False)) for r in reports]
    versions = sorted({m.version for m in found if m.loaded and m.version is not None})
    if len(found) < expected:
        return False, f"{len(found)} of {expected} workers have reported"
    missing = [r.pid for r, m in zip(reports, found, strict=True) if not m.loaded]
    if missing:
        return False, f"workers {', '.join(map(str, missing))} have no model loaded"
    if len(versions) > 1:
        return True, f"workers serve versions {', '.join(versions)}: a swap is under way"
    return True, None


class GunicornService(BaseApplication):
    """gunicorn with N uvicorn workers of `app`, made in this process and forked (nothing in it does I/O until its
    lifespan starts in each worker)."""

    def __init__(self, app: Any, options: dict[str, Any], dirs: ServeDirs) -> None:
        self.application = app
        self.options = options
        self.dirs = dirs
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        dirs = self.dirs

        def child_exit(server: Any, worker: Any) -> None:
            multiprocess.mark_process_dead(worker.pid, str(dirs.metrics))
            WorkerBoard(dirs.workers, 0).withdraw(worker.pid)

        self.cfg.set("child_exit", child_exit)

    def load(self) -> Any:
        return self.application


def gunicorn_options(settings: Settings, workers: int, access_log: bool) -> dict[str, Any]:
    """gunicorn's settings for the API: uvicorn's defaults where they differ (keep-alive 5 s), logs at the
    project's level, requests logged only when asked; workers get 8 s to finish on SIGTERM, inside the 10 s
    that `coinflow down` waits before it kills."""
    worker = LoggingWorker if access_log else QuietWorker
    return {
        "bind": f"{settings.serve.host}:{settings.serve.port}",
        "workers": workers,
        "worker_class": f"{worker.__module__}.{worker.__qualname__}",
        "keepalive": 5,
        "graceful_timeout": 8,
        "preload_app": True,
        "loglevel": settings.services.log_level.lower(),
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "proc_name": f"coinflow-serve-{settings.serve.port}",
    }
