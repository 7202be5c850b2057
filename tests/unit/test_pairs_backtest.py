"""The pairs backtest on a synthetic universe: the books add up to the account, a mean-reverting spread earns
before costs and is not traded when costs eat it, a stale leg freezes its pair, and a fold's choices never see
the fold."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np
import pandas as pd
import pytest

from coinflow.hedge import NoiseVariances
from coinflow.trading.pairs import PairRule
from training_pipeline.pairs.backtest import Costs, equal_weight_hold, pair_signal, trade, walk_forward

PAIR = ("Y-USDT__X-USDT", "Y/USDT", "X/USDT")
FREE = Costs(D(0), D(0))


def universe(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    log_x = np.log(100) + np.cumsum(rng.normal(0, 0.002, n))
    spread = np.zeros(n)
    for t in range(1, n):
        spread[t] = 0.95 * spread[t - 1] + rng.normal(0, 0.003)
    log_z = np.log(50) + np.cumsum(rng.normal(0, 0.002, n))
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    closes = pd.DataFrame({"X/USDT": np.exp(log_x), "Y/USDT": np.exp(log_x + spread + 0.1), "Z/USDT": np.exp(log_z)},
                          index=index)  # fmt: skip
    return closes.round(4)


def signal(closes: pd.DataFrame):
    return pair_signal(*PAIR, np.log(closes), NoiseVariances(beta=1e-9, intercept=0.005, phi=0.95, sigma2=9e-6))


def test_the_pair_books_add_up_to_the_account_and_a_reverting_spread_earns_before_costs():
    closes = universe()
    run = trade(closes, [signal(closes)], PairRule(), FREE, D(10_000))
    book = run.pairs[PAIR[0]]
    assert len(book.trips) > 10 and book.fees == 0
    marks = {c: D(repr(float(v))) for c, v in closes.iloc[-1].items()}
    assert run.equity[-1] == pytest.approx(10_000 + float(book.value(marks)))
    assert run.pair_equity[PAIR[0]][-1] == pytest.approx(run.equity[-1])
    assert run.equity[-1] > 10_000 and np.mean([p > 0 for p in book.trips]) > 0.5


def test_costs_above_the_spread_s_reach_keep_the_pair_out():
    closes = universe()
    run = trade(closes, [signal(closes)], PairRule(), Costs(D("0.01"), D("0.005")), D(10_000))
    assert run.pairs[PAIR[0]].trips == [] and run.equity[-1] == 10_000
    assert run.reasons.get("entry", 0) == 0


def test_a_leg_without_prices_freezes_its_pair():
    closes = universe()
    closes.loc[closes.index[1000:1500], "X/USDT"] = np.nan
    run = trade(closes, [signal(closes)], PairRule(), FREE, D(10_000))
    book = run.pairs[PAIR[0]]
    assert run.reasons["stale_leg"] >= 500
    assert not [bar for bar in book.rebalanced if 1000 <= bar < 1500]
    assert [bar for bar in book.rebalanced if bar >= 1500]  # it trades again once both legs are priced


def test_a_fold_is_chosen_on_the_bars_before_it_only():
    closes = universe(4000)
    seen: list[pd.Timestamp] = []

    def discover(log_prices: pd.DataFrame):
        seen.append(log_prices.index[-1])
        return [PAIR]

    folds = walk_forward(closes, discover, [1.5, 2.0], PairRule(), FREE, D(10_000), folds=3)
    assert [f.start > last for f, last in zip(folds, seen, strict=True)] == [True, True, True]
    changed = closes.copy()
    changed.iloc[3000:] *= 1.5  # rewrite the future of the last fold
    again = walk_forward(changed, lambda p: [PAIR], [1.5, 2.0], PairRule(), FREE, D(10_000), folds=3)
    assert [f.entry for f in again[:2]] == [f.entry for f in folds[:2]]
    np.testing.assert_array_equal(again[0].run.equity, folds[0].run.equity)
    assert again[-1].entry == folds[-1].entry  # chosen before the rewritten bars


def test_the_benchmark_holds_the_universe_equally():
    closes = universe(10)
    hold = equal_weight_hold(closes, 3000.0)
    expected = (closes / closes.iloc[0] * 1000).sum(axis=1).to_numpy()
    np.testing.assert_allclose(hold, expected)


def test_a_run_ends_flat_and_pays_its_exits():
    closes = universe(400)
    run = trade(closes, [signal(closes)], PairRule(entry=0.5, exit=0.1, stop=50), Costs(D("0.001"), D(0)), D(10_000))
    book = run.pairs[PAIR[0]]
    assert all(q == 0 for q in book.holdings.values())
    assert run.reasons.get("end", 0) + run.reasons.get("exit", 0) >= 1 and book.trips
    assert run.equity[-1] == pytest.approx(10_000 + float(book.cash))


def test_a_fold_without_pairs_does_nothing():
    folds = walk_forward(universe(900), lambda p: [], [2.0], PairRule(), FREE, D(10_000), folds=2)
    assert [(f.pairs, f.entry, f.run) for f in folds] == [((), None, None), ((), None, None)]
