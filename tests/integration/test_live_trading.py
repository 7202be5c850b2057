"""One strategy, both ways, over the same recorded data, and through a SIGKILL: real Coinbase BTC-USD snapshots replayed through the
feature pipeline onto the real broker, then the action model traded live over the topics (`run_trading`) and
backtested over the file and the offline store (`backtest_action`): the same orders and fills, to the last digit.
The live session also puts every order event and fill on the `orders` and `fills` topics, and stops at the
replay's end marker. A `trade` process killed with SIGKILL half-way and started again ends with exactly the orders,
cash, positions and open orders of a session that was never interrupted."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coinflow.settings import Settings
from coinflow.trading.fees import FeeSchedule
from inference_pipeline.execution.paper import PaperVenue
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.runs import backtest_action
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.store import TradingStore, connect, fills_table, orders_table
from inference_pipeline.execution.trading import run_trading
from tests.support.coinbase_trading_mock import CoinbaseTradingMock
from tests.support.feature_runs import env_for, read_topic
from tests.support.paths import COINBASE_SNAPSHOTS
from tests.support.polling import wait_until
from tests.support.ports import free_port, running
from training_pipeline.action.train import train_action

pytestmark = pytest.mark.integration

BOOK = "coinbase:BTC-USD"
ROWS = 2_400  # 40 minutes of books: 600 samples of 4 s


@pytest.fixture
def replayed(settings: Settings, tmp_path) -> tuple[Settings, object]:
    """The first ROWS snapshots replayed by `replay-snapshots` onto topics of this test."""
    path = tmp_path / "snapshots.csv"
    with gzip.open(COINBASE_SNAPSHOTS, "rt", newline="") as source, open(path, "w", newline="") as target:
        csv.writer(target).writerows(itertools.islice(csv.reader(source), ROWS + 1))
    tag = uuid.uuid4().hex[:8]
    topics = settings.override(
        book_updates_topic=f"book-updates-{tag}",
        book_topic=f"book-{tag}",
        book_features_topic=f"book-features-{tag}",
        orders_topic=f"orders-{tag}",
        fills_topic=f"fills-{tag}",
        book_consumer_group=f"it-books-{tag}",
        action_min_samples=300,
        simulation_taker_fee=0.0,  # labels without fees: the model acts, so there are orders to compare
        simulation_maker_fee=0.0,
        deep_epochs=2,
        deep_hidden_size=8,
        deep_device="cpu",
        deep_checkpoint_dir=str(tmp_path / "checkpoints"),
        deep_tensorboard_dir=tmp_path / "tensorboard",
        trading_max_daily_loss=None,
        trading_trade_fraction="0.2",  # a fifth of what is free each time: many orders, not one
    )
    command = [sys.executable, "-m", "feature_pipeline", "replay-snapshots", str(path), "--product", BOOK]
    done = subprocess.run(command, env=env_for(topics), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return topics, path


def test_the_live_session_over_the_topics_trades_exactly_as_the_backtest(replayed, tracking_uri, tmp_path) -> None:
    settings, path = replayed
    trained = train_action(settings, BOOK, tracking_uri)
    live_settings = settings.override(trading_db_url=f"sqlite:///{tmp_path / 'live.db'}")
    live = run_trading(live_settings, tracking_uri, BOOK, version=int(trained.version),
                       consumer_group=f"it-trading-{uuid.uuid4().hex[:8]}")  # fmt: skip
    assert live.result is not None
    backtest = backtest_action(settings, tracking_uri, BOOK, path, start="2000-01-01", end="2100-01-01",
                               version=int(trained.version), db_url=f"sqlite:///{tmp_path / 'backtest.db'}")  # fmt: skip

    live_orders, backtest_orders = live.result.service.orders, backtest.result.service.orders
    assert live_orders == backtest_orders  # every request, status, fill quantity, average price and fee
    assert live.result.service.balances == backtest.result.service.balances
    assert live.result.log.equity == backtest.result.log.equity  # the same decisions at the same times
    assert len(live_orders) > 5 and any(o.filled for o in live_orders.values()), live.result.metrics

    fills = [json.loads(m.value()) for m in read_topic(settings, settings.topics.fills)]
    orders = [json.loads(m.value()) for m in read_topic(settings, settings.topics.orders)]
    recorded = live.result.service.store.load()
    assert sorted(f["fill_id"] for f in fills) == sorted(f.fill_id for f in recorded.fills)
    assert len(orders) == len(recorded.events)
    assert {o["client_order_id"] for o in orders} <= set(live_orders)
    # the session's metrics are the database's numbers; every fill was timed
    assert live.metrics is not None
    scraped = metric_values(generate_latest(live.metrics.registry).decode())
    assert scraped["coinflow_trading_fills_total"] == len(recorded.fills)
    assert scraped["coinflow_trading_order_fill_latency_seconds_count"] == len(recorded.fills)
    assert scraped["coinflow_trading_orders"] == len(live_orders)


def metric_values(exposition: str) -> dict[str, float]:
    """Each sample name's values added up over its labels (buckets aside)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def test_a_session_killed_mid_way_and_restarted_ends_exactly_as_an_uninterrupted_one(
    replayed, tracking_uri, tmp_path
) -> None:
    settings, _ = replayed
    version = int(train_action(settings, BOOK, tracking_uri).version)
    whole = run_trading(settings.override(trading_db_url=f"sqlite:///{tmp_path / 'whole.db'}"), tracking_uri, BOOK,
                        version=version, consumer_group=f"it-trading-{uuid.uuid4().hex[:8]}")  # fmt: skip
    assert whole.result is not None
    total = len(whole.result.service.orders)
    assert total > 5  # (resting orders across a crash: test_execution_service's recovery test, at many points)

    url = f"sqlite:///{tmp_path / 'killed.db'}"
    env = env_for(settings.override(trading_db_url=url, mlflow_tracking_uri=tracking_uri)) | {"COLUMNS": "300"}
    command = [sys.executable, "-m", "inference_pipeline", "trade", "--product", BOOK, "--model-version", str(version)]
    port = free_port()
    first_env = env | {"COINFLOW_TRADING_METRICS_PORT": str(port)}
    first = subprocess.Popen(command, env=first_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine = sa.create_engine(url)

    def recorded(table: sa.Table) -> int:
        try:
            with engine.connect() as c:
                return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        except sa.exc.OperationalError:  # not created yet
            return 0

    wait_until(lambda: first.poll() is not None or recorded(orders_table) >= total // 2, timeout_s=180, every_s=0.02)
    assert first.poll() is None, first.stderr.read().decode()[-3000:] if first.stderr else ""
    at_wait = recorded(orders_table)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        scraped = metric_values(response.read().decode())  # the running process's own endpoint
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    at_kill = recorded(orders_table)
    assert total // 2 <= at_kill < total, (at_kill, total)
    # what it served follows the database (an order or fill is counted once written), while it kept trading
    assert at_wait - 1 <= scraped["coinflow_trading_orders"] <= at_kill
    assert scraped["coinflow_trading_fills_total"] <= recorded(fills_table)

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "after replaying the session to where it had stopped" in second.stdout

    restarted = open_account(url)
    expected = whole.result.service
    assert restarted.orders == expected.orders
    assert restarted.balances == expected.balances
    assert restarted.positions == expected.positions
    assert {o.client_order_id for o in restarted.open_orders()} == {o.client_order_id for o in expected.open_orders()}


def open_account(url: str) -> ExecutionService:
    """The account in a trading database, folded back as a restarted process would."""
    venue = PaperVenue(FeeSchedule(D(0), D(0)))
    return ExecutionService.restore(TradingStore(connect(url)), venue, RiskLimits(), venue.fees)


def test_on_coinbase_the_session_sends_its_orders_to_the_exchange_and_keeps_what_it_answers(
    replayed, tracking_uri, tmp_path
) -> None:
    """The same session with the Coinbase gateway as its venue, against the project's local Advanced Trade server
    (which checks every request's ES256 JWT): each order the model makes reaches the exchange once, and the
    database holds exactly the exchange's fills, with its fees, and balances that follow from them."""
    settings, _ = replayed
    version = int(train_action(settings, BOOK, tracking_uri).version)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    name = "organizations/org-1/apiKeys/key-1"
    mock = CoinbaseTradingMock(
        name, key.public_key(), quotes={"BTC-USD": ("6889.00", "6889.01")}, balances={"USD": "10000", "BTC": "1"}
    )
    with running(mock.app) as url:
        live = settings.override(
            coinbase_rest_url=url,
            coinbase_api_key=name,
            coinbase_api_secret=pem,
            trading_db_url=f"sqlite:///{tmp_path / 'coinbase.db'}",
            trading_gateway_poll_interval_s=0.0,
        )
        run = run_trading(live, tracking_uri, BOOK, version=version,
                          consumer_group=f"it-trading-{uuid.uuid4().hex[:8]}", venue="coinbase")  # fmt: skip
    assert run.result is not None
    service = run.result.service
    assert len(service.orders) > 5 and mock.fills
    at_exchange = [o.client_order_id for o in mock.orders.values()]
    assert sorted(at_exchange) == sorted(service.orders)  # every order reached the exchange, once
    recorded = service.store.load()
    assert sorted((f.fill_id, f.price, f.quantity, f.fee) for f in recorded.fills) == sorted(
        (m.entry_id, m.price, m.size, m.commission) for m in mock.fills
    )
    assert service.bad_reports == {} and all(s.status != 401 for s in mock.seen)
    opened = {"USD": D(10_000), "BTC": D(1)}
    for asset, start in opened.items():
        spent = sum(e.amount for e in recorded.ledger if e.asset == asset and e.kind != "deposit")
        assert service.balances[("coinbase", asset)] == start + spent
