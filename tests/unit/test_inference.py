"""The pure parts of the inference pipeline: online rows, checks, keys, memo, live scores, prediction records."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from feast.protos.feast.types.Value_pb2 import Value

from coinflow import parquet_writer
from coinflow.contracts import PREDICTED_PRICE, PREDICTED_RETURN
from coinflow.forecast_metrics import price_metrics
from coinflow.settings import Settings
from coinflow.windows import push_row
from feature_repo import definitions
from feature_repo.names import CANDLE_FEATURES, INDICATOR_FEATURES, OHLCV_FEATURES
from inference_pipeline.evaluation import new_score, realised, score_metrics, score_step, update_score
from inference_pipeline.features import FeatureRow, ViewRead, rows_from_reads
from inference_pipeline.metrics import ApiMetrics, RequestMetricsMiddleware
from inference_pipeline.model_store import (
    ModelKey,
    ModelLoadError,
    ModelStore,
    ServedModel,
    check_inputs,
    sequence_length,
    service_layout,
)
from inference_pipeline.schemas import BatchPredictRequest, PredictRequest
from inference_pipeline.service import NotServed, Predictor, check_row, window_rows
from inference_pipeline.streaming import (
    PREDICTIONS_SCHEMA,
    prediction_frame,
    prediction_record,
    recent_rows,
    serves_interval,
)

FEATURES = (*OHLCV_FEATURES, *INDICATOR_FEATURES)
T0 = 1_700_000_040  # a whole minute, in seconds


class CountingModel:
    """A stand-in pyfunc: returns a log return of 0.001 per row and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        self.calls += 1
        returns = np.full(len(rows), 0.001)
        return pd.DataFrame(
            {PREDICTED_RETURN: returns, PREDICTED_PRICE: rows["close"].to_numpy(float) * np.exp(returns)}
        )


def served(
    pair: str = "BTC/USD", horizon: int = 1, memoize: bool = True, views=("ohlcv_1m", "indicators_1m"), pyfunc=None
) -> ServedModel:
    return ServedModel(
        key=ModelKey(pair, horizon),
        name=f"price-{pair.replace('/', '')}-{horizon}m",
        version="3",
        alias="champion",
        run_id="r1",
        model_type="xgboost",
        feature_service="price_regression_1m",
        views=views,
        features=FEATURES,
        loaded_at=datetime.now(UTC),
        pyfunc=pyfunc or CountingModel(),
        memoize=memoize,
    )


def stored(value) -> Value:
    """A value as the online store returns it (an empty Value: written without a value)."""
    if value is None:
        return Value()
    return Value(int64_val=value) if isinstance(value, int) else Value(double_val=value)


def view_rows(features, rows) -> tuple:
    """One view's read: its features and, per pair, (event time, values) or (None, None) when never written."""
    return ViewRead(view=None, features=tuple(features)), [
        (None, None) if r is None else (datetime.fromtimestamp(r[0], UTC), {n: stored(v) for n, v in r[1].items()})
        for r in rows
    ]


def test_online_rows_keep_request_order_and_flag_missing_values():
    full = {name: 1.0 for name in INDICATOR_FEATURES}
    reads = [
        view_rows(
            OHLCV_FEATURES,
            [
                (T0, {**{n: 1.0 for n in OHLCV_FEATURES}, "close": 100.0, "trade_count": 7}),
                (T0, {**{n: 1.0 for n in OHLCV_FEATURES}, "close": 5.0}),
                None,
            ],
        ),
        view_rows(
            INDICATOR_FEATURES, [(T0 - 60, {**full, "rsi_14": 50.0}), (T0, {**full, "rsi_14": float("nan")}), None]
        ),
    ]
    btc, eth, sol = rows_from_reads(reads, ["BTC/USD", "ETH/USD", "SOL/USD"])
    assert (btc.pair, eth.pair, sol.pair) == ("BTC/USD", "ETH/USD", "SOL/USD")
    assert btc.missing == () and btc.values["close"] == 100.0 and btc.values["trade_count"] == 7
    assert list(btc.values) == list(FEATURES)
    # The oldest event time among the views that gave values: the indicators row is a minute behind.
    assert btc.feature_time == datetime.fromtimestamp(T0 - 60, UTC)
    assert eth.missing == ("rsi_14",) and eth.feature_time == datetime.fromtimestamp(T0, UTC)
    assert set(sol.missing) == set(FEATURES) and sol.feature_time is None


def test_a_view_without_values_does_not_date_the_row():
    reads = [
        view_rows(OHLCV_FEATURES, [(T0, {n: 2.0 for n in OHLCV_FEATURES})]),
        view_rows(INDICATOR_FEATURES, [(T0 - 600, {n: None for n in INDICATOR_FEATURES})]),
    ]
    (row,) = rows_from_reads(reads, ["XRP/USD"])
    assert row.feature_time == datetime.fromtimestamp(T0, UTC)
    assert row.missing == tuple(INDICATOR_FEATURES)


def _row(pair: str = "BTC/USD", seconds: int = T0, missing: tuple[str, ...] = ()) -> FeatureRow:
    return FeatureRow(pair, {name: 1.0 for name in FEATURES}, datetime.fromtimestamp(seconds, UTC), missing)


def test_rows_are_checked_for_presence_completeness_and_age():
    model = served()
    assert check_row(_row(), model, now=T0 + 30, max_age_s=180) == (None, None)
    problem, age = check_row(_row(), model, now=T0 + 400, max_age_s=180)
    assert "400 s old" in problem and "180 s limit" in problem and age == pytest.approx(400)
    # 0 turns the age check off (replayed or historical data).
    assert check_row(_row(), model, now=T0 + 10**6, max_age_s=0) == (None, None)
    problem, age = check_row(_row(missing=("macd", "obv")), model, now=T0, max_age_s=180)
    assert "macd" in problem and age is None
    absent = FeatureRow("BTC/USD", {}, None, FEATURES)
    assert check_row(absent, model, now=T0, max_age_s=180)[0] == "BTC/USD: no features in the online store"


def _window_row(length: int, nan_at: dict[str, int] | None = None) -> FeatureRow:
    values = {name: [float(100 * i + j) for j in range(length)] for i, name in enumerate(FEATURES)}
    for name, position in (nan_at or {}).items():
        values[name][position] = float("nan")
    return FeatureRow("BTC/USD", values, datetime.fromtimestamp(T0, UTC), ())


def test_a_window_row_is_checked_for_length_and_warm_up_and_read_oldest_first():
    model = dataclasses.replace(served(), history=3, window_view="candle_windows_1m")
    assert model.sequence and not served().sequence
    problem, _ = check_row(_window_row(2), model, now=T0, max_age_s=180)
    assert "holds 2 candles; the model reads 3" in problem
    # A NaN before the model's window does not matter; inside it, it does.
    assert check_row(_window_row(5, {"rsi_14": 1}), model, now=T0, max_age_s=180) == (None, None)
    problem, _ = check_row(_window_row(5, {"rsi_14": 3}), model, now=T0, max_age_s=180)
    assert "rsi_14" in problem and "last 3 candles" in problem
    rows = window_rows(_window_row(5), model)
    assert len(rows) == 3 and len(rows[0]) == len(FEATURES)
    assert [r[0] for r in rows] == [2.0, 3.0, 4.0] and rows[-1][1] == 104.0


def test_a_sequence_model_forecasts_from_the_latest_candle_of_its_window():
    model = dataclasses.replace(served(), history=3, window_view="candle_windows_1m")
    rows = window_rows(_window_row(3), model)
    log_return, price = model.predict_window(rows)
    close = rows[-1][FEATURES.index("close")]
    assert log_return == pytest.approx(0.001) and price == pytest.approx(close * math.exp(0.001))
    assert model.predict_window(rows) == (log_return, price) and model.pyfunc.calls == 1


def test_the_stream_keeps_a_window_per_pair_for_sequence_models():
    model = dataclasses.replace(served(), history=2, window_view="candle_windows_1m")
    window: list = []
    row = {name: 1.0 for name in FEATURES}
    push_row(window, {**row, "rsi_14": None}, CANDLE_FEATURES, 3)
    assert recent_rows(window, model) is None  # one row only
    push_row(window, row, CANDLE_FEATURES, 3)
    assert recent_rows(window, model) is None  # rsi_14 still warming up in the window
    push_row(window, {**row, "close": 2.0}, CANDLE_FEATURES, 3)
    push_row(window, {**row, "close": 3.0}, CANDLE_FEATURES, 3)
    rows = recent_rows(window, model)
    assert len(window) == 3 and [r[FEATURES.index("close")] for r in rows] == [2.0, 3.0]


def _predictor(pairs=("BTC/USD", "ETH/USD"), horizons=(1, 5)) -> Predictor:
    store = ModelStore(
        client=None,
        tracking_uri="",
        feature_services=lambda name: None,
        keys=[ModelKey(p, h) for p in pairs for h in horizons],
    )
    return Predictor(store, features=None, max_feature_age_s=180)


def test_request_keys_name_what_is_served():
    predictor = _predictor()
    assert predictor.keys_for(["ETH/USD", "BTC/USD"], None) == [ModelKey("ETH/USD", 1), ModelKey("BTC/USD", 1)]
    assert predictor.keys_for(["BTC/USD"], 5) == [ModelKey("BTC/USD", 5)]
    with pytest.raises(NotServed) as unknown:
        predictor.keys_for(["BTC/USD", "DOGE/USD", "SHIB/USD"], None)
    assert unknown.value.status_code == 404
    assert unknown.value.body["served_pairs"] == ["BTC/USD", "ETH/USD"]
    assert "DOGE/USD, SHIB/USD" in unknown.value.detail
    with pytest.raises(NotServed) as horizon:
        predictor.keys_for(["BTC/USD"], 15)
    assert horizon.value.body["served_horizons"] == [1, 5]


def test_a_store_is_ready_only_with_a_model_per_key():
    store = _predictor().models
    assert not store.ready()
    assert store.problem(ModelKey("BTC/USD", 1)) == "price-BTCUSD-1m: not loaded yet"
    assert store.selector == "alias 'champion'"
    pinned = ModelStore(client=None, tracking_uri="", feature_services=lambda name: None, keys=[], version=4)
    assert pinned.selector == "version 4" and pinned.alias is None


def test_the_output_for_an_unchanged_row_is_reused():
    model = served()
    row = tuple(float(i + 1) for i in range(len(FEATURES)))
    first = model.predict_row(row)
    assert model.predict_row(row) == first and model.pyfunc.calls == 1
    changed = (row[0] + 1.0, *row[1:])
    model.predict_row(changed)
    assert model.pyfunc.calls == 2
    close = row[FEATURES.index("close")]
    assert first == pytest.approx((0.001, close * math.exp(0.001)))
    unmemoized = served(memoize=False)
    unmemoized.predict_row(row)
    unmemoized.predict_row(row)
    assert unmemoized.pyfunc.calls == 2


def test_feature_service_layout_and_signature_check():
    views, features = service_layout(definitions.price_regression_1m)
    assert views == ("ohlcv_1m", "indicators_1m") and features == FEATURES
    check_inputs(["close", "rsi_14"], features, "m v1")
    with pytest.raises(ModelLoadError, match="book_imbalance"):
        check_inputs(["close", "book_imbalance"], features, "m v1")
    assert sequence_length({}) == 1 and sequence_length({"model_sequence_length": "60"}) == 60


def test_live_scores_match_the_training_metrics():
    rng = np.random.default_rng(0)
    current = 100 + rng.normal(0, 1, 50)
    actual = current + rng.normal(0, 0.5, 50)
    actual[::7] = current[::7]  # some candles that did not move
    predicted = current + rng.normal(0, 0.5, 50)
    predicted[::5] = current[::5]  # some forecasts of no move
    score = new_score()
    for i, (c, a, p) in enumerate(zip(current, actual, predicted, strict=True)):
        score = update_score(score, c, a, p, target_time_ms=60_000 * i)
    live = score_metrics(score)
    expected = price_metrics(current, actual, predicted)
    baseline = price_metrics(current, actual, current)
    assert live["live_mae"] == pytest.approx(expected["mae"])
    assert live["live_directional_accuracy"] == pytest.approx(expected["directional_accuracy"])
    assert live["live_baseline_mae"] == pytest.approx(baseline["mae"])
    assert live["live_mae_ratio"] == pytest.approx(expected["mae"] / baseline["mae"])
    assert live["live_evaluated"] == 50
    assert all(math.isnan(v) for k, v in score_metrics(new_score()).items() if k != "live_evaluated")


class DictState:
    """Quix's State interface (get/set) over a dict: the step is a pure function of its state."""

    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value) -> None:
        self.values[key] = value


def test_a_redelivered_prediction_is_scored_once():
    state = DictState()
    record = {
        "model_name": "price-BTCUSD-1m",
        "model_version": "3",
        "pair": "BTC/USD",
        "horizon_minutes": 1,
        "current_price": 100.0,
        "realised_price": 101.0,
        "predicted_price": 100.5,
    }
    first = score_step({**record, "target_time_ms": 120_000}, state)
    assert first["live_evaluated"] == 1 and first["live_mae"] == pytest.approx(0.5)
    assert score_step({**record, "target_time_ms": 120_000}, state) is None
    assert score_step({**record, "target_time_ms": 60_000}, state) is None
    later = score_step({**record, "target_time_ms": 180_000, "predicted_price": 101.0}, state)
    assert later["live_evaluated"] == 2 and later["live_mae"] == pytest.approx(0.25)


def test_a_prediction_is_realised_only_by_a_candle_of_its_interval():
    prediction = {"pair": "BTC/USD", "interval": "1m", "predicted_price": 10.0}
    assert realised(prediction, {"interval": "1m", "close": 11.0})["realised_price"] == 11.0
    assert realised(prediction, {"interval": "5m", "close": 11.0}) is None


def test_prediction_records_and_their_offline_rows(tmp_path):
    model = served(horizon=5)
    row = {"pair": "BTC/USD", "interval": "1m", "window_end_ms": T0 * 1000, "close": 100.0}
    record = prediction_record(model, row, 0.001, 100.1, now_ms=T0 * 1000 + 250)
    assert record["target_time_ms"] == T0 * 1000 + 5 * 60_000
    assert (record["model_name"], record["model_version"], record["horizon_minutes"]) == ("price-BTCUSD-5m", "3", 5)
    frame = prediction_frame([record, {**record, "prediction_id": "later", "predicted_at_ms": T0 * 1000 + 900}])
    assert frame["event_timestamp"].iloc[0] == pd.Timestamp(T0, unit="s", tz="UTC")
    parquet_writer.write_rows(tmp_path, frame, PREDICTIONS_SCHEMA)
    stored = pq.read_table(next(tmp_path.glob("*/*.parquet"))).to_pandas()
    # One row per pair and candle: the newest prediction wins, as in the feature views.
    assert len(stored) == 1 and stored["prediction_id"].iloc[0] == "later"


def test_a_model_reads_rows_of_its_own_interval():
    assert serves_interval(served(), "1m")
    assert not serves_interval(served(), "5m")
    assert not serves_interval(served(views=("orderbook_4s",)), "1m")


def test_requests_are_counted_by_route_template():
    metrics = ApiMetrics()
    app = FastAPI()
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    @app.get("/items/{item}")
    async def item(item: int) -> dict:
        return {"item": item}

    client = TestClient(app)
    client.get("/items/1")
    client.get("/items/2")
    client.get("/items/x")
    client.get("/nowhere")
    sample = metrics.registry.get_sample_value
    assert sample("coinflow_api_requests_total", {"route": "/items/{item}", "method": "GET", "status": "200"}) == 2
    assert sample("coinflow_api_requests_total", {"route": "/items/{item}", "method": "GET", "status": "422"}) == 1
    assert sample("coinflow_api_requests_total", {"route": "unmatched", "method": "GET", "status": "404"}) == 1
    assert sample("coinflow_api_request_duration_seconds_count", {"route": "/items/{item}", "method": "GET"}) == 3


def test_served_pairs_and_horizons_default_to_training(monkeypatch):
    monkeypatch.setenv("COINFLOW_TRAINING_PAIRS", "BTC/USD,ETH/USD")
    monkeypatch.setenv("COINFLOW_HORIZON_MINUTES", "5")
    settings = Settings(_env_file=None)
    assert settings.serve.pairs == ["BTC/USD", "ETH/USD"] and settings.serve.horizons == [5]
    monkeypatch.setenv("COINFLOW_SERVE_HORIZONS", "1, 5")
    monkeypatch.setenv("COINFLOW_SERVE_PAIRS", "SOL/USD")
    settings = Settings(_env_file=None)
    assert settings.serve.pairs == ["SOL/USD"] and settings.serve.horizons == [1, 5]


def test_a_horizon_is_an_integer_never_a_boolean_or_text():
    assert PredictRequest.model_validate({"pair": "BTC/USDC", "horizon": None}).horizon is None
    assert PredictRequest.model_validate({"pair": "BTC/USDC", "horizon": 2.0}).horizon == 2  # JSON Schema's integer
    for horizon in (True, False, "1", 1.5, 0, 10_081):
        with pytest.raises(ValueError):
            PredictRequest.model_validate({"pair": "BTC/USDC", "horizon": horizon})
        with pytest.raises(ValueError):
            BatchPredictRequest.model_validate({"pairs": ["BTC/USDC"], "horizon": horizon})
