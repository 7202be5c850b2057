"""The trading simulator on hand-computed cases: fees, passive fills, benchmarks, risk measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coinflow.performance import max_drawdown, sharpe_ratio
from training_pipeline.simulation import (
    Action,
    Costs,
    Market,
    benchmarks,
    equity_curves,
    infer_tick,
    regression_actions,
    simulate,
)

COSTS = Costs(taker_fee=0.01, maker_fee=0.005, touch_fill=0.5)


def _market(close, low=None, high=None) -> Market:
    close = np.asarray(close, dtype=float)
    candles = pd.DataFrame(
        {
            "event_timestamp": pd.date_range("2024-01-01", periods=len(close), freq="1min", tz="UTC"),
            "close": close,
            "low": close if low is None else np.asarray(low, float),
            "high": close if high is None else np.asarray(high, float),
        }
    )
    return Market.from_candles(candles, tick=1.0)


def test_market_orders_pay_the_taker_fee_both_ways():
    market = _market([100, 110, 120])
    outcome = simulate(market, np.array([Action.FORCE_BUY, Action.NOOP, Action.FORCE_SELL]), COSTS, 1000.0)
    coin = 9.90099009  # 1000 / (100 * 1.01), the fee on top, rounded down to 1e-8
    cash = 1000 - coin * 100 * 1.01
    np.testing.assert_allclose(outcome.equity, [cash + coin * 100, cash + coin * 110, cash + coin * 120 * 0.99])
    assert outcome.fills == 2
    assert outcome.fees == pytest.approx(coin * 100 * 0.01 + coin * 120 * 0.01)


def test_a_passive_buy_fills_through_its_limit_fully_at_a_touch_partly_and_above_not_at_all():
    actions = np.array([Action.CLOSE_BUY, Action.NOOP])
    through = simulate(_market([100, 100], low=[100, 98]), actions, COSTS, 1000.0)
    touched = simulate(_market([100, 100], low=[100, 99]), actions, COSTS, 1000.0)
    above = simulate(_market([100, 100], low=[100, 99.5]), actions, COSTS, 1000.0)
    full_coin = 10.05075631  # 1000 / (99 * 1.005): the bid one tick under the offer, the maker fee on top
    cost = full_coin * 99 * 1.005
    assert through.equity[-1] == pytest.approx(1000 - cost + full_coin * 100)
    assert touched.equity[-1] == pytest.approx(1000 - cost / 2 + full_coin / 2 * 100)
    assert above.equity[-1] == pytest.approx(1000.0) and above.fills == 0
    assert through.fees == pytest.approx(full_coin * 99 * 0.005) and touched.fees == pytest.approx(through.fees / 2)


def test_a_passive_order_lives_one_step():
    market = _market([100, 100, 100], low=[100, 100, 90])
    outcome = simulate(market, np.array([Action.CLOSE_BUY, Action.NOOP, Action.NOOP]), COSTS, 1000.0)
    assert outcome.fills == 0 and outcome.equity[-1] == 1000.0


def test_the_account_never_goes_short_or_into_debt():
    rng = np.random.default_rng(0)
    close = 100 + np.cumsum(rng.normal(0, 1, 500)).round()
    market = _market(close, low=close - rng.integers(0, 3, 500), high=close + rng.integers(0, 3, 500))
    actions = rng.integers(0, 5, 500)
    outcome = simulate(market, actions, COSTS, 1000.0, trade_fraction=0.7)
    assert (outcome.equity >= 0).all()
    no_fee = simulate(market, actions, Costs(0.0, 0.0, 0.5), 1000.0, trade_fraction=0.7)
    assert outcome.equity[-1] < no_fee.equity[-1]


def test_benchmarks_and_risk_measures():
    market = _market([100, 120, 90, 150])
    hold, noop = benchmarks(market, COSTS, 1000.0)
    coin = 9.90099009
    np.testing.assert_allclose(hold.equity, 1000 - coin * 101 + np.array([100, 120, 90, 150]) * coin)
    assert hold.max_drawdown == pytest.approx(30 * coin / (1000 - coin * 101 + 120 * coin))
    assert noop.pnl == 0 and noop.sharpe == 0 and noop.max_drawdown == 0
    assert max_drawdown(np.array([10.0, 5.0, 20.0, 15.0])) == pytest.approx(0.5)
    steady = 1.001 ** np.arange(100) * (1 + 1e-4 * (-1) ** np.arange(100))
    assert sharpe_ratio(steady, 60.0) > 0 > sharpe_ratio(steady[::-1], 60.0)


def test_regression_decisions_follow_the_threshold():
    actions = regression_actions(np.array([0.01, -0.01, 0.001, -0.001]), 0.005)
    assert list(actions) == [Action.FORCE_BUY, Action.FORCE_SELL, Action.NOOP, Action.NOOP]
    passive = regression_actions(np.array([0.01, -0.01]), 0.005, passive=True)
    assert list(passive) == [Action.CLOSE_BUY, Action.CLOSE_SELL]


def test_tick_inference_and_plot():
    assert infer_tick(np.array([100.0, 100.1, 100.3, 100.1])) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="tick"):
        infer_tick(np.array([5.0, 5.0]))
    market = _market([100, 120, 90, 150])
    hold, noop = benchmarks(market, COSTS, 1000.0)
    figure = equity_curves(market.times, [hold, noop], "test")
    assert len(figure.axes) == 2
