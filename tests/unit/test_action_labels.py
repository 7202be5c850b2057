"""Action labels: known best sequences on hand-made book paths, and the pruned search against exhaustive search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training_pipeline.action.labels import LabelCosts, action_values, confusion_matrix, optimal_actions
from training_pipeline.simulation import Action

FREE = LabelCosts(taker_fee=0.0, maker_fee=0.0, tick=1.0)


def test_a_jump_up_after_the_first_sample_makes_buying_now_the_best_action():
    bid = np.array([100.0, 110, 110, 110])
    ask = bid + 1
    values = action_values(bid, ask, horizon=3, costs=FREE)
    assert values.shape == (1, 5)
    np.testing.assert_allclose(values[0], [9, 0, -11, -10, 0])
    costly = action_values(bid, ask, horizon=3, costs=LabelCosts(0.001, 0.0, 1.0))
    assert costly[0, Action.FORCE_BUY] == pytest.approx(110 * 0.999 - 101 * 1.001)


def test_a_passive_bid_fills_when_the_offer_comes_down_to_it_and_ties_are_all_optimal():
    """Close buy: bid 100 fills as the offer drops to 100 (then 105). Force sell: short 100, buy back at 100.
    Close sell: offer 101 lapses (bid falls), then buy at 100. No-op: buy at 100 next."""
    bid = np.array([100.0, 99, 105])
    ask = np.array([101.0, 100, 106])
    values = action_values(bid, ask, horizon=2, costs=FREE)
    np.testing.assert_allclose(values[0], [4, 5, 0, 5, 5])
    np.testing.assert_array_equal(optimal_actions(values)[0], [0, 1, 0, 1, 1])


def _exhaustive(bid: list[float], ask: list[float], horizon: int, costs: LabelCosts) -> list[float]:
    """Best profit per first action over every one of the 5^horizon action sequences (independent, plain Python)."""
    best = [-np.inf] * 5
    for sequence in itertools.product(range(5), repeat=horizon):
        position, cash = 0, 0.0
        for k, action in enumerate(sequence):
            if action == Action.FORCE_BUY and position < 1:
                position, cash = position + 1, cash - ask[k] * (1 + costs.taker_fee)
            elif action == Action.FORCE_SELL and position > -1:
                position, cash = position - 1, cash + bid[k] * (1 - costs.taker_fee)
            elif action == Action.CLOSE_BUY and position < 1 and ask[k + 1] <= ask[k] - costs.tick:
                position, cash = position + 1, cash - (ask[k] - costs.tick) * (1 + costs.maker_fee)
            elif action == Action.CLOSE_SELL and position > -1 and bid[k + 1] >= bid[k] + costs.tick:
                position, cash = position - 1, cash + (bid[k] + costs.tick) * (1 - costs.maker_fee)
        if position > 0:
            cash += bid[horizon] * (1 - costs.taker_fee)
        elif position < 0:
            cash -= ask[horizon] * (1 + costs.taker_fee)
        best[sequence[0]] = max(best[sequence[0]], cash)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_pruning_never_changes_the_optimum(seed):
    rng = np.random.default_rng(seed)
    horizon = int(rng.integers(1, 6))
    length = horizon + 3
    mid = 100 + np.cumsum(rng.integers(-2, 3, length))
    spread = rng.integers(1, 3, length)
    bid, ask = mid.astype(float), (mid + spread).astype(float)
    costs = LabelCosts(taker_fee=float(rng.choice([0.0, 0.002])), maker_fee=float(rng.choice([0.0, 0.001])), tick=1.0)
    values = action_values(bid, ask, horizon, costs)
    assert values.shape == (length - horizon, 5)
    for start in range(length - horizon):
        expected = _exhaustive(list(bid[start:]), list(ask[start:]), horizon, costs)
        np.testing.assert_allclose(values[start], expected, atol=1e-9)


def test_bad_books_are_refused_and_short_paths_have_no_labels():
    with pytest.raises(ValueError, match="crossed"):
        action_values(np.array([101.0, 100]), np.array([100.0, 101]), 1, FREE)
    assert action_values(np.array([100.0, 100]), np.array([101.0, 101]), 5, FREE).shape == (0, 5)


def test_confusion_matrix_counts_optimal_against_predicted():
    values = np.array([[9, 0, -1, -1, 0], [0, 0, 5, 0, 0], [0, 0, 5, 0, 0.0]])
    matrix = confusion_matrix(np.array([Action.FORCE_BUY, Action.NOOP, Action.FORCE_SELL]), values)
    assert matrix[Action.FORCE_BUY, Action.FORCE_BUY] == 1
    assert matrix[Action.FORCE_SELL, Action.NOOP] == 1 and matrix[Action.FORCE_SELL, Action.FORCE_SELL] == 1
    assert matrix.sum() == 3
