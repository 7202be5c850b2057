"""The pair jobs' command: candidate pairs' spreads over the topics, into Feast, until Ctrl-C."""

from __future__ import annotations

import typer

from coinflow import services
from feature_pipeline.cli import (
    console,
    fail_on_service_error,
    pipeline_settings,
    print_stages,
    rows_table,
    serve_metrics,
)
from feature_pipeline.pairs.runner import run_pairs_pipeline

app = typer.Typer()


@app.command("pairs-live")
def pairs_live() -> None:
    """Run a job per candidate pair until Ctrl-C: pairs enter and leave by the pair_candidates topic
    (COINFLOW_PAIR_JOBS_CANDIDATES_TOPIC); each pair's legs, from the universe candles topic
    (COINFLOW_UNIVERSE_CANDLES_TOPIC), re-keyed to the pair and joined by event time, give its Kalman hedge,
    spread, z-score and half-life in pair_spread_1m."""
    settings = pipeline_settings()
    serve_metrics(settings)
    try:
        summary = run_pairs_pipeline(settings)
    except services.ServiceError as exc:
        raise fail_on_service_error(exc) from exc
    console.print(rows_table(f"pair jobs stopped after {summary.seconds:.1f} s", summary.rows_written))
    print_stages(summary.stages)
