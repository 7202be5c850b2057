"""`python -m feature_pipeline`: the feature pipelines' commands (live, over files, backfills) in one CLI.

Every command starts the local services it needs when none are configured,
registers the feature repository if it is not yet, and can be run again:
the same input leaves the same rows in the feature store. Each pipeline
brings its commands as a Typer app of its own, mounted here.
"""

from __future__ import annotations

import typer

from coinflow.feature_store import apply_feature_repo
from feature_pipeline.books import cli as books
from feature_pipeline.candles import cli as candles
from feature_pipeline.cli import console, pipeline_settings
from feature_pipeline.orchestrator import cli as orchestrator
from feature_pipeline.pairs import cli as pairs
from feature_pipeline.run_job import app as run_job
from feature_pipeline.universe import cli as universe

app = typer.Typer(
    help="The streaming feature pipelines: trades and books -> Kafka -> features -> Feast (Redis online, Parquet offline).",
    no_args_is_help=True,
)
app.add_typer(candles.app)
app.add_typer(books.app)
app.add_typer(universe.app)
app.add_typer(pairs.app)
app.add_typer(orchestrator.app)
app.add_typer(run_job)


@app.command("feature-repo")
def feature_repo_command() -> None:
    """Register the Feast repository (`feast apply` with the project's settings)."""
    settings = pipeline_settings()
    apply_feature_repo(settings)
    console.print(
        f"Applied {settings.feast.repo_path} as project '{settings.feast.project}' (registry {settings.feast.registry_path})."
    )


if __name__ == "__main__":
    app()
