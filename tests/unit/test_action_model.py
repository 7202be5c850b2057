"""The order-book action model without services: labels per segment, inputs, network, fit, decisions, persistence."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.names import BOOK_ENTITY, EVENT_TIMESTAMP, MID_HISTORY_FEATURES, ORDERBOOK_FEATURES
from tests.support.book_synthetic import book_rows
from training_pipeline.action.dataset import BEST_ACTION, VALUE_COLUMNS, label_book, segment_ids
from training_pipeline.action.labels import LabelCosts, action_values, confusion_matrix
from training_pipeline.action.model import ActionModel, book_inputs, decision_metrics, values_bps
from training_pipeline.deep.networks import ActionNetwork
from training_pipeline.simulation import Action, Costs, Market, simulate
from training_pipeline.tracking import decide_pnl_promotion

STEP = timedelta(seconds=4)
COSTS = LabelCosts(taker_fee=0.0002, maker_fee=0.0, tick=0.01)
CONFIG = {
    "hidden_size": 16,
    "embedding_dim": 2,
    "epochs": 3,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "patience": 5,
    "device": "cpu",
    "seed": 0,
    "dropout": 0.0,
}


def samples(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame["window_end_ms"], unit="ms", utc=True)
    return frame


def labelled(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    frame = samples(book_rows(n, seed=seed))
    labels, _ = label_book(frame, STEP, 75, COSTS)
    return frame.merge(labels, on=[BOOK_ENTITY, EVENT_TIMESTAMP])


def test_a_gap_in_the_clock_starts_a_new_segment_and_labels_stay_inside_it():
    frame = samples(book_rows(200))
    frame = frame.drop(index=range(100, 103)).reset_index(drop=True)  # 12 s without samples
    assert segment_ids(frame[EVENT_TIMESTAMP], STEP).tolist() == [0] * 100 + [1] * 97
    labels, segments = label_book(frame, STEP, 20, COSTS)
    assert segments == 2
    assert len(labels) == (100 - 20) + (97 - 20)
    # Each segment is labelled from its own path only: equal to labelling it alone.
    second = frame.iloc[100:].reset_index(drop=True)
    bid, ask = second["mid"] - second["spread"] / 2, second["mid"] + second["spread"] / 2
    alone = action_values(bid.to_numpy(), ask.to_numpy(), 20, COSTS)
    np.testing.assert_allclose(labels[list(VALUE_COLUMNS)].to_numpy()[80:], alone)
    assert (labels[BEST_ACTION] == labels[list(VALUE_COLUMNS)].to_numpy().argmax(axis=1)).all()


def test_too_short_a_history_has_no_labels():
    labels, _ = label_book(samples(book_rows(50)), STEP, 75, COSTS)
    assert labels.empty and list(labels.columns) == [BOOK_ENTITY, EVENT_TIMESTAMP, *VALUE_COLUMNS, BEST_ACTION]


def test_book_inputs_are_relative_to_the_mid_oldest_first_and_unknown_mids_count_as_no_change():
    frame = samples(book_rows(10))
    path, book = book_inputs(frame)
    assert path.shape == (10, len(MID_HISTORY_FEATURES)) and book.shape == (10, 43)
    assert np.isfinite(path).all() and np.isfinite(book).all()
    row = frame.iloc[9]
    assert path[9, -1] == pytest.approx(np.log(row["mid_30s_0"] / row["mid"]) * 1e4)
    assert frame["mid_30s_9"].isna().all() and (path[:, 0] == 0).all()
    assert book[9, -3] == pytest.approx(row["spread"] / row["mid"] * 1e4)


def test_the_network_maps_mids_book_and_product_to_five_outputs():
    network = ActionNetwork(n_book_inputs=43, n_products=2, hidden_size=8, embedding_dim=2)
    out = network(torch.randn(7, 10), torch.randn(7, 43), torch.tensor([0, 1, 2, 1, 1, 0, 2]))
    assert out.shape == (7, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in network.parameters())


def test_decision_metrics_and_confusion_matrix():
    values = np.array([[3.0, 1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    chosen = np.array([0, 3, 1])
    metrics = decision_metrics(chosen, values)
    assert metrics["accuracy"] == pytest.approx(2 / 3)  # a tie counts as optimal
    assert metrics["mean_value_bps"] == pytest.approx((3 + 2 + 0) / 3)
    assert metrics["oracle_value_bps"] == pytest.approx(2.0) and metrics["regret_bps"] == pytest.approx(1 / 3)
    assert metrics["noop_value_bps"] == pytest.approx(0.5)
    matrix = confusion_matrix(chosen, values)
    assert matrix.sum() == 3 and matrix[0, 0] == 1 and matrix[2, 3] == 1 and matrix[4, 1] == 1


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_the_model_learns_better_than_waiting_on_a_predictable_book(loss, tmp_path):
    frame = labelled(1800)
    train, test = frame.iloc[:1300].reset_index(drop=True), frame.iloc[1300:].reset_index(drop=True)
    model = ActionModel(ORDERBOOK_FEATURES, {**CONFIG, "epochs": 15, "patience": 15}, loss).fit(train)
    scores = model.scores(test)
    assert scores.shape == (len(test), 5) and np.isfinite(scores).all()
    if loss == "bce":
        assert ((scores >= 0) & (scores <= 1)).all()
    values = values_bps(test)
    metrics = decision_metrics(model.decide(test), values)
    # The hidden pressure shows in the book: the chosen actions are worth more than always waiting, or than
    # always taking the action most often best in training.
    usual = np.full(len(test), np.bincount(train[BEST_ACTION], minlength=5).argmax())
    assert metrics["mean_value_bps"] > metrics["noop_value_bps"]
    assert metrics["regret_bps"] < decision_metrics(usual, values)["regret_bps"]
    assert model.summary["epochs_run"] >= 1 and model.summary["device"] == "cpu"

    model.save(tmp_path / "model")
    loaded = ActionModel.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.scores(test), scores)
    assert loaded.loss == loss and loaded.products == ["coinbase:ETH-USD"]


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown action loss"):
        ActionModel(ORDERBOOK_FEATURES, CONFIG, "hinge")


def test_a_book_market_fills_passive_orders_when_the_other_side_reaches_the_limit():
    frame = pd.DataFrame(
        {
            EVENT_TIMESTAMP: pd.date_range("2026-01-01", periods=3, freq="4s", tz="UTC"),
            "mid": [100.005, 100.005, 99.995],
            "spread": [0.01, 0.01, 0.01],
        }
    )
    market = Market.from_book(frame, tick=0.01)
    np.testing.assert_allclose(market.bid, [100.0, 100.0, 99.99])
    np.testing.assert_allclose(market.ask, [100.01, 100.01, 100.0])
    costs = Costs(taker_fee=0.0, maker_fee=0.0, touch_fill=1.0)
    # A bid one tick under the offer (100.00) at the first sample: the offer stays at 100.01, no fill;
    # at the second sample the offer comes down to 100.00 in the next one: filled at the limit.
    outcome = simulate(market, np.array([Action.CLOSE_BUY, Action.CLOSE_BUY, Action.NOOP]), costs, 100.0)
    assert outcome.fills == 1


def test_the_action_gate_needs_a_profit_above_no_op_and_the_champion():
    assert decide_pnl_promotion(-1.0, None)[0] is False
    assert decide_pnl_promotion(0.0, None)[0] is False
    promoted, reason = decide_pnl_promotion(5.0, None)
    assert promoted and "beats no-op" in reason
    promoted, reason = decide_pnl_promotion(5.0, 7.0, "champion v2")
    assert not promoted and "champion v2" in reason
    assert decide_pnl_promotion(8.0, 7.0)[0] is True
