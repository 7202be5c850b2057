"""The pairs rule on hand-made z paths: entries, exits, stops and no re-entry after them, leaving the candidates,
stale legs; leg sizes."""

from __future__ import annotations

import math
from decimal import Decimal as D

import pytest

from coinflow.trading.pairs import PairRule, PairState, Why, leg_quantities, next_state

RULE = PairRule(entry=2.0, exit=0.5, stop=4.0)


def walk(zs, **flags):
    state, out = PairState(), []
    for z in zs:
        state, why = next_state(state, z, RULE, **flags)
        out.append((state.position, why))
    return out


def test_entries_and_exits_on_both_sides():
    assert walk([0.0, 2.5, 1.0, 0.4]) == [(0, Why.HOLD), (-1, Why.ENTRY), (-1, Why.HOLD), (0, Why.EXIT)]
    assert walk([-2.5, -0.6, -0.4]) == [(1, Why.ENTRY), (1, Why.HOLD), (0, Why.EXIT)]
    assert walk([-2.5, 1.0]) == [(1, Why.ENTRY), (0, Why.EXIT)]  # the spread overshot past zero


def test_a_stop_closes_and_blocks_re_entry_until_z_is_back_inside_the_entry_band():
    path = [2.5, 4.5, 3.0, 2.5, 1.5, 2.5]
    assert [p for p, _ in walk(path)] == [-1, 0, 0, 0, 0, -1]
    assert walk(path)[1][1] == Why.STOP
    assert walk([5.0]) == [(0, Why.HOLD)]  # beyond the stop is no entry


def test_leaving_the_candidates_closes_a_stale_leg_changes_nothing_and_costs_can_block_entries():
    state, _ = next_state(PairState(), 2.5, RULE)
    assert next_state(state, 2.5, RULE, candidate=False) == (PairState(0, False), Why.LEFT)
    assert next_state(state, 0.0, RULE, fresh=False) == (state, Why.STALE)  # no exit without a price
    assert next_state(PairState(), 2.5, RULE, fresh=False) == (PairState(), Why.STALE)  # no entry either
    assert next_state(state, math.nan, RULE) == (state, Why.STALE)
    assert next_state(PairState(), 2.5, RULE, candidate=False) == (PairState(), Why.HOLD)
    assert next_state(PairState(), 2.5, RULE, can_enter=False) == (PairState(), Why.HOLD)
    assert next_state(state, 0.0, RULE, can_enter=False) == (PairState(), Why.EXIT)  # exits are always allowed


def test_leg_sizes_dollar_neutral_and_by_hedge_ratio():
    assert leg_quantities(1, D(1000), D(100), D(50), D("1.5")) == (D(5), D(-10))
    y, x = leg_quantities(-1, D(1000), D(100), D(50), D(2), dollar_neutral=False)
    assert (y, x) == (D(-5), D(10)) and abs(y) * 100 + abs(x) * 50 == 1000
    assert leg_quantities(0, D(1000), D(100), D(50), D(1)) == (0, 0)


def test_a_rule_must_be_ordered():
    with pytest.raises(ValueError, match="exit < entry < stop"):
        PairRule(entry=2.0, exit=2.5, stop=4.0)
