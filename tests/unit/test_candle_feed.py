"""The live candle feed of the threshold strategy: each closed candle of the pair off the features topic is a candle
event and then the decision on its row, at its window end; other pairs and intervals are ignored; bad rows,
duplicates and candles out of order are counted and skipped, never fatal. And a threshold session on the step venue
restarted after a crash, replaying the market to where it stopped, ends exactly as one that never stopped."""

from __future__ import annotations

from decimal import Decimal

import pytest

from coinflow.trading.fees import FeeSchedule
from coinflow.trading.steps import StepVenue
from inference_pipeline.execution.live import CandleFeed
from inference_pipeline.execution.risk import RiskLimits
from inference_pipeline.execution.service import ExecutionService
from inference_pipeline.execution.session import CandleEvent, DecisionEvent, MarketEvent, TradingSession
from inference_pipeline.execution.store import TradingStore, connect
from inference_pipeline.execution.strategies import MarketView, ThresholdStrategy
from inference_pipeline.execution.trading import recovery_point

PAIR = "XRP/USD"
MINUTE = 60_000


def row(end_ms: int, close: float = 0.5, pair: str = PAIR, interval: str = "1m", **extra: object) -> dict:
    """A features-topic row as the candle pipeline publishes it: the candle, then its indicators."""
    return {
        "pair": pair,
        "interval": interval,
        "window_start_ms": end_ms - (MINUTE if interval == "1m" else 5 * MINUTE),
        "window_end_ms": end_ms,
        "open": close,
        "high": close + 0.01,
        "low": close - 0.01,
        "close": close,
        "volume": 3.0,
        "vwap": close,
        "trade_count": 4,
        "rsi_14": 55.5,
        **extra,
    }


def feed() -> tuple[CandleFeed, list[MarketEvent], list[bool]]:
    got: list[MarketEvent] = []
    ended: list[bool] = []
    return CandleFeed(PAIR, "1m", ["close", "rsi_14"], got.append, lambda: ended.append(True)), got, ended


def test_a_candle_is_its_candle_event_then_its_decision_at_its_window_end() -> None:
    candles, got, ended = feed()
    candles.on_features(row(MINUTE, close=0.1, rsi_14=None), PAIR)
    candle, decision = got
    # prices as the floats print (0.1 - 0.01 is 0.09000000000000001), as a backtest reads them from the store
    assert candle == CandleEvent(PAIR, Decimal("0.1"), Decimal("0.11"), Decimal("0.09000000000000001"),
                                 Decimal("0.1"), MINUTE)  # fmt: skip
    assert isinstance(decision, DecisionEvent) and decision.at_ms == MINUTE and decision.features["close"] == 0.1
    assert decision.features["rsi_14"] != decision.features["rsi_14"]  # warming up: null is NaN, as offline
    candles.on_features({"control": "end", "pair": "BTC/USD"}, "BTC/USD")
    assert not ended
    candles.on_features({"control": "end", "pair": PAIR}, PAIR)
    candles.on_features(row(2 * MINUTE), PAIR)  # nothing after the end
    assert ended == [True] and len(got) == 2 and candles.rejects.counts == {}


def test_other_pairs_and_intervals_are_ignored() -> None:
    candles, got, _ = feed()
    candles.on_features(row(MINUTE, pair="BTC/USD"), "BTC/USD")
    candles.on_features(row(5 * MINUTE, interval="5m"), PAIR)
    candles.on_features(row(MINUTE), PAIR)
    assert [e.at_ms for e in got] == [MINUTE, MINUTE] and candles.rejects.counts == {}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"close": None}, "non_numeric_or_nan"),
        ({"open": 0.0, "low": 0.0}, "non_positive_price_or_negative_volume"),
        ({"high": -1.0}, "non_positive_price_or_negative_volume"),
        ({"window_start_ms": 1}, "window_not_its_interval"),
        ({"interval": None}, "missing_pair_or_interval"),
    ],
)
def test_bad_rows_are_counted_and_skipped(bad: dict, reason: str) -> None:
    candles, got, _ = feed()
    candles.on_features(row(MINUTE) | bad, PAIR)
    candles.on_features(row(2 * MINUTE), PAIR)
    assert candles.rejects.counts == {reason: 1}
    assert [e.at_ms for e in got] == [2 * MINUTE, 2 * MINUTE]


def test_missing_prices_and_non_objects_are_counted() -> None:
    candles, got, _ = feed()
    missing = row(MINUTE)
    del missing["close"]
    candles.on_features(missing, PAIR)
    candles.on_features("not a row", PAIR)  # type: ignore[arg-type]
    assert got == [] and candles.rejects.counts == {"non_numeric_or_nan": 1, "not_an_object": 1}


def test_duplicates_and_candles_out_of_order_are_counted_and_skipped() -> None:
    candles, got, _ = feed()
    for end in (MINUTE, 3 * MINUTE, 3 * MINUTE, 2 * MINUTE, 4 * MINUTE):
        candles.on_features(row(end), PAIR)
    assert [e.at_ms for e in got if isinstance(e, CandleEvent)] == [MINUTE, 3 * MINUTE, 4 * MINUTE]
    assert candles.rejects.counts == {"stale_candle": 2}


# --- a restart on the step venue ----------------------------------------------------------------------------------

FEES = FeeSchedule(Decimal("0.0001"), Decimal("0.0002"))
CLOSES = [0.5 + 0.01 * ((i * 7) % 11) for i in range(60)]


def predicted(market: MarketView) -> float:
    """Up after a low close, down after a high one: many entries and exits."""
    return 0.01 if market.features["close"] < 0.55 else -0.01


def candle_events() -> list[MarketEvent]:
    events: list[MarketEvent] = []
    candles = CandleFeed(PAIR, "1m", ["close"], events.append)
    for i, close in enumerate(CLOSES):
        candles.on_features(row((i + 1) * MINUTE, close=round(close, 2)), PAIR)
    return events


def session(url: str, first: bool) -> TradingSession:
    service = ExecutionService.restore(TradingStore(connect(url)), StepVenue(FEES), RiskLimits(), FEES)
    if first:
        service.deposit("USD", Decimal(1000), 0, ref="test")
    return TradingSession(service, ThresholdStrategy(predicted, 0.001, Decimal("0.1")), PAIR, 60_000)


@pytest.mark.parametrize("crash_after", [7, 30, 61, 119])
def test_a_threshold_session_restarted_after_a_crash_ends_as_an_uninterrupted_one(tmp_path, crash_after) -> None:
    events = candle_events()
    whole = session(f"sqlite:///{tmp_path / 'whole.db'}", first=True)
    whole.run(events)
    assert len(whole.service.orders) > 10

    url = f"sqlite:///{tmp_path / 'crashed.db'}"
    crashed = session(url, first=True)
    for event in events[:crash_after]:
        crashed.on_event(event)
    restarted = session(url, first=False)
    until = recovery_point(restarted.service)
    assert until is not None
    restarted.recover(restarted.service.venue_requests, until)
    restarted.run(events)  # the topics from their beginning
    service = restarted.service
    assert service.orders == whole.service.orders
    assert service.balances == whole.service.balances
    assert service.positions == whole.service.positions
    assert service.bad_reports == {} and service.replayed_reports > 0
