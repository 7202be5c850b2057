"""Accounting for bad input: count per reason, log once with a sample, keep the raw message.

Every stage that rejects something (a source that cannot parse a frame, the
dataflow refusing a trade) builds a dead-letter record with `dead_letter` and
hands it to `Rejects.reject`, which counts it, logs the first sample of each
reason and passes the record on to where the stage keeps them (the
dead-letter topic).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter as PromCounter

logger = logging.getLogger(__name__)

REJECTED_TOTAL = PromCounter(
    "coinflow_rejected_total",
    "Inputs rejected and sent to the dead-letter topic, by stage and reason.",
    ["stage", "reason"],
)

_SAMPLE_CHARS = 300


def dead_letter(stage: str, reason: str, raw: Any) -> dict:
    """The record kept on the dead-letter topic for one rejected input."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    elif not isinstance(raw, str):
        raw = json.dumps(raw, default=str)
    return {"stage": stage, "reason": reason, "raw": raw, "rejected_at_ms": int(time.time() * 1000)}


class Rejects:
    """Counts rejected inputs of one stage and forwards their dead-letter records."""

    def __init__(self, stage: str, forward: Callable[[dict], None] | None = None) -> None:
        self.stage = stage
        self.counts: Counter[str] = Counter()
        self._forward = forward

    def reject(self, reason: str, raw: Any) -> dict:
        """Count, log the first of its reason, forward; returns the dead-letter record."""
        record = dead_letter(self.stage, reason, raw)
        self.counts[reason] += 1
        REJECTED_TOTAL.labels(self.stage, reason).inc()
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
