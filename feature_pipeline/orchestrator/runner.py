"""Run the orchestrator: services, the Quix application, its graph; until stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass

from coinflow.quality import Rejects
from coinflow.settings import Settings
from coinflow.streaming import new_application, run_application
from feature_pipeline.orchestrator.dataflow import build_orchestrator_dataflow, orchestrator_topics
from feature_pipeline.runtime import prepare


@dataclass
class OrchestratorRunSummary:
    seconds: float
    stages: list[Rejects]  # the candles' rejects, then the late candles


def run_orchestrator(settings: Settings) -> OrchestratorRunSummary:
    """Run the orchestrator over the universe candles topic until the application is stopped (Ctrl-C, SIGTERM)."""
    broker = prepare(settings)
    app = new_application(settings, broker, consumer_group=settings.pair_jobs.orchestrator_consumer_group)
    stages = build_orchestrator_dataflow(app, orchestrator_topics(app, settings), settings)
    started = time.monotonic()
    run_application(app, broker, None)
    return OrchestratorRunSummary(time.monotonic() - started, stages)
