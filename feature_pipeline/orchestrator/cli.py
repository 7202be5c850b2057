"""The orchestrator's command: pair_candidates from the universe candles, until Ctrl-C."""

from __future__ import annotations

import typer

from coinflow import services
from feature_pipeline.cli import console, fail_on_service_error, pipeline_settings, print_stages, serve_metrics
from feature_pipeline.orchestrator.runner import run_orchestrator

app = typer.Typer()


@app.command("pairs-orchestrate")
def pairs_orchestrate() -> None:
    """Publish pair_candidates until Ctrl-C: the universe candles (COINFLOW_UNIVERSE_CANDLES_TOPIC, 1-minute) are
    re-tested by pair discovery over the latest COINFLOW_PAIRS_RETEST_WINDOW_BARS at the end of every
    COINFLOW_PAIRS_RETEST_INTERVAL_S of event time; pairs enter when accepted and leave after failing for
    COINFLOW_PAIRS_LEAVE_AFTER_S (COINFLOW_PAIR_JOBS_CANDIDATES_TOPIC, read by pairs-live)."""
    settings = pipeline_settings()
    serve_metrics(settings)
    try:
        summary = run_orchestrator(settings)
    except services.ServiceError as exc:
        raise fail_on_service_error(exc) from exc
    console.print(f"pairs orchestrator stopped after {summary.seconds:.1f} s")
    print_stages(summary.stages)
