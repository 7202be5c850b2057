"""`python -m training_pipeline`: train, evaluate and register price models; start the MLflow UI."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from mlflow.exceptions import MlflowException
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from coinflow import services
from coinflow.feature_store import feature_store
from coinflow.logs import configure_logging
from coinflow.redact import redact
from coinflow.schemas import INTERVALS_SECONDS
from coinflow.settings import Settings, comma_items
from training_pipeline.checks import DataCheckError
from training_pipeline.pairs.cli import register as register_pairs
from training_pipeline.price.models import StudyError, open_storage
from training_pipeline.price.train import (
    DEFAULT_MODELS,
    MODEL_CHOICES,
    PairResult,
    TrainingOptions,
    train_pair,
    tune_worker,
)
from training_pipeline.simulation import Outcome

if TYPE_CHECKING:
    from feast import FeatureStore

    from training_pipeline.action.train import ActionResult
    from training_pipeline.deep.distributed import Distributed

ACTION = "action"

console = Console(width=None if sys.stdout.isatty() else 140)
app = typer.Typer(
    help="The training pipeline: Feast features -> baselines, Lasso, XGBoost -> MLflow registry.", no_args_is_help=True
)


def _split(values: list[str] | None) -> list[str]:
    """The items of a repeatable, comma-separated option."""
    return [item for value in values or [] for item in comma_items(value)]


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _table(result: PairResult) -> Table:
    ds, split = result.dataset, result.split
    table = Table(
        title=(
            f"{result.name}: {len(ds.frame):,} rows {ds.start:%Y-%m-%d %H:%M} to {ds.end:%Y-%m-%d %H:%M} UTC; "
            f"train {len(split.train):,} / validation {len(split.validation):,} / test {len(split.test):,} rows; "
            f"{result.seconds:.0f} s"
        )
    )
    for column in ("model", "test MAE", "ratio", "RMSE", "MAPE %", "direction", "walk-fwd", "version", "decision"):
        table.add_column(column, justify="left" if column in ("model", "decision") else "right", no_wrap=True)
    baseline = result.baseline_test
    for m in result.models:
        decision = "champion" if m.promoted else "refused" if m.version else "-"
        table.add_row(
            m.model_type,
            _fmt(m.test["mae"], 3),
            _fmt(m.test["mae"] / baseline["mae"]),
            _fmt(m.test["rmse"], 3),
            _fmt(100 * m.test["mape"]),
            _fmt(m.test["directional_accuracy"], 3),
            _fmt(m.walk_forward_mean),
            m.version or "-",
            decision,
        )
    table.caption = (
        "ratio, walk-fwd: MAE / last-price MAE on the test period and on walk-forward folds of the earlier history "
        "(< 1 beats the baseline); direction: share of moves called right (last price: 0.5)."
    )
    return table


@app.command()
def train(
    pair: Annotated[
        list[str] | None,
        typer.Option(
            "--pair", help="Pair to train, e.g. BTC/USD; repeat or comma-separate (default: COINFLOW_TRAINING_PAIRS)."
        ),
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option(
            help="Forecast horizon in minutes, a multiple of the interval (default: COINFLOW_HORIZON_MINUTES).", min=1
        ),
    ] = None,
    models: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated models from {', '.join(MODEL_CHOICES)}, {ACTION} (baseline: last price and mean of the "
            "last 10; lstm, gru: sequence models over the last COINFLOW_DEEP_SEQUENCE_LENGTH candles; action: the "
            "order-book action model of each --product)."
        ),
    ] = ",".join(DEFAULT_MODELS),
    trials: Annotated[
        int | None,
        typer.Option(
            help="Optuna trials for XGBoost, 3 walk-forward fits each (default: COINFLOW_OPTUNA_TRIALS = 20, chosen so "
            "that `make train` on the bundled 30,000-row history takes under a minute on 2 busy cores; 50 trials "
            "add about 30 s).",
            min=1,
        ),
    ] = None,
    interval: Annotated[
        str | None,
        typer.Option(
            help=f"Candle interval of the features: {', '.join(INTERVALS_SECONDS)} (default: COINFLOW_CANDLE_INTERVAL)."
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Most epochs of the lstm/gru/action models (default: COINFLOW_DEEP_EPOCHS).", min=1),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Torch device of the lstm/gru/action models: auto, cuda, mps or cpu (default: COINFLOW_DEEP_DEVICE)."
        ),
    ] = None,
    product: Annotated[
        list[str] | None,
        typer.Option(
            "--product",
            help="Book of the action model, <exchange>:<product> e.g. coinbase:ETH-USD; repeat or "
            "comma-separate (default: COINFLOW_ACTION_PRODUCTS).",
        ),
    ] = None,
    checkpoint_dir: Annotated[
        str | None,
        typer.Option(
            help="Folder or fsspec URL (s3://...) for per-epoch checkpoints; a restarted run resumes from it "
            "(default: COINFLOW_DEEP_CHECKPOINT_DIR)."
        ),
    ] = None,
) -> None:
    """Train, evaluate on a held-out test period, log to MLflow, register, and promote a champion if one qualifies.

    Under torchrun the lstm/gru models train data-parallel, COINFLOW_DEEP_BATCH_SIZE being the global batch, and
    rank 0 logs: `torchrun --standalone --nproc-per-node 2 -m training_pipeline train --models lstm,gru`.
    """
    overrides = {"deep_epochs": epochs, "deep_device": device, "deep_checkpoint_dir": checkpoint_dir}
    try:
        settings = Settings().override(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    configure_logging(settings.services.log_level)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if interval is not None and interval not in INTERVALS_SECONDS:
        console.print(f"[red]--interval must be one of {', '.join(INTERVALS_SECONDS)}, not {interval!r}[/red]")
        raise typer.Exit(2)
    chosen = _split([models])
    action = ACTION in chosen
    price_models = [m for m in chosen if m != ACTION]
    try:
        options = (
            TrainingOptions.from_settings(
                settings, price_models, horizon_minutes=horizon, interval=interval, trials=trials
            )
            if price_models or not action
            else None
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if options and "xgboost" in options.models:
        _check_storage(settings)
    if action or (options and {"lstm", "gru"} & set(options.models)):
        from training_pipeline.deep.loop import resolve_device  # imports torch only when a deep model is chosen

        try:
            resolve_device(settings.deep.device)
        except ValueError as exc:
            console.print(f"[red]--device: {exc}[/red]")
            raise typer.Exit(2) from exc
    torchrun = _join_torchrun(settings, chosen)
    try:
        # Under torchrun rank 0 alone logs and registers; the other ranks train and evaluate alike.
        tracking_uri = services.ensure_mlflow(settings) if torchrun is None or torchrun.main else None
    except services.ServiceError as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc
    store = feature_store(settings)
    try:
        failed = (
            _train_prices(settings, _split(pair) or settings.training.pairs, options, tracking_uri, store)
            if options
            else []
        )
        if action:
            failed += _train_actions(settings, _split(product) or settings.action.products, tracking_uri, store)
    except MlflowException as exc:
        console.print(tracking_failure(tracking_uri, exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    finally:
        if torchrun is not None:
            from training_pipeline.deep.distributed import stop

            stop()
    if failed:
        raise typer.Exit(1)


def tracking_failure(tracking_uri: str | None, exc: MlflowException) -> str:
    """One line for a tracking server (or the store behind it) lost during training: what failed, MLflow's reason
    in short, and what it leaves behind."""
    reason = " ".join(exc.message.split())
    if len(reason) > 400:
        reason = reason[:397] + "..."
    return (
        f"The MLflow server {redact(tracking_uri)} failed while training: {redact(reason)}. Runs logged so far stay "
        "in MLflow; versions are registered only for finished runs."
    )


def _train_actions(settings: Settings, books: list[str], tracking_uri: str | None, store: FeatureStore) -> list[str]:
    """Train the action model of each book and print its results; the books whose data failed the checks."""
    from training_pipeline.action.train import train_action  # imports torch only when the action model is chosen

    assert tracking_uri is not None, "torchrun trains no action model"
    failed = []
    for book in books:
        try:
            outcome = train_action(settings, book, tracking_uri, store)
        except DataCheckError as exc:
            console.print(str(exc), style="red", markup=False)
            failed.append(book)
            continue
        console.print(_action_table(outcome))
        console.print(f"  v{outcome.version}: {outcome.promotion}. MLflow: {redact(tracking_uri)}")
    return failed


def _join_torchrun(settings: Settings, models: list[str]) -> Distributed | None:
    """Join torchrun's process group when this process is one of several (WORLD_SIZE > 1; None otherwise), once
    the run is known to suit data-parallel training: the lstm/gru models only, a batch that divides among the
    processes. Only rank 0 prints."""
    if "WORLD_SIZE" not in os.environ:
        return None
    from training_pipeline.deep import distributed  # imports torch only under torchrun
    from training_pipeline.deep.loop import resolve_device

    context = distributed.Distributed.from_environment(os.environ)
    if context is None:
        return None
    if not models or set(models) - {"lstm", "gru"}:
        console.print(
            "[red]under torchrun, train runs the deep price models only: --models lstm, gru or both[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        distributed.per_rank_batch(settings.deep.batch_size, context.world_size)
        distributed.start(context, resolve_device(settings.deep.device))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    console.quiet = not context.main
    return context


def _train_prices(
    settings: Settings, pairs: list[str], options: TrainingOptions, tracking_uri: str | None, store: FeatureStore
) -> list[str]:
    """Train the price models of each pair and print its results; the pairs whose data failed the checks."""
    failed = []
    for name in pairs:
        try:
            result = train_pair(settings, name, options, tracking_uri, store)
        except (DataCheckError, StudyError) as exc:
            console.print(str(exc), style="red", markup=False)
            failed.append(name)
            continue
        console.print(_table(result))
        for m in result.models:
            if m.version:
                console.print(f"  v{m.version} {m.model_type}: {m.promotion}")
        champion = f"champion: version {result.champion}" if result.champion else "no champion yet (none has qualified)"
        console.print(f"{result.name}: {champion}. MLflow: {redact(tracking_uri)}")
    return failed


def _check_storage(settings: Settings) -> None:
    """Fail at once, in one line, when the shared Optuna storage (COINFLOW_OPTUNA_STORAGE, if set) cannot be opened."""
    if settings.training.optuna_storage is None:
        return
    try:
        open_storage(settings.training.optuna_storage)
    except StudyError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from exc


@app.command("tune-worker")
def tune_worker_command(
    worker: Annotated[
        int,
        typer.Option(
            help="This worker's index, distinct among the workers of one search (the `train` run is worker 0); its "
            "sampler's seed is COINFLOW_TRAINING_SEED + the index.",
            min=1,
        ),
    ],
    pair: Annotated[
        str | None, typer.Option(help="Pair whose search to join (default: the first of COINFLOW_TRAINING_PAIRS).")
    ] = None,
    horizon: Annotated[
        int | None, typer.Option(help="Forecast horizon in minutes (default: COINFLOW_HORIZON_MINUTES).", min=1)
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Candle interval of the features (default: COINFLOW_CANDLE_INTERVAL).")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="Optuna trials this worker runs (default: COINFLOW_OPTUNA_TRIALS).", min=1)
    ] = None,
) -> None:
    """Run XGBoost trials in the shared Optuna study (COINFLOW_OPTUNA_STORAGE) of a pair's training, next to its
    `train` run and other workers; `train` fits the best trial of them all."""
    settings = Settings()
    configure_logging(settings.services.log_level)
    if settings.training.optuna_storage is None:
        console.print("[red]COINFLOW_OPTUNA_STORAGE is not set: tuning workers meet in a shared Optuna storage[/red]")
        raise typer.Exit(2)
    if interval is not None and interval not in INTERVALS_SECONDS:
        console.print(f"[red]--interval must be one of {', '.join(INTERVALS_SECONDS)}, not {interval!r}[/red]")
        raise typer.Exit(2)
    try:
        options = TrainingOptions.from_settings(
            settings, ("xgboost",), horizon_minutes=horizon, interval=interval, trials=trials
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    _check_storage(settings)
    try:
        result = tune_worker(settings, pair or settings.training.pairs[0], options, worker, feature_store(settings))
    except (DataCheckError, StudyError) as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(
        f"worker {result.worker}: {result.worker_trials} trials in study {result.study} ({result.total_trials} in "
        f"all); best so far: MAE ratio {result.best_value:.5f} with {result.best_params}",
        markup=False,
        soft_wrap=True,
    )


def _add_outcomes(table: Table, outcomes: Sequence[Outcome], fees: bool = False) -> None:
    """One row per simulated account: PnL, return, Sharpe, drawdown, trades (and fees)."""
    columns = ("account", "PnL", "return %", "Sharpe", "max drawdown %", "trades", *(("fees",) if fees else ()))
    for column in columns:
        table.add_column(column, justify="left" if column == "account" else "right")
    for outcome in outcomes:
        cells = [
            outcome.name,
            f"{outcome.pnl:,.2f}",
            _fmt(100 * outcome.total_return, 3),
            _fmt(outcome.sharpe, 2),
            _fmt(100 * outcome.max_drawdown, 3),
            str(outcome.fills),
        ]
        table.add_row(*cells, *((f"{outcome.fees:,.2f}",) if fees else ()))


def _action_table(result: ActionResult) -> Table:
    """The action model's test period: decisions against the labels, and the simulated accounts."""
    ds, split, m = result.dataset, result.split, result.metrics
    table = Table(
        title=(
            f"{result.name}: {len(ds.frame):,} samples {ds.start:%Y-%m-%d %H:%M:%S} to {ds.end:%Y-%m-%d %H:%M:%S} UTC; "
            f"train {len(split.train):,} / validation {len(split.validation):,} / test {len(split.test):,}; "
            f"fit {result.seconds:.0f} s on {result.summary.get('device', '?')}"
        )
    )
    _add_outcomes(table, result.outcomes)
    table.caption = (
        f"decisions: {m['accuracy']:.1%} optimal; chosen actions worth {m['mean_value_bps']:.2f} bps of the mid "
        f"(best possible {m['oracle_value_bps']:.2f}, always waiting {m['noop_value_bps']:.2f}); confusion matrix "
        "and equity curve in the MLflow run."
    )
    return table


@app.command()
def simulate(
    run_id: Annotated[str, typer.Option("--run-id", help="MLflow run of a model logged by `train`.")],
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Buy (sell) when the predicted log return is above (below minus) this (default: COINFLOW_SIMULATION_THRESHOLD).",
            min=0.0,
        ),
    ] = None,
    passive: Annotated[
        bool,
        typer.Option(
            help="Trade with passive orders one tick inside the price (maker fee, may not fill) instead of market orders."
        ),
    ] = False,
) -> None:
    """Simulate trading on the model's test period against buy-and-hold and no-op, and log it to MLflow: a price model
    candle by candle (--threshold, --passive), the order-book action model at every book sample."""
    from training_pipeline.simulation_run import simulate_run

    settings = Settings()
    configure_logging(settings.services.log_level)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        tracking_uri = services.ensure_mlflow(settings)
        report = simulate_run(
            settings, run_id, tracking_uri, settings.simulation.threshold if threshold is None else threshold, passive
        )
    except (services.ServiceError, DataCheckError, ValueError, MlflowException) as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc
    table = Table(
        title=f"{report.pair} {report.model} (run {report.run_id}): {report.start:%Y-%m-%d %H:%M} to "
        f"{report.end:%Y-%m-%d %H:%M} UTC"
    )
    _add_outcomes(table, report.outcomes, fees=True)
    console.print(table)
    console.print(
        f"Logged as run {report.simulation_run_id} (nested under {report.run_id}). MLflow: {redact(tracking_uri)}"
    )


@app.command("mlflow-ui")
def mlflow_ui() -> None:
    """Start (or reuse) the project's MLflow tracking server and UI on 127.0.0.1:COINFLOW_MLFLOW_PORT (stop: `python -m coinflow down`)."""
    settings = Settings()
    configure_logging(settings.services.log_level)
    try:
        uri = services.ensure_mlflow(settings)
    except services.ServiceError as exc:
        console.print(f"[red]{redact(exc)}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"MLflow UI: {redact(uri)}")


register_pairs(app)

if __name__ == "__main__":
    app()
