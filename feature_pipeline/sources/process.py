"""What surrounds a source in its own process: it dies with its parent, and its logs and reject counts reach it.

Quix Streams runs every source in a spawned process (`quixstreams.sources.base.manager.SourceProcess`). Left
alone, that process outlives a parent killed with SIGKILL (keeping its connections and streaming on beside the
next run), logs where nothing is configured (INFO lines vanish) and counts its rejects where neither the run
summary nor /metrics sees them. The parent's `SourceRelay` hands each source a `SourceLink` before it is pickled
to its process; `RecordSource.start` calls `die_with_parent` and `SourceLink.enter` first thing there.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging.handlers import QueueListener
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any, Protocol, Self

from coinflow.logs import ToLogger, log_to_queue
from coinflow.quality import Rejects

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(grace_s: float) -> None:
    """Make this spawned process stop when its parent dies: SIGTERM (Quix stops the source), SIGKILL ``grace_s`` later.

    On Linux the kernel sends the SIGTERM (``PR_SET_PDEATHSIG``; strictly on the death of the parent's thread that
    spawned this process, which for Quix is the one running the application). Everywhere, and also for a parent
    that died before that was set, a watchdog thread waits on the pipe the parent holds open while it lives and
    does the same; its SIGKILL ends a source that does not stop, as the parent's own `stop` would have.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # the main process: there is no parent to die with
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logger.warning(
                "prctl(PR_SET_PDEATHSIG) failed (errno %d); the watchdog alone stops this source when its parent dies",
                ctypes.get_errno(),
            )
    threading.Thread(target=_watch, args=(parent, grace_s), name="parent-watchdog", daemon=True).start()


def _watch(parent: BaseProcess, grace_s: float) -> None:
    parent.join()  # returns once the parent is gone
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class RejectCounts:
    """Rejects a stage counted in a source's process since its last report (none: the stage has started)."""

    stage: str
    counts: dict[str, int]


@dataclass(frozen=True)
class SourceLink:
    """The child's end of a `SourceRelay`: travels with the pickled source, entered in the source's process."""

    queue: Queue
    log_level: int

    def enter(self) -> None:
        """Send this process's log records and every stage's reject counts to the parent."""
        log_to_queue(self.queue, self.log_level)
        Rejects.reporter = self._report

    def _report(self, stage: str, counts: Mapping[str, int]) -> None:
        self.queue.put(RejectCounts(stage, dict(counts)))


class Linked(Protocol):
    """A source that reports through a `SourceLink` (`feature_pipeline.sources.base.RecordSource`)."""

    link: SourceLink | None


class SourceRelay:
    """The parent's end: logs the sources' records here and keeps their stages' rejects (`rejects`, REJECTED_TOTAL).

    Use it as a context manager around the run; leaving it waits until everything the sources sent is handled,
    which is everything they logged and counted once their processes have ended.
    """

    def __init__(self) -> None:
        self._queue: Queue = multiprocessing.get_context("spawn").Queue()
        self._stages: dict[str, Rejects] = {}
        self._listener = _Listener(self._queue, self._add)

    def attach(self, source: Linked) -> None:
        """Link ``source`` to this relay; before it is started, so that the link travels with it."""
        source.link = SourceLink(self._queue, logging.getLogger().getEffectiveLevel())

    @property
    def rejects(self) -> list[Rejects]:
        """Every source stage that has started, with what it rejected, in the order they started."""
        return list(self._stages.values())

    def _add(self, report: RejectCounts) -> None:
        self._stages.setdefault(report.stage, Rejects(report.stage)).add(report.counts)

    def __enter__(self) -> Self:
        self._listener.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.stop()
        self._queue.close()
        self._queue.join_thread()


class _Listener(QueueListener):
    """A log listener that also applies the reject counts arriving on its queue."""

    def __init__(self, queue: Queue, on_rejects: Callable[[RejectCounts], None]) -> None:
        super().__init__(queue, ToLogger())
        self._on_rejects = on_rejects

    def handle(self, record: Any) -> None:
        if isinstance(record, RejectCounts):
            self._on_rejects(record)
        else:
            super().handle(record)
