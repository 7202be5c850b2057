"""`python -m coinflow`: start, stop and inspect the local services all pipelines share."""

from __future__ import annotations

import typer
from rich.console import Console

from coinflow import services
from coinflow.logs import configure_logging
from coinflow.settings import Settings

app = typer.Typer(help="Local services of coinflow: the Kafka-compatible broker and Redis.", no_args_is_help=True)
console = Console()


@app.command()
def up() -> None:
    """Start (or reuse) the broker and Redis; idempotent and health-checked."""
    settings = Settings()
    configure_logging(settings.log_level)
    try:
        broker = services.ensure_broker(settings)
        redis_url = services.ensure_redis(settings)
    except services.ServiceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"broker: {broker.address} ({'embedded' if broker.embedded else 'configured'})")
    console.print(f"redis:  {redis_url}")


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
        console.print(f"{name}: {line}")


if __name__ == "__main__":
    app()
