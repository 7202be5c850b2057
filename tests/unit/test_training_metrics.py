"""Price metrics, directional accuracy and the promotion gate."""

import numpy as np
import pytest

from coinflow.contracts import registered_model_name
from coinflow.forecast_metrics import directional_accuracy, price_metrics
from training_pipeline.metrics import ratios
from training_pipeline.tracking import decide_promotion


def test_price_metrics_by_hand():
    current = np.array([100.0, 100.0, 100.0, 100.0])
    actual = np.array([101.0, 99.0, 100.0, 102.0])
    predicted = np.array([100.5, 100.5, 99.0, 102.0])
    metrics = price_metrics(current, actual, predicted)
    assert metrics["mae"] == pytest.approx((0.5 + 1.5 + 1.0 + 0.0) / 4)
    assert metrics["rmse"] == pytest.approx(np.sqrt((0.25 + 2.25 + 1.0) / 4))
    assert metrics["mape"] == pytest.approx(np.mean([0.5 / 101, 1.5 / 99, 1.0 / 100, 0.0]))
    # Three moves (the flat one has no direction): up called up, down called up, up called up.
    assert metrics["directional_accuracy"] == pytest.approx(2 / 3)


def test_a_flat_forecast_scores_one_half_and_no_moves_have_no_accuracy():
    current = np.array([10.0, 10.0, 10.0])
    assert directional_accuracy(current, np.array([11.0, 9.0, 10.0]), current) == 0.5
    assert np.isnan(directional_accuracy(current, current, current + 1))


def test_ratios_to_the_baseline():
    model = {"mae": 1.0, "rmse": 2.0, "mape": 0.01, "directional_accuracy": 0.6}
    baseline = {"mae": 2.0, "rmse": 2.0, "mape": 0.02, "directional_accuracy": 0.5}
    assert ratios(model, baseline) == pytest.approx(
        {"mae_ratio": 0.5, "rmse_ratio": 1.0, "mape_ratio": 0.5, "directional_accuracy_ratio": 1.2}
    )


def test_gate_requires_beating_the_baseline_by_the_margin():
    promote, reason = decide_promotion(candidate_mae=9.95, baseline_mae=10.0, champion_mae=None, margin=0.01)
    assert not promote and reason.startswith("refused") and "baseline" in reason
    promote, reason = decide_promotion(candidate_mae=9.9, baseline_mae=10.0, champion_mae=None, margin=0.01)
    assert promote and reason.startswith("promoted")


def test_gate_requires_beating_the_champion_too():
    promote, reason = decide_promotion(9.0, 10.0, champion_mae=9.05, margin=0.01, champion_label="champion v3")
    assert not promote and "champion v3" in reason
    promote, reason = decide_promotion(8.9, 10.0, champion_mae=9.05, margin=0.01, champion_label="champion v3")
    assert promote and "champion v3" in reason


def test_a_model_that_loses_to_the_baseline_is_never_promoted_even_against_a_worse_champion():
    promote, reason = decide_promotion(10.5, 10.0, champion_mae=12.0, margin=0.0)
    assert not promote and "baseline" in reason


def test_registered_model_names_are_the_contract():
    assert registered_model_name("BTC/USD", 1) == "price-BTCUSD-1m"
    assert registered_model_name("ETH/USDC", 15) == "price-ETHUSDC-15m"
