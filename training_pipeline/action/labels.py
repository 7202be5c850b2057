"""Action labels for the order-book action model: the value of each action, found by a pruned breadth-first search.

At a book sample ``t`` (one every 4 s) the value of an action is the profit,
per unit of coin, of the best sequence of actions that starts with it and
takes one action per sample over the next ``horizon`` samples (75 = 5
minutes), after which any position is closed at market. The five actions
are those of `training_pipeline.simulation.Action`. Positions are -1, 0 or +1
unit (one may go short one unit: from flat, selling is a real choice); an
action that would go beyond is a no-op.

Fees: taker fee on market orders and the close-out, maker fee on passive
fills, each a fraction of the notional. Fill model of passive orders (binary,
no queue position known): a close buy rests at one tick under the best offer
and fills at its limit if the next sample's best offer is at or below that
limit; a close sell rests one tick above the best bid and fills if the next
sample's best bid is at or above it; otherwise the order lapses.

Search: layer ``k`` holds the reachable states (position) after ``k``
actions with the best cash of any branch reaching them. Two branches in the
same position face the same future, so the one with less cash is dominated
and pruned: each layer holds at most three states, whatever the horizon. All
start times are searched at once (numpy over the start index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training_pipeline.simulation import Action

POSITIONS = (-1, 0, 1)
ACTIONS = tuple(Action)


@dataclass(frozen=True)
class LabelCosts:
    taker_fee: float
    maker_fee: float
    tick: float


def _step(
    action: Action, position: int, k: np.ndarray, bid: np.ndarray, ask: np.ndarray, costs: LabelCosts
) -> tuple[int, np.ndarray, np.ndarray]:
    """Taking `action` in `position` at sample indices `k`: (new position if it happens, cash flow, whether it happens)."""
    n = len(k)
    never = np.zeros(n, bool)
    if action == Action.FORCE_BUY and position < 1:
        return position + 1, -ask[k] * (1 + costs.taker_fee), ~never
    if action == Action.FORCE_SELL and position > -1:
        return position - 1, bid[k] * (1 - costs.taker_fee), ~never
    if action == Action.CLOSE_BUY and position < 1:
        limit = ask[k] - costs.tick
        return position + 1, -limit * (1 + costs.maker_fee), ask[k + 1] <= limit + costs.tick * 1e-6
    if action == Action.CLOSE_SELL and position > -1:
        limit = bid[k] + costs.tick
        return position - 1, limit * (1 - costs.maker_fee), bid[k + 1] >= limit - costs.tick * 1e-6
    return position, np.zeros(n), never


def _close_out(position: int, k: np.ndarray, bid: np.ndarray, ask: np.ndarray, costs: LabelCosts) -> np.ndarray:
    if position > 0:
        return bid[k] * (1 - costs.taker_fee)
    if position < 0:
        return -ask[k] * (1 + costs.taker_fee)
    return np.zeros(len(k))


def _advance(
    layer: dict[int, np.ndarray],
    action: Action,
    k: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    costs: LabelCosts,
    into: dict[int, np.ndarray],
) -> None:
    """Apply `action` to every state of `layer` at samples `k`, keeping the best cash per resulting position."""
    for position, cash in layer.items():
        moved, flow, happens = _step(action, position, k, bid, ask, costs)
        stay = into.setdefault(position, np.full(len(k), -np.inf))
        go = into.setdefault(moved, np.full(len(k), -np.inf))
        np.maximum(go, np.where(happens, cash + flow, -np.inf), out=go)
        np.maximum(stay, np.where(happens, -np.inf, cash), out=stay)


def action_values(bid: np.ndarray, ask: np.ndarray, horizon: int, costs: LabelCosts) -> np.ndarray:
    """Values (profit per unit of coin, quote currency) of the five actions at every sample with `horizon` samples after it.

    Returns an array of shape (len(bid) - horizon, 5), columns in `Action` order.
    """
    bid, ask = np.asarray(bid, float), np.asarray(ask, float)
    if len(bid) != len(ask):
        raise ValueError("bid and ask must have one value per sample")
    if (ask < bid).any():
        raise ValueError("crossed book: a best offer below the best bid")
    n = len(bid) - horizon
    if horizon < 1 or n < 1:
        return np.zeros((max(n, 0), len(ACTIONS)))
    starts = np.arange(n)
    values = np.empty((n, len(ACTIONS)))
    for column, first in enumerate(ACTIONS):
        layer: dict[int, np.ndarray] = {}
        _advance({0: np.zeros(n)}, first, starts, bid, ask, costs, layer)
        for step in range(1, horizon):
            following: dict[int, np.ndarray] = {}
            for action in ACTIONS:
                _advance(layer, action, starts + step, bid, ask, costs, following)
            layer = following
        end = starts + horizon
        values[:, column] = np.max([cash + _close_out(p, end, bid, ask, costs) for p, cash in layer.items()], axis=0)
    return values


def optimal_actions(values: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    """The "is optimal" labels: 1 for every action whose value is the best (ties all count), else 0."""
    return (values >= values.max(axis=1, keepdims=True) - tolerance).astype(np.float32)


def confusion_matrix(predicted: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of (optimal action, predicted action): rows the best action by value, columns the predicted one."""
    best = values.argmax(axis=1)
    matrix = np.zeros((len(ACTIONS), len(ACTIONS)), np.int64)
    np.add.at(matrix, (best, np.asarray(predicted, np.int64)), 1)
    return matrix
