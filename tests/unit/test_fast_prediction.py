"""The array path that serves one row gives the same predictions as the pandas and DMatrix path it replaced.

Models are fitted on real one-minute candles (2023 Q1 BTC/USDC) with the
project's batch indicators; the references below are the previous
implementations, kept here only to compare against.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from coinflow.contracts import PREDICTED_PRICE, PREDICTED_RETURN
from coinflow.exchange_files import iter_ohlcvt_csv
from coinflow.quality import Rejects
from feature_repo.names import ENTITY, EVENT_TIMESTAMP
from inference_pipeline.model_store import ModelKey, ServedModel, price_model_of
from tests.support.paths import KRAKEN_CANDLES_CSV, ROOT
from tests.support.training_synthetic import FEATURES, features_of
from training_pipeline.checks import drop_warmup
from training_pipeline.dataset import assemble
from training_pipeline.features import COUNTS, NOT_INPUTS, PRICE_DIFFERENCES, PRICE_LEVELS, input_matrix, model_inputs
from training_pipeline.model_base import load_model
from training_pipeline.price.models import LassoModel, XGBoostModel
from training_pipeline.splits import time_split

ROWS = slice(30_000, 36_000)
RTOL = 1e-9
# The order the FeatureService serves them in differs from the training order, and it serves a column more.
SERVED = ("rsi_14", "close", *reversed([f for f in FEATURES if f not in ("rsi_14", "close")]), "extra")


def reference_model_inputs(raw: pd.DataFrame) -> pd.DataFrame:
    """The previous, column-by-column pandas implementation of `model_inputs`."""
    close = raw["close"].astype(float)
    out = {}
    for name in raw.columns:
        if name in NOT_INPUTS:
            continue
        values = raw[name].astype(float)
        if name in PRICE_LEVELS:
            out[f"{name}_rel"] = np.log(values / close)
        elif name in PRICE_DIFFERENCES:
            out[f"{name}_rel"] = values / close
        elif name in COUNTS:
            out[f"log_{name}"] = np.log1p(values.clip(lower=0))
        else:
            out[name] = values
    return pd.DataFrame(out, index=raw.index)


def reference_xgboost(model: XGBoostModel, raw: pd.DataFrame) -> np.ndarray:
    inputs = xgb.DMatrix(reference_model_inputs(raw[model.features]), nthread=1)
    return model.booster.predict(inputs, iteration_range=(0, model.hyper["n_estimators"]))


def reference_lasso(model: LassoModel, raw: pd.DataFrame) -> np.ndarray:
    """The fitted sklearn pipeline's own predict, after the reference inputs step."""
    return model.pipeline[1:].predict(reference_model_inputs(raw[model.features]))


@pytest.fixture(scope="module")
def periods() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, validation, test, warm-up rows with missing indicators) of real candles."""
    candles = pd.DataFrame(list(iter_ohlcvt_csv(KRAKEN_CANDLES_CSV, "BTC/USDC", "1m", 60, Rejects("test"))))[ROWS]
    candles[EVENT_TIMESTAMP] = pd.to_datetime(candles["window_end_ms"], unit="ms", utc=True)
    candles = candles.rename(columns={"pair": ENTITY}).reset_index(drop=True)
    frame = assemble(features_of(candles), candles, timedelta(minutes=1))
    warmup = frame[frame[list(FEATURES)].isna().any(axis=1)]
    frame, dropped = drop_warmup(frame, FEATURES)
    assert dropped > 0 and len(warmup) > 0
    split = time_split(frame[EVENT_TIMESTAMP], frame["label_timestamp"], 0.15, 0.2)
    return frame.iloc[split.train], frame.iloc[split.validation], frame.iloc[split.test], warmup


@pytest.fixture(scope="module")
def models(periods) -> dict[str, XGBoostModel | LassoModel]:
    train, validation, _, _ = periods
    xgboost = XGBoostModel(FEATURES, {"max_depth": 3, "learning_rate": 0.1}, "cpu").fit(train, validation)
    # Early stopping kept fewer trees than it grew: the prediction must use only those.
    assert xgboost.hyper["n_estimators"] < xgboost.booster.num_boosted_rounds()
    return {"xgboost": xgboost, "lasso": LassoModel(FEATURES, folds=3).fit(train, validation)}


def served_order(frame: pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray]:
    served = frame.assign(extra=1.0)[list(SERVED)]
    return SERVED, served.to_numpy(dtype=np.float64)


def test_model_inputs_equal_the_pandas_reference_on_every_real_row(periods):
    train, validation, test, warmup = periods
    raw = pd.concat([warmup, train, validation, test])[list(FEATURES)]
    pd.testing.assert_frame_equal(model_inputs(raw), reference_model_inputs(raw), check_exact=True)
    shuffled = raw[list(reversed(FEATURES))]
    pd.testing.assert_frame_equal(model_inputs(shuffled), reference_model_inputs(shuffled), check_exact=True)


def test_bad_raw_rows_are_refused_with_a_clear_error(periods):
    raw = periods[2][list(FEATURES)]
    with pytest.raises(ValueError, match="must include 'close'"):
        model_inputs(raw.drop(columns="close"))
    with pytest.raises(ValueError, match="expected rows of"):
        input_matrix(FEATURES, raw.to_numpy()[:, :-1])
    with pytest.raises(ValueError, match="lack"):
        XGBoostModel(FEATURES).predict_values(FEATURES[1:], raw.to_numpy()[:, 1:])


@pytest.mark.parametrize("name", ["xgboost", "lasso"])
def test_predictions_equal_the_previous_code_path(models, periods, name):
    model = models[name]
    test = periods[2]
    reference = reference_xgboost(model, test) if name == "xgboost" else reference_lasso(model, test)
    assert np.std(reference) > 0
    np.testing.assert_allclose(model.predict(test), reference, rtol=RTOL, atol=0)
    columns, values = served_order(test)
    one_by_one = np.concatenate([model.predict_values(columns, values[i : i + 1]) for i in range(0, len(values), 7)])
    np.testing.assert_allclose(one_by_one, reference[::7], rtol=RTOL, atol=0)


def test_missing_values_are_missing_for_xgboost_and_refused_by_lasso(models, periods):
    warmup = periods[3]
    np.testing.assert_allclose(
        models["xgboost"].predict(warmup), reference_xgboost(models["xgboost"], warmup), rtol=RTOL, atol=0
    )
    with pytest.raises(ValueError, match="missing or infinite"):
        models["lasso"].predict(warmup)


@pytest.mark.parametrize("name", ["xgboost", "lasso"])
def test_a_served_row_equals_the_pyfunc_output(models, periods, tmp_path, name):
    """The API's path (a saved and loaded pyfunc, scored on an array) against the pyfunc's own predict."""
    models[name].save(tmp_path / "model")
    reloaded = load_model(tmp_path / "model")
    test = periods[2]
    np.testing.assert_allclose(reloaded.predict(test), models[name].predict(test), rtol=RTOL, atol=0)
    model_file = ROOT / "training_pipeline" / "price" / "served_model.py"
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=str(model_file),
        artifacts={"model": str(tmp_path / "model")},
        pip_requirements=[],
    )
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    assert price_model_of(pyfunc) is not None
    served = ServedModel(
        key=ModelKey("BTC/USDC", 1),
        name="price-BTCUSDC-1m",
        version="1",
        alias="champion",
        run_id="r",
        model_type=name,
        feature_service="price_regression_1m",
        views=(),
        features=SERVED,
        loaded_at=datetime.now(UTC),
        pyfunc=pyfunc,
        memoize=False,
        price_model=price_model_of(pyfunc),
    )
    _, values = served_order(test.iloc[::50])
    expected = pyfunc.predict(test.iloc[::50][list(FEATURES)])
    fast = np.array([served.predict_row(tuple(row)) for row in values.tolist()])
    np.testing.assert_allclose(fast[:, 0], expected[PREDICTED_RETURN].to_numpy(), rtol=RTOL, atol=0)
    np.testing.assert_allclose(fast[:, 1], expected[PREDICTED_PRICE].to_numpy(), rtol=RTOL, atol=0)
