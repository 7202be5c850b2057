"""The pairs strategy live over the topics, through the real broker: a pairs configuration logged and registered as
pairs-1m (its PairsPolicy pyfunc), one pair's spread rows put on the pair jobs' rows topic as the pair jobs publish
them (with a row of a pair not in the configuration and a repeated row), then `trade --strategy pairs` until the
input's end marker: both legs' orders filled at the rows' closes, the pair flat at the end, orders and fills on
their topics, and the same orders, fills and balances as the same rows traded in process (the backtest path)."""

from __future__ import annotations

import json
import math
import uuid
from decimal import Decimal

import mlflow
import pytest
from confluent_kafka import Producer
from mlflow import MlflowClient
from typer.testing import CliRunner

from coinflow.contracts import CHAMPION, pairs_model_name
from coinflow.hedge import NoiseVariances
from coinflow.schemas import CONTROL_END
from coinflow.settings import Settings
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import Side, Status
from coinflow.trading.pairs import PairRule
from coinflow.trading.steps import StepVenue
from inference_pipeline.__main__ import app
from inference_pipeline.execution.live import PairRowFeed
from inference_pipeline.execution.models import load_pairs_model, pairs_strategy
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import MarketEvent
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.trading import pairs_service, pairs_session, paper_account
from tests.support.feature_runs import read_topic
from training_pipeline.pairs.serving import ChosenPair, PairsConfig, log_pairs_pyfunc
from training_pipeline.tracking import register_challenger

pytestmark = pytest.mark.integration

PAIR, Y, X = "SOL-USDT__AVAX-USDT", "SOL/USDT", "AVAX/USDT"
TAKER, SLIPPAGE = Decimal("0.001"), Decimal("0.0005")
MINUTE_MS = 60_000
START_MS = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS


def spread_rows() -> list[dict]:
    """Rows of PAIR whose z swings out past the entry band and back, twice each way (warming rows first)."""
    rows = []
    for n in range(76):  # three swings: z is back at 0 at the last row
        z = math.nan if n < 5 else 3.0 * math.sin(2 * math.pi * n / 25)
        y, x = round(100 + 0.1 * n, 2), round(30 + 0.01 * (n % 7), 2)
        rows.append({"pair_id": PAIR, "window_end_ms": START_MS + n * MINUTE_MS, "y_close": y, "x_close": x,
                     "x_lag_s": 0.0, "beta": 1.2, "spread": 0.0 if math.isnan(z) else 0.01 * z, "z": z,
                     "half_life": 12.0})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def registered(base_settings: Settings, tracking_uri: str) -> Settings:
    """The configuration registered as pairs-1m v1 (champion), and the rows then an end marker on a topic of this
    module (NaN as the pair jobs' JSON writes it: null)."""
    config = PairsConfig("1m", (ChosenPair(PAIR, Y, X, NoiseVariances(1e-6, 0.0, 0.9, 1e-4)),),
                         PairRule(2.0, 0.5, 4.0), TAKER, SLIPPAGE, True)  # fmt: skip
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(pairs_model_name("1m"))
    with mlflow.start_run() as run:
        info = log_pairs_pyfunc(config, pairs_model_name("1m"))
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = register_challenger(client, pairs_model_name("1m"), info, run.info.run_id)
    client.set_registered_model_alias(pairs_model_name("1m"), CHAMPION, version)
    tag = uuid.uuid4().hex[:8]
    settings = base_settings.override(pair_jobs_rows_topic=f"pair-spread-{tag}", mlflow_tracking_uri=tracking_uri,
                                      trading_max_daily_loss=None)  # fmt: skip
    rows = spread_rows()
    other = {**rows[10], "pair_id": "ETH-USDT__BTC-USDT"}
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{settings.services.embedded_broker_port}"})
    for record in [*rows[:12], other, rows[11], *rows[12:], {"control": CONTROL_END}]:
        value = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}
        producer.produce(settings.pair_jobs.rows_topic, key=str(record.get("pair_id", "end")).encode(),
                         value=json.dumps(value).encode())  # fmt: skip
    assert producer.flush(10) == 0
    return settings


def in_process(settings: Settings, tracking_uri: str, url: str) -> ExecutionService:
    """The same rows traded without the topics: the feed's events straight into the same session."""
    model = load_pairs_model(tracking_uri, "1m", None, 1)
    service = paper_account(settings, pairs_service(settings, url, model.taker_fee, model.slippage), Y)
    session = pairs_session(settings, service, pairs_strategy(settings, model), "pairs-1m", "USDT")
    events: list[MarketEvent] = []
    feed = PairRowFeed(model.pairs, events.append)
    for record in spread_rows():
        feed.on_row(record)
    session.run(events)
    return service


def test_trade_pairs_over_the_topics(registered: Settings, tracking_uri: str, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    url = f"sqlite:///{tmp_path / 'live.db'}"
    settings = registered.override(orders_topic=f"orders-{tag}", fills_topic=f"fills-{tag}", trading_db_url=url)
    env = {**settings.as_environment(), "COLUMNS": "300"}
    done = CliRunner().invoke(app, ["trade", "--strategy", "pairs", "--interval", "1m"], env=env)
    assert done.exit_code == 0, done.output
    assert "stale_row" in done.output  # the repeated row

    fees = FeeSchedule(TAKER, TAKER)
    account = ExecutionService.restore(TradingStore(connect(url)), StepVenue(fees), RiskLimits(), fees)
    orders = list(account.orders.values())
    assert len(orders) >= 8 and all(o.status == Status.FILLED for o in orders)
    assert {o.request.product for o in orders} == {Y, X}
    first_y, first_x = orders[0], orders[1]  # an entry: one leg bought, the other sold short
    assert {first_y.request.side, first_x.request.side} == {Side.BUY, Side.SELL}
    assert first_y.client_order_id.startswith(f"pairs-{PAIR}-")
    assert account.position(Y).quantity == 0 and account.position(X).quantity == 0  # every entry exited
    fills = account.store.load().fills
    on_topic = [json.loads(m.value()) for m in read_topic(settings, settings.topics.fills)]
    assert sorted(f["fill_id"] for f in on_topic) == sorted(f.fill_id for f in fills)

    reference = in_process(registered, tracking_uri, f"sqlite:///{tmp_path / 'bt.db'}")
    assert account.orders == reference.orders and account.balances == reference.balances
    assert account.positions == reference.positions
