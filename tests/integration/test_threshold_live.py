"""The threshold strategy live over the topics, through the real broker: a price model trained and registered in
MLflow, its pair's candle rows of the test period put on the features topic as the candle pipeline publishes them
(each closed candle with its indicators, keyed by the pair), then `trade --strategy threshold` until the input's end
marker: the same orders, fills, cash, positions and decisions as `backtest --strategy threshold` over the same
period, to the last digit. Rows of another pair and a repeated candle on the topic change nothing; a restarted
session replays the market to where it stopped and adds nothing."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pandas as pd
import pytest
from confluent_kafka import Producer
from mlflow import MlflowClient
from typer.testing import CliRunner

from coinflow.contracts import registered_model_name
from coinflow.feature_store import feature_store, read_entity_rows, service_rows
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.steps import StepVenue
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, ohlcv_view, regression_service
from inference_pipeline.__main__ import app
from inference_pipeline.execution.backtest import in_period
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.runs import BacktestRun, backtest_threshold
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.tracking import experiment_name
from inference_pipeline.execution.trading import run_threshold_trading
from tests.integration.conftest import write_history
from tests.support.feature_runs import read_topic
from training_pipeline.price.train import TrainingOptions, train_pair

pytestmark = pytest.mark.integration

PAIR = "XRP/USD"  # no other module's pair: the offline store and the registry hold only this module's
HORIZON = 1
TAKER, MAKER = "0.0002", "0.0001"  # low fees, so that the model's predictions clear the hurdle and it trades
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def trained(training_settings: Settings, base_settings: Settings, uri: str) -> Settings:
    """A predictable history of PAIR on a cent grid, an XGBoost price model of it (version 1), and its test period's
    candle rows on a features topic of this module, as the candle pipeline publishes them, then an end marker."""
    tag = uuid.uuid4().hex[:8]
    settings = training_settings.override(
        trading_kraken_taker_fee=TAKER,
        trading_kraken_maker_fee=MAKER,
        mlflow_tracking_uri=uri,
        run_dir=base_settings.services.run_dir,  # the session's broker
        embedded_broker_port=base_settings.services.embedded_broker_port,
        commit_interval_s=0.2,
        metrics_port=0,
        trading_metrics_port=0,
        features_topic=f"features-{tag}",
    )
    write_history(settings, PAIR, phi=0.5, n=3000, seed=5, decimals=2)
    train_pair(settings, PAIR, TrainingOptions.from_settings(settings, ("xgboost",), trials=2), uri)
    records = feature_records(settings, uri)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}"})
    noise = [{**records[3], "pair": "ETH/USD"}, records[3]]  # another pair's row; a candle seen again
    for record in [*records[:5], *noise, *records[5:], {"control": CONTROL_END, "pair": PAIR}]:
        producer.produce(settings.topics.features, key=record["pair"].encode(), value=json.dumps(record).encode())
    assert producer.flush(10) == 0
    return settings


def feature_records(settings: Settings, uri: str) -> list[dict]:
    """The features topic's rows of PAIR over the model's test period: each closed candle (its window, OHLCV) with
    its indicators (null while warming up), from the offline store the pipeline wrote them to."""
    client = MlflowClient(uri)
    params = client.get_run(client.get_model_version(registered_model_name(PAIR, HORIZON), "1").run_id).data.params
    store = feature_store(settings)
    candles = read_entity_rows(store, ohlcv_view("1m"), ENTITY, PAIR, ["close"])
    rows, features = service_rows(store, candles[[ENTITY, EVENT_TIMESTAMP]], regression_service("1m"))
    period = in_period(rows, params["test_start"], params["test_end"])
    assert len(period) > 100
    out = []
    for values in period.to_dict("records"):
        end_ms = int(pd.Timestamp(values[EVENT_TIMESTAMP]).value // 1_000_000)
        row = {name: None if pd.isna(values[name]) else float(values[name]) for name in features}
        row["trade_count"] = int(values["trade_count"])
        out.append({"pair": PAIR, "interval": "1m", "window_start_ms": end_ms - MINUTE_MS, "window_end_ms": end_ms,
                    **row})  # fmt: skip
    return out


def topics_of_this_test(settings: Settings, db: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return settings.override(orders_topic=f"orders-{tag}", fills_topic=f"fills-{tag}", trading_db_url=db)


def backtest(settings: Settings, uri: str, tmp_path) -> BacktestRun:
    return backtest_threshold(settings, uri, PAIR, HORIZON, version=1, db_url=f"sqlite:///{tmp_path / 'bt.db'}")


def test_the_live_session_trades_exactly_as_the_backtest(trained: Settings, uri: str, tmp_path) -> None:
    settings = topics_of_this_test(trained, f"sqlite:///{tmp_path / 'live.db'}")
    live = run_threshold_trading(settings, uri, PAIR, HORIZON, version=1,
                                 consumer_group=f"it-trading-{uuid.uuid4().hex[:8]}")  # fmt: skip
    expected = backtest(trained, uri, tmp_path)
    assert live.result is not None and live.resumed_at_ms is None
    assert live.feed_rejects.counts == {"stale_candle": 1}  # the candle seen again; the other pair's row ignored

    service, reference = live.result.service, expected.result.service
    assert service.orders == reference.orders  # every request, status, fill quantity, average price and fee
    assert service.balances == reference.balances and service.positions == reference.positions
    assert live.result.log.equity == expected.result.log.equity  # the same decisions at the same times
    assert live.result.log.skipped == expected.result.log.skipped
    fills = service.store.load().fills
    assert sorted(fills, key=lambda f: f.fill_id) == sorted(reference.store.load().fills, key=lambda f: f.fill_id)
    assert {f.side for f in fills} == {"buy", "sell"} and len(service.orders) > 5

    on_topic = [json.loads(m.value()) for m in read_topic(settings, settings.topics.fills)]
    assert sorted(f["fill_id"] for f in on_topic) == sorted(f.fill_id for f in fills)
    assert len(read_topic(settings, settings.topics.orders)) == len(service.store.load().events)
    params = MlflowClient(uri).get_run(live.run_id).data.params
    assert (params["strategy"], params["pair"], params["horizon_minutes"], params["exchange"], params["venue"]) == (
        "threshold",
        PAIR,
        str(HORIZON),
        "kraken",
        "paper",
    )


def test_the_trade_command_and_its_restart(trained: Settings, uri: str, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**topics_of_this_test(trained, url).as_environment(), "COLUMNS": "300"}
    args = ["trade", "--strategy", "threshold", "--pair", PAIR, "--horizon", str(HORIZON), "--model-version", "1"]
    done = CliRunner().invoke(app, args, env=env)
    assert done.exit_code == 0, done.output
    expected = backtest(trained, uri, tmp_path).result.service
    account = open_account(url)
    assert account.orders == expected.orders and account.balances == expected.balances
    assert account.positions == expected.positions
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment_name(PAIR)).experiment_id])
    assert [r.data.tags["session"] for r in runs if r.info.run_id in done.output] == ["live"]

    # a restart replays the market to where the account stopped and decides nothing before it: nothing new
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0, again.output
    assert "after replaying the session to where it had stopped" in again.output
    restarted = open_account(url)
    assert restarted.orders == expected.orders and restarted.balances == expected.balances

    coinbase = CliRunner().invoke(app, [*args, "--venue", "coinbase", "--live"], env=env)
    assert coinbase.exit_code == 2 and "--strategy threshold trades on the paper venue only" in coinbase.output
    unnamed = CliRunner().invoke(app, ["trade", "--strategy", "threshold"], env=env)
    assert unnamed.exit_code == 2 and "--strategy threshold needs --pair" in unnamed.output
    missing = CliRunner().invoke(app, ["trade", "--strategy", "threshold", "--pair", "DOT/USD"], env=env)
    assert missing.exit_code == 1 and "no alias champion of the registered model price-DOTUSD-1m" in missing.output


def open_account(url: str) -> ExecutionService:
    """The account in a trading database, folded back as a restarted process would."""
    fees = FeeSchedule(Decimal(MAKER), Decimal(TAKER))
    return ExecutionService.restore(TradingStore(connect(url)), StepVenue(fees), RiskLimits(), fees)
