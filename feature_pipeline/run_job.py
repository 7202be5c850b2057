"""``run-job``: run one job file (`coinflow.jobs`) on the broker, its rows into Feast when it names a view."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from coinflow import services
from coinflow.feature_store import feature_store
from coinflow.jobs import Job, JobRun, build_job_dataflow
from coinflow.settings import Settings
from coinflow.streaming import PipelineApplication, json_topic, new_application, run_application, topic_config
from feature_pipeline.cli import console, fail_on_service_error, pipeline_settings, print_stages
from feature_pipeline.runtime import dead_letter_writer, prepare
from feature_pipeline.sinks.feast_sink import FeastSink, single_view

app = typer.Typer()


def job_application(
    settings: Settings,
    broker: services.Broker,
    job: Job,
    source: str,
    output: str | None = None,
    view: str | None = None,
    *,
    consumer_group: str | None = None,
    time_field: str = "window_end_ms",
    broker_wait_s: float | None = None,
) -> tuple[PipelineApplication, JobRun, FeastSink | None]:
    """The project's Quix application running `job`: `source` (raw JSON, parsed by the framework) -> process ->
    `output` and/or the Feast view `view`; rejects on the dead-letter topic. Consumer group: ``job-<name>``."""
    app = new_application(
        settings, broker, consumer_group=consumer_group or f"job-{job.name}", broker_wait_s=broker_wait_s
    )
    config = topic_config(settings)
    dead_letters = json_topic(app, settings.topics.dead_letters, config, "bytes")
    sink = None
    if view is not None:
        sink = FeastSink(
            lambda: feature_store(settings),
            single_view(view),
            time_field=time_field,
            retries=settings.stream.sink_retries,
            dead_letter=dead_letter_writer(app, dead_letters.name),
            stage=f"feast_sink_{job.name}",
        )
    run = build_job_dataflow(
        app,
        job,
        settings,
        json_topic(app, source, config, "bytes"),
        dead_letters,
        output=None if output is None else json_topic(app, output, config),
        sink=sink,
    )
    return app, run, sink


@app.command("run-job")
def run_job(
    path: Annotated[
        Path,
        typer.Argument(
            help="The job file: a Python file with process(record, state), and "
            "optionally setup(settings) and recover(state)."
        ),
    ],  # fmt: skip
    input_topic: Annotated[str, typer.Option("--input", help="The topic the job reads (JSON records, keyed).")],
    output: Annotated[str | None, typer.Option(help="The topic its output records go to.")] = None,
    view: Annotated[str | None, typer.Option(help="The Feast view its output rows are written to.")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group (default: job-<file name>).")] = None,
    time_field: Annotated[str, typer.Option(help="The rows' event time field (ms), for --view.")] = "window_end_ms",
) -> None:
    """Run a job file on the broker until stopped (Ctrl-C): consuming, state per key, checkpoints, recovery,
    dead letters, and Feast writes when --view is given."""
    if output is None and view is None:
        console.print("Give --output TOPIC, --view VIEW or both: the job's records must go somewhere.", style="red")
        raise typer.Exit(2)
    try:
        job = Job.load(path)
    except ValueError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", job.name):
        console.print(f"A job file's name must be a plain word: {path.name}", style="red", markup=False)
        raise typer.Exit(2)
    settings = pipeline_settings()
    try:
        broker = prepare(settings) if view is not None else services.ensure_broker(settings)
        app, run, sink = job_application(settings, broker, job, input_topic, output, view, consumer_group=group)
        run_application(app, broker, None)
    except services.ServiceError as exc:
        raise fail_on_service_error(exc) from exc
    print_stages([run.rejects, *([sink.rejects] if sink is not None else [])])
