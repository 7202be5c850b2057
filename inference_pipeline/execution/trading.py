"""`trade`: a strategy live over the topics through the execution service, on the paper venue or on Coinbase.

The account lives in the trading database (COINFLOW_TRADING_DB_URL): a new
one is funded with the starting quote; an existing one is folded back from
the database, and the session replays the topics from their beginning to
the last recorded request or report, handing the paper venue the recorded
requests at their times and deciding nothing (`TradingSession.recover`), so
that the venue's book, queues and orders are exactly where they were when
the process stopped; then it trades on. One Quix application reads the book's
frames and feature rows (`LiveFeed` merges them in backtest order), every
order event and fill goes to the ``orders`` and ``fills`` topics, and the
kill switch set by another process is read every second; the session's
Prometheus metrics are served on COINFLOW_TRADING_METRICS_PORT (`metrics.py`).
A finite input (a replay) ends the session at its end marker; a live one runs
until stopped.

The threshold strategy (`run_threshold_trading`) trades a price model candle
by candle on the step venue, reading the ``features`` topic (`CandleFeed`),
through the same loop (`trade_session`). Its restart is the same replay: the
step venue holds nothing but resting orders, rebuilt by handing it the
recorded requests at their candles (the strategy's market orders fill at
once, so a restart finds none resting).

The pairs strategy (`run_pairs_trading`) trades every pair of the registered
pairs configuration off the pair jobs' rows (`PairRowFeed`: each row's legs'
closes step the step venue, then the pair decides), through the same loop,
each change of position two market orders whose legs must both fill within
COINFLOW_TRADING_LEG_TIMEOUT_MS (else the filled one is unwound).

On Coinbase (``--venue coinbase --live``) the gateway is the venue: a new
account's ledger opens with the exchange's balances, and a restart follows
again the live orders the database holds (`CoinbaseGateway.adopt`) and asks
the exchange about those whose fate is unknown before trading again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.models import TopicConfig

from coinflow import services
from coinflow.quality import Rejects
from coinflow.schemas import pair_slug
from coinflow.settings import Settings
from coinflow.streaming import json_topic, new_application, run_application, topic_config
from coinflow.trading.fees import FeeSchedule
from coinflow.trading.orders import EventKind, Order, OrderEvent, split_product
from coinflow.trading.pairs import common_quote
from coinflow.trading.steps import StepVenue, printed
from inference_pipeline.execution.backtest import BacktestResult, exchange_fees, paper_service, risk_limits, summarise
from inference_pipeline.execution.coinbase import CoinbaseGateway
from inference_pipeline.execution.live import CandleFeed, LiveFeed, PairRowFeed
from inference_pipeline.execution.metrics import TradingMetrics, serve_metrics, stop_metrics
from inference_pipeline.execution.models import (
    ActionDecider,
    PriceDecider,
    action_strategy,
    load_action_model,
    load_pairs_model,
    load_price_model,
    pairs_strategy,
    session_params,
    threshold_strategy,
)
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import MarketEvent, TradingSession
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.strategies import PairsStrategy
from inference_pipeline.execution.tracking import log_session
from inference_pipeline.model_store import sequence_length

logger = logging.getLogger(__name__)

CONTROLS_EVERY_S = 1.0


def order_record(event: OrderEvent, order: Order) -> dict[str, Any]:
    """The ``orders`` topic's record of one order event: the event and the order's state after it."""
    r = order.request
    return {
        "client_order_id": r.client_order_id,
        "event": str(event.kind),
        "at_ms": event.at_ms,
        "status": str(order.status),
        "venue": r.venue,
        "product": r.product,
        "side": str(r.side),
        "type": str(r.type),
        "quantity": format(r.quantity, "f"),
        "limit_price": None if r.limit_price is None else format(r.limit_price, "f"),
        "filled": format(order.filled, "f"),
        "reason": event.reason,
        "strategy": r.strategy,
    }


def fill_record(event: OrderEvent) -> dict[str, Any]:
    """The ``fills`` topic's record of one fill (exact decimals as text)."""
    f = event.fill
    assert f is not None
    return {
        "fill_id": f.fill_id,
        "client_order_id": f.client_order_id,
        "venue": f.venue,
        "product": f.product,
        "side": str(f.side),
        "price": format(f.price, "f"),
        "quantity": format(f.quantity, "f"),
        "fee": format(f.fee, "f"),
        "liquidity": str(f.liquidity),
        "exchange_ms": f.exchange_ms,
        "local_ms": f.local_ms,
    }


class TopicPublisher:
    """A service listener putting every applied order event on ``orders`` and every fill on ``fills``."""

    def __init__(self, produce: Callable[[str, str, dict[str, Any]], None], orders: str, fills: str) -> None:
        self.produce = produce
        self.orders, self.fills = orders, fills

    def __call__(self, event: OrderEvent, order: Order) -> None:
        self.produce(self.orders, order.client_order_id, order_record(event, order))
        if event.kind == EventKind.FILL:
            self.produce(self.fills, order.client_order_id, fill_record(event))


def recovery_point(service: ExecutionService) -> int | None:
    """The time of the last request or report the account recorded (None: a new account)."""
    times = [r.at_ms for r in service.venue_requests] + [o.updated_ms for o in service.orders.values()]
    return max(times) if times else None


@dataclass(frozen=True)
class TradingRun:
    result: BacktestResult | None
    run_id: str | None
    feed_rejects: Rejects
    resumed_at_ms: int | None
    metrics: TradingMetrics | None = None


def coinbase_service(settings: Settings, db_url: str, gateway: CoinbaseGateway, now_ms: int) -> ExecutionService:
    """The Coinbase account in `db_url`, its gateway following again the live orders a previous process sent (by
    their exchange ids; an order never acknowledged is asked for by its client id) and those of unknown fate
    settled; a new account's ledger opens with the exchange's balances."""
    fees = exchange_fees(settings, "coinbase")
    service = ExecutionService.restore(TradingStore(connect(db_url)), gateway, risk_limits(settings), fees)
    if not service.balances:
        for asset, balance in sorted(gateway.balances().items()):
            if balance.total:
                service.deposit(asset, balance.total, now_ms, ref="balance on Coinbase when the account was opened")
    sent = {r.client_order_id: r.at_ms for r in service.venue_requests if r.kind == "send"}
    recorded = service.store.load()
    for order in service.open_orders():
        name = order.client_order_id
        if name in sent:
            fill_ids = [f.fill_id for f in recorded.fills if f.client_order_id == name]
            gateway.adopt(order.request, order.venue_order_id, sent[name], fill_ids, order.filled)
    service.handle(gateway.reconcile_unknown(now_ms))
    service.reconcile(now_ms)
    return service


Subscribe = Callable[[Application, TopicConfig, Callable[[MarketEvent], None]], Rejects]


def run_trading(
    settings: Settings,
    tracking_uri: str,
    book: str,
    alias: str | None = None,
    version: int | None = None,
    consumer_group: str | None = None,
    venue: str = "paper",
) -> TradingRun:
    """Trade the action model of `book` over its topics, on paper or on Coinbase (`venue`), until the input ends or
    the process is stopped."""
    broker = services.ensure_broker(settings)
    model = load_action_model(tracking_uri, book, alias, version)
    exchange, _, product = book.partition(":")
    gateway = None
    if venue == "coinbase":
        if exchange != "coinbase":
            raise ValueError(f"--venue coinbase trades Coinbase books, not {book}")
        gateway = CoinbaseGateway.from_settings(settings)
        service = coinbase_service(settings, settings.trading_db_url, gateway, int(time.time() * 1000))
    else:
        service = paper_account(settings, paper_service(settings, settings.trading_db_url, exchange), product)

    def subscribe(app: Application, config: TopicConfig, deliver: Callable[[MarketEvent], None]) -> Rejects:
        feed = LiveFeed(book, model.features, deliver, on_end=app.stop)
        app.dataframe(json_topic(app, settings.topics.book_updates, config)).update(
            lambda value, key, *_: feed.on_frame(value, key), metadata=True
        )
        app.dataframe(json_topic(app, settings.topics.book_features, config)).update(
            lambda value, key, *_: feed.on_features(value, key), metadata=True
        )
        return feed.rejects

    strategy = action_strategy(settings, model, ActionDecider(model, book))
    params = session_params(settings, model, {"book": book}, venue)
    return trade_session(settings, tracking_uri, broker, TradingSession(service, strategy, product,
                         settings.trading.max_book_age_ms), book, params, subscribe, consumer_group, gateway)  # fmt: skip


def run_threshold_trading(
    settings: Settings,
    tracking_uri: str,
    pair: str,
    horizon_minutes: int,
    exchange: str = "kraken",
    alias: str | None = None,
    version: int | None = None,
    consumer_group: str | None = None,
) -> TradingRun:
    """Trade the price model of `pair` and horizon with the threshold strategy on the step venue, candle by candle
    off the ``features`` topic (`CandleFeed`), with `exchange`'s fees, until the input ends or the process is
    stopped: the same decisions and fills as `backtest --strategy threshold` over the same candles."""
    broker = services.ensure_broker(settings)
    model = load_price_model(tracking_uri, pair, horizon_minutes, alias, version)
    if sequence_length(model.params) > 1:
        raise ValueError(f"{model.name} v{model.version} reads {sequence_length(model.params)} candles per "
                         "prediction: live threshold sessions trade tabular price models only")  # fmt: skip
    service = paper_account(settings, paper_service(settings, settings.trading_db_url, exchange, candles=True), pair)

    def subscribe(app: Application, config: TopicConfig, deliver: Callable[[MarketEvent], None]) -> Rejects:
        feed = CandleFeed(pair, model.params["interval"], model.features, deliver, on_end=app.stop)
        app.dataframe(json_topic(app, settings.topics.features, config)).update(
            lambda value, key, *_: feed.on_features(value, key), metadata=True
        )
        return feed.rejects

    strategy = threshold_strategy(settings, PriceDecider(model))
    market = {"pair": pair, "horizon_minutes": horizon_minutes, "exchange": exchange}
    params = session_params(settings, model, market, "paper", strategy="threshold")
    return trade_session(settings, tracking_uri, broker, TradingSession(service, strategy, pair,
                         settings.trading.max_book_age_ms), pair, params, subscribe, consumer_group)  # fmt: skip


def run_pairs_trading(
    settings: Settings,
    tracking_uri: str,
    interval: str = "1m",
    alias: str | None = None,
    version: int | None = None,
    consumer_group: str | None = None,
) -> TradingRun:
    """Trade every pair of the registered pairs configuration of `interval` on the step venue, off the pair jobs'
    rows (COINFLOW_PAIR_JOBS_ROWS_TOPIC, `PairRowFeed`), with the costs its decisions assumed, on a margin paper
    account unless COINFLOW_TRADING_PAIRS_MARGIN is off; until the input ends or the process is stopped."""
    broker = services.ensure_broker(settings)
    model = load_pairs_model(tracking_uri, interval, alias, version)
    legs = sorted({leg for pair in model.pairs.values() for leg in pair})
    quote = common_quote(legs)
    service = pairs_service(settings, settings.trading_db_url, model.taker_fee, model.slippage)
    paper_account(settings, service, legs[0])

    def subscribe(app: Application, config: TopicConfig, deliver: Callable[[MarketEvent], None]) -> Rejects:
        feed = PairRowFeed(model.pairs, deliver, on_end=app.stop)
        app.dataframe(json_topic(app, settings.pair_jobs.rows_topic, config)).update(
            lambda value, key, *_: feed.on_row(value, key), metadata=True
        )
        return feed.rejects

    name = model.registered.name
    market = {"interval": interval, "pairs": ",".join(sorted(model.pairs))}
    params = session_params(settings, model.registered, market, "paper", strategy="pairs")
    session = pairs_session(settings, service, pairs_strategy(settings, model), name, quote)
    return trade_session(settings, tracking_uri, broker, session, name, params, subscribe, consumer_group)


def pairs_service(settings: Settings, db_url: str, taker_fee: Decimal, slippage: Decimal) -> ExecutionService:
    """The pairs strategy's paper account in `db_url`: the step venue with the configuration's taker fee and slippage
    (as the pairs backtest trades), shorts allowed when COINFLOW_TRADING_PAIRS_MARGIN is on."""
    fees = FeeSchedule(maker=taker_fee, taker=taker_fee)
    venue = StepVenue(fees, printed(settings.simulation.touch_fill), slippage)
    limits = replace(risk_limits(settings), allow_short=settings.trading.pairs_margin)
    return ExecutionService.restore(TradingStore(connect(db_url)), venue, limits, fees)


def pairs_session(
    settings: Settings, service: ExecutionService, strategy: PairsStrategy, name: str, quote: str
) -> TradingSession:
    """The session of a pairs strategy: decisions named `name`, equity in `quote`, legs undone after
    COINFLOW_TRADING_LEG_TIMEOUT_MS."""
    return TradingSession(service, strategy, name, settings.trading.max_book_age_ms, quote_asset=quote,
                          leg_timeout_ms=settings.trading.leg_timeout_ms)  # fmt: skip


def paper_account(settings: Settings, service: ExecutionService, product: str) -> ExecutionService:
    """A paper account as restored from the database; a new one is funded with the starting quote."""
    if not service.balances:
        service.deposit(split_product(product)[1], settings.trading.initial_quote, int(time.time() * 1000),
                        ref="paper account opened")  # fmt: skip
    return service


def trade_session(
    settings: Settings,
    tracking_uri: str,
    broker: services.Broker,
    session: TradingSession,
    market: str,
    params: dict[str, object],
    subscribe: Subscribe,
    consumer_group: str | None = None,
    gateway: CoinbaseGateway | None = None,
) -> TradingRun:
    """The live loop of every strategy: `session` (after replaying the market to where a restarted paper account
    stopped) over the events `subscribe` wires from the topics, orders and fills on their topics, the kill switch
    read every second, metrics served; the session in MLflow under `market` (a book or a pair)."""
    service = session.service
    metrics = TradingMetrics(session)
    resumed_at = recovery_point(service)
    if resumed_at is not None and gateway is None:
        session.recover(service.venue_requests, resumed_at)
    # Every start reads the topics from their beginning: a restarted paper session replays the market to where it
    # stopped (its consumer offsets would skip what the paper venue must see again).
    group = consumer_group or f"trading-{pair_slug(market)}-{uuid.uuid4().hex[:8]}"
    app = new_application(settings, broker, consumer_group=group)
    config: TopicConfig = topic_config(settings)
    producer = app.get_producer()
    service.listeners.append(
        TopicPublisher(
            lambda topic, key, value: producer.produce(topic, value=orjson.dumps(value), key=key),
            settings.topics.orders,
            settings.topics.fills,
        )
    )
    checked = [time.monotonic()]

    def deliver(event: MarketEvent) -> None:
        if time.monotonic() - checked[0] >= CONTROLS_EVERY_S:
            service.sync_controls(event.at_ms)
            if gateway is not None:
                service.handle(gateway.reconcile_unknown(event.at_ms))
            checked[0] = time.monotonic()
        session.on_event(event)

    for name in (settings.topics.orders, settings.topics.fills):
        json_topic(app, name, config)
    feed_rejects = subscribe(app, config, deliver)
    logger.warning("%s trading %s with %s v%s (account %s)", service.venue.name, market, params["model_name"],
                   params["model_version"], settings.trading_db_url)  # fmt: skip
    server = serve_metrics(metrics.registry, settings.trading.metrics_port)
    try:
        run_application(app, broker, None)
    finally:
        stop_metrics(server)
        producer.flush()
        if gateway is not None:
            gateway.close()
    last = session.log.equity[-1].at_ms if session.log.equity else None
    if last is not None:
        session.drain(last)
    if not session.log.equity:
        return TradingRun(None, None, feed_rejects, resumed_at, metrics)
    result = BacktestResult(session.log, service, *summarise(session.log, service, settings.trading.initial_quote))
    params = {**params, "decisions": len(session.log.equity)}
    run_id = log_session(tracking_uri, market, params, {"session": "live", "database": settings.trading_db_url}, result)
    return TradingRun(result, run_id, feed_rejects, resumed_at, metrics)
