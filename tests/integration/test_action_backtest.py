"""The action model traded on paper through the real path: real Coinbase BTC-USD snapshots -> the feature
pipeline's book processor and Feast sink -> the offline store -> the action model trained, logged and registered
in MLflow -> `python -m inference_pipeline backtest` over its test period -> the session in MLflow and the account
in the trading database, its numbers adding up, every decision inside the held-out period."""

from __future__ import annotations

import csv
import gzip
import itertools

import orjson
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from typer.testing import CliRunner

from coinflow.books import book_key
from coinflow.exchange_files import iter_snapshot_csv
from coinflow.feature_store import feature_store
from coinflow.quality import Rejects
from coinflow.settings import Settings
from feature_pipeline.books.dataflow import BookProcessor
from feature_pipeline.sinks.feast_sink import FeastSink, single_view
from feature_repo.names import ORDERBOOK_VIEW
from inference_pipeline.__main__ import app
from inference_pipeline.execution.store import TradingStore, connect, orders_table
from inference_pipeline.execution.tracking import experiment_name
from tests.support.paths import COINBASE_SNAPSHOTS
from training_pipeline.action.train import train_action

pytestmark = pytest.mark.integration

BOOK = "coinbase:BTC-USD"
ROWS = 3_000  # about 50 minutes of books: 750 samples of 4 s


@pytest.fixture(scope="module")
def snapshot_file(tmp_path_factory):
    """The first ROWS snapshots of the bundled file, as a file of their own."""
    path = tmp_path_factory.mktemp("books") / "snapshots.csv"
    with gzip.open(COINBASE_SNAPSHOTS, "rt", newline="") as source, open(path, "w", newline="") as target:
        writer = csv.writer(target)
        for row in itertools.islice(csv.reader(source), ROWS + 1):
            writer.writerow(row)
    return path


@pytest.fixture(scope="module")
def trained(training_settings: Settings, uri: str, snapshot_file, tmp_path_factory) -> Settings:
    """The books' 4 s features in the offline store (the feature pipeline's processor and sink) and the action
    model trained on them (version 1 of action-COINBASEBTCUSD)."""
    root = tmp_path_factory.mktemp("action-bt")
    settings = training_settings.override(
        action_min_samples=300,
        simulation_taker_fee=0.0,  # labels without fees: the model acts, so the backtest has orders to check
        simulation_maker_fee=0.0,
        deep_epochs=2,
        deep_hidden_size=8,
        deep_device="cpu",
        deep_checkpoint_dir=str(root / "checkpoints"),
        deep_tensorboard_dir=root / "tensorboard",
        run_dir=root / "run",
        mlflow_tracking_uri=uri,
    )
    processor = BookProcessor(settings, Rejects("books"))
    rows = []
    for frame in iter_snapshot_csv(snapshot_file, "coinbase", "BTC-USD", Rejects("file")):
        out = processor.step(orjson.dumps(frame), book_key("coinbase", "BTC-USD"), frame["timestamp_ms"], None)
        rows += [r for r in out if "window_end_ms" in r]
    sink = FeastSink(lambda: feature_store(settings), single_view(ORDERBOOK_VIEW))
    sink.setup()
    sink.write_rows(rows)
    result = train_action(settings, BOOK, uri)
    assert result.version == "1"
    return settings


def test_the_backtest_command_trades_the_model_on_its_test_period_and_logs_the_session(
    trained: Settings, uri: str, snapshot_file, tmp_path
) -> None:
    db = f"sqlite:///{tmp_path / 'bt.db'}"
    env = {**trained.as_environment(), "COLUMNS": "200"}
    args = ["backtest", "--product", BOOK, "--book-file", str(snapshot_file), "--model-version", "1", "--db", db]
    done = CliRunner().invoke(app, args, env=env)
    assert done.exit_code == 0, done.output
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment_name(BOOK)).experiment_id])
    assert run.info.run_id in done.output
    params, metrics = run.data.params, run.data.metrics
    model_run = client.get_run(client.get_model_version("action-COINBASEBTCUSD", "1").run_id)
    assert (params["model_version"], params["model_run_id"]) == ("1", model_run.info.run_id)
    test_start, test_end = (pd.Timestamp(model_run.data.params[k]) for k in ("test_start", "test_end"))
    assert pd.Timestamp(params["start"]) == test_start and pd.Timestamp(params["end"]) == test_end
    # every order was decided inside the held-out period, at a decision time of the 4 s grid
    with connect(db).connect() as c:
        created = [r.created_ms for r in c.execute(sa.select(orders_table.c.created_ms))]
    assert all(test_start.value // 10**6 <= t <= test_end.value // 10**6 and t % 4000 == 0 for t in created)
    assert metrics["orders"] == len(created) > 0, done.output
    # the logged PnL is the account's: cash and coin marked at the last decision's mid
    recorded = TradingStore(connect(db)).load()
    assert sum(e.amount for e in recorded.ledger if e.asset == "USD" and e.kind == "deposit") == 10_000
    equity = pd.read_csv(client.download_artifacts(run.info.run_id, "equity.csv", str(tmp_path)))
    assert len(equity) == int(params["decisions"])
    assert metrics["pnl"] == pytest.approx(equity["equity"].iloc[-1] - 10_000)
    assert metrics["noop_pnl"] == 0 and "buy_and_hold_pnl" in metrics


def test_a_missing_model_is_one_line_not_a_traceback(trained: Settings, snapshot_file) -> None:
    args = ["backtest", "--product", "coinbase:SOL-USD", "--book-file", str(snapshot_file)]
    done = CliRunner().invoke(app, args, env=trained.as_environment())
    assert done.exit_code == 1
    assert "no alias champion of the registered model action-COINBASESOLUSD" in done.output
    assert "Traceback" not in done.output
