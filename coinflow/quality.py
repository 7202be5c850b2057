"""Accounting for bad input: count per reason, log once with a sample, keep the raw message.

Every stage that rejects something (a source that cannot parse a frame, the
dataflow refusing a trade) builds a dead-letter record with `dead_letter` and
hands it to `Rejects.reject`, which counts it, logs the first sample of each
reason and passes the record on to where the stage keeps them (the
dead-letter topic).
"""

from __future__ import annotations

import base64
import json
import logging
import reprlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from prometheus_client import Counter as PromCounter

logger = logging.getLogger(__name__)

REJECTED_TOTAL = PromCounter(
    "coinflow_rejected_total",
    "Inputs rejected and sent to the dead-letter topic, by stage and reason.",
    ["stage", "reason"],
)

_SAMPLE_CHARS = 300
DEAD_LETTER_MAX_BYTES = 64 * 1024  # far below the 1 MB message limit of Kafka brokers' defaults
_MIN_BYTES = 1024
_max_bytes = DEAD_LETTER_MAX_BYTES
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 20, 10_000, 10_000


def configure_dead_letters(max_bytes: int) -> None:
    """Set this process's dead-letter size limit, once at start-up from ``Settings.dead_letter_max_bytes``.

    Like logging, a setting of the process: every stage's `dead_letter` then keeps to it. Sources run in their
    own process and call this there with the limit their constructor was given.
    """
    global _max_bytes
    if max_bytes < _MIN_BYTES:
        raise ValueError(f"a dead-letter limit below {_MIN_BYTES} bytes leaves no room for the record: {max_bytes}")
    _max_bytes = max_bytes


def dead_letter(stage: str, reason: str, raw: Any, max_bytes: int | None = None) -> dict:
    """The record kept on the dead-letter topic for one rejected input, at most ``max_bytes`` as JSON.

    ``raw`` is kept as text when it is text or UTF-8 (``encoding`` "utf-8"; other objects as their JSON, or a
    bounded repr where they have none: "repr"), bytes that are not UTF-8 as base64 ("base64"), so the
    original is never lost to a lossy decode. ``raw_bytes`` is the original's length; a record that would
    exceed ``max_bytes`` (default: the process's limit, see `configure_dead_letters`) keeps the start of
    ``raw`` only and says ``truncated``, so that any input, however large, fits in a broker message.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = "", "base64"
        size = len(data)
    else:
        text, encoding = _as_text(raw)
        size = len(text.encode("utf-8", "surrogatepass"))
    record = {
        "stage": stage,
        "reason": reason,
        "raw": "",
        "encoding": encoding,
        "raw_bytes": size,
        "truncated": False,
        "rejected_at_ms": int(time.time() * 1000),
    }
    budget = max(0, (max_bytes or _max_bytes) - len(json.dumps(record)))
    if encoding == "base64":
        kept = data if 4 * -(-size // 3) <= budget else data[: budget // 4 * 3]
        record["raw"], record["truncated"] = base64.b64encode(kept).decode("ascii"), len(kept) < size
    else:
        kept_text = _json_prefix(text, budget)
        record["raw"], record["truncated"] = kept_text, len(kept_text) < len(text)
    return record


def _as_text(raw: Any) -> tuple[str, str]:
    """A rejected object as text: itself (a str), its JSON, or, for what has none (too deep, cyclic), a bounded repr."""
    if isinstance(raw, str):
        return raw, "utf-8"
    try:
        return json.dumps(raw, default=str), "utf-8"
    except (RecursionError, ValueError, TypeError, OverflowError):
        try:
            return _REPR.repr(raw), "repr"
        except (RecursionError, ValueError, TypeError, OverflowError):
            return f"<{type(raw).__name__} without a representation>", "repr"


def _json_prefix(text: str, budget: int) -> str:
    """The longest start of ``text`` whose JSON string (as `json.dumps` writes it, escapes included) fits ``budget``."""
    if len(json.dumps(text)) - 2 <= budget:
        return text
    low, high = 0, min(len(text), budget)  # every character takes at least one byte
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(text[:middle])) - 2 <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


class Rejects:
    """Counts rejected inputs of one stage and forwards their dead-letter records.

    Sources run in their own process, where counts would be lost to the run summary and to /metrics. There
    `reporter` (set by `feature_pipeline.sources.process.SourceLink.enter`) receives every stage's counts as
    they change, and the parent adds them to its own `Rejects` of that stage (`add`).
    """

    reporter: ClassVar[Callable[[str, Mapping[str, int]], None] | None] = None

    def __init__(self, stage: str, forward: Callable[[dict], None] | None = None) -> None:
        self.stage = stage
        self.counts: Counter[str] = Counter()
        self._forward = forward
        if Rejects.reporter is not None:
            Rejects.reporter(stage, {})  # so that the parent lists the stage even when it rejects nothing

    def add(self, counts: Mapping[str, int]) -> None:
        """Count rejects per reason, here and in REJECTED_TOTAL; alone, for rejects logged and forwarded elsewhere."""
        for reason, n in counts.items():
            self.counts[reason] += n
            REJECTED_TOTAL.labels(self.stage, reason).inc(n)

    def reject(self, reason: str, raw: Any) -> dict:
        """Count, log the first of its reason, forward; returns the dead-letter record."""
        record = dead_letter(self.stage, reason, raw)
        self.add({reason: 1})
        if Rejects.reporter is not None:
            Rejects.reporter(self.stage, {reason: 1})
        if self.counts[reason] == 1:
            logger.warning(
                "%s rejected an input (%s); further ones are counted, not logged. Sample: %s",
                self.stage,
                reason,
                record["raw"][:_SAMPLE_CHARS],
            )
        if self._forward is not None:
            self._forward(record)
        return record

    def summary(self) -> str:
        if not self.counts:
            return f"{self.stage}: nothing rejected"
        parts = ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))
        return f"{self.stage}: rejected {sum(self.counts.values())} ({parts})"
