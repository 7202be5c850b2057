"""`python -m coinflow`: start, stop and inspect the local services all pipelines share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from coinflow import services
from coinflow.logs import configure_logging
from coinflow.redact import redact
from coinflow.settings import Settings, env_example

app = typer.Typer(
    help="Local services of coinflow: the Kafka-compatible broker, Redis and MLflow.", no_args_is_help=True
)
console = Console()


@app.command()
def up() -> None:
    """Start (or reuse) the broker, Redis and the MLflow server; idempotent and health-checked."""
    settings = Settings()
    configure_logging(settings.services.log_level)
    try:
        broker = services.ensure_broker(settings)
        redis_url = services.ensure_redis(settings)
        mlflow_uri = services.ensure_mlflow(settings)
    except services.ServiceError as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"broker: {redact(broker.address)} ({'embedded' if broker.embedded else 'configured'})")
    console.print(f"redis:  {redact(redis_url)}")
    console.print(f"mlflow: {redact(mlflow_uri)}")


@app.command()
def down() -> None:
    """Stop only the services this project started."""
    settings = Settings()
    stopped = services.stop_services(settings)
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status() -> None:
    """Say which services are up and who runs them."""
    for name, line in services.services_status(Settings()).items():
        console.print(f"{name}: {line}", soft_wrap=True)


@app.command("env-example")
def env_example_command() -> None:
    """Print .env.example: every setting with its default, section by section."""
    typer.echo(env_example(), nl=False)


@app.command()
def quickstart(
    data_dir: Annotated[Path, typer.Option(help="The bundled real data (data/kraken, data/coinbase).")] = Path("data"),
    quick: Annotated[
        bool, typer.Option(help="Shorter training (5 Optuna trials, 1 LSTM epoch), as CI runs it.")
    ] = False,
) -> None:
    """Run all three pipelines on the bundled real data: features, training, the API and one prediction."""
    from coinflow.quickstart import run

    settings = Settings()
    configure_logging(settings.services.log_level)
    raise typer.Exit(run(settings, data_dir, quick))


if __name__ == "__main__":
    app()
