"""The pair jobs' pure steps: candidates as leg memberships, candles routed to every pair of their ticker, and the
per-pair step (warm-up fit, then the streaming Kalman spread equal to the batch filter, the half-life window),
with stale, missing and replayed legs counted; the stateful steps of the dataflow on a dict-backed state."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from coinflow.hedge import estimate_noise, kalman_hedge
from coinflow.mean_reversion import half_life
from coinflow.pairs import pair_id
from coinflow.quality import Rejects
from feature_pipeline.pairs import dataflow
from feature_pipeline.pairs.dataflow import route, run_job
from feature_pipeline.transforms import pair_spread
from feature_pipeline.transforms.pair_spread import (
    NO_JOB,
    NO_X_LEG,
    NOISE_FIT_FAILED,
    NOT_AFTER_LAST,
    STALE_LEG,
    PairJobParams,
    apply_membership,
    candidate_reason,
    leg_candle_reason,
    memberships,
    merge_legs,
    new_job,
    pair_step,
    route_candle,
)
from tests.support.pairs_synthetic import ar1, random_walk

MINUTE_MS = 60_000
T0 = 1_700_000_040_000
PARAMS = PairJobParams(warmup_bars=200, half_life_window=50, max_leg_age_ms=2 * MINUTE_MS)
PAIR = pair_id("ETH/USDT", "BTC/USDT")


def candidate(event: str = "enter", y: str = "ETH/USDT", x: str = "BTC/USDT", ms: int = T0) -> dict:
    return {"pair_id": pair_id(y, x), "event": event, "timestamp_ms": ms, "y": y, "x": x, "hedge_ratio": 1.2,
            "half_life": 30.0, "hurst": 0.3, "p_adjusted": 0.01, "reasons": []}  # fmt: skip


def leg(role: str, ms: int, close: float, pid: str = PAIR) -> dict:
    return {"pair_id": pid, "role": role, "ticker": "ETH/USDT" if role == "y" else "BTC/USDT", "window_end_ms": ms,
            "close": close}  # fmt: skip


def log_prices(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """log x a random walk, log y = 1.5 log x + 1 + an AR(1) spread (phi 0.9)."""
    rng = np.random.default_rng(seed)
    log_x = random_walk(rng, n, start=np.log(100))
    return log_x, 1.5 * log_x + 1.0 + ar1(rng, n, 0.9)


def run(job: dict, xs: np.ndarray, ys: np.ndarray, params: PairJobParams = PARAMS) -> tuple[list[dict], list[str]]:
    """The step over candles of both legs at the same minutes, the job round-tripped through JSON (as the state
    store keeps it) between candles."""
    rows, counted = [], []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        ms = T0 + i * MINUTE_MS
        row, c = pair_step(job, merge_legs(leg("y", ms, math.exp(y)), leg("x", ms, math.exp(x))), params)
        job = json.loads(json.dumps(job))
        counted += c
        if row is not None:
            rows.append(row)
    return rows, counted


def test_candidate_records_are_checked():
    assert candidate_reason(candidate(), PAIR) is None and candidate_reason(candidate("leave"), None) is None
    assert candidate_reason("text", None) == "not_an_object"
    assert candidate_reason({**candidate(), "event": "pause"}, None) == "unknown_event"
    assert candidate_reason({**candidate(), "x": None}, None) == "missing_legs"
    assert candidate_reason(candidate(x="ETH/USDT"), None) == "missing_legs"
    assert candidate_reason({**candidate(), "pair_id": "BTC-USDT__ETH-USDT"}, None) == "pair_id_mismatch"
    assert candidate_reason(candidate(), "SOL-USDT__BTC-USDT") == "pair_id_mismatch"
    assert candidate_reason({**candidate(), "timestamp_ms": "soon"}, None) == "bad_timestamp"


def test_leg_candles_are_checked():
    good = {"pair": "ETH/USDT", "interval": "1m", "window_end_ms": T0, "close": 2000.5}
    assert leg_candle_reason(good, "ETH/USDT") is None
    assert leg_candle_reason({**good, "interval": "2m"}, None) == "missing_pair_or_interval"
    assert leg_candle_reason(good, "BTC/USDT") == "key_mismatch"
    assert leg_candle_reason({**good, "window_end_ms": 1.5}, None) == "bad_timestamp"
    for close in (0, -3.0, math.nan, math.inf, "2000", True, None):
        assert leg_candle_reason({**good, "close": close}, None) == "non_positive_or_nan", close


def test_a_ticker_routes_its_candles_to_every_pair_it_is_a_leg_of_until_they_leave():
    legs: dict[str, str] = {}
    other = pair_id("SOL/USDT", "BTC/USDT")
    for record in [*memberships(candidate()), *memberships(candidate(y="SOL/USDT"))]:
        if record["ticker"] == "BTC/USDT":
            control = apply_membership(legs, record)
            assert control["control"] == "enter" and control["role"] == "x"
    assert legs == {PAIR: "x", other: "x"}
    candle = {"pair": "BTC/USDT", "interval": "1m", "window_end_ms": T0, "close": 40_000}
    assert [(r["pair_id"], r["role"]) for r in route_candle(legs, candle)] == [(PAIR, "x"), (other, "x")]
    leave = next(r for r in memberships(candidate("leave")) if r["ticker"] == "BTC/USDT")
    assert apply_membership(legs, leave)["control"] == "leave"
    assert [r["pair_id"] for r in route_candle(legs, candle)] == [other]
    assert route_candle({}, candle) == []


def test_warm_up_then_the_streaming_spread_equals_the_batch_filter_fitted_on_the_warm_up():
    xs, ys = log_prices(600)
    rows, counted = run(new_job(candidate()), xs, ys)
    assert counted == [] and len(rows) == 600
    w = PARAMS.warmup_bars
    assert all(math.isnan(r["z"]) and math.isnan(r["beta"]) for r in rows[:w])  # the fit saw these candles
    batch = kalman_hedge(xs, ys, estimate_noise(xs[:w], ys[:w]))
    for column in ("beta", "spread", "z"):
        np.testing.assert_allclose([r[column] for r in rows[w:]], batch[column].iloc[w:], rtol=1e-9, atol=1e-12)
    spreads = batch["spread"].to_numpy()
    expected_hl = [half_life(spreads[i - PARAMS.half_life_window + 1 : i + 1]) for i in range(w, 600)]
    np.testing.assert_allclose([r["half_life"] for r in rows[w:]], expected_hl, rtol=1e-9)
    assert 1.5 < np.median(expected_hl) < 20  # phi 0.9: about 6.6 bars
    assert abs(rows[-1]["beta"] - 1.5) < 0.3  # a drifting beta, identified from 600 bars
    first = rows[w]
    assert first["pair_id"] == PAIR and first["window_end_ms"] == T0 + w * MINUTE_MS and first["x_lag_s"] == 0
    assert first["y_close"] == pytest.approx(math.exp(ys[w])) and first["x_close"] == pytest.approx(math.exp(xs[w]))


def test_a_row_depends_on_no_later_candle():
    xs, ys = log_prices(400)
    changed = xs.copy()
    changed[300:] += 0.5
    before, _ = run(new_job(candidate()), xs, ys)
    after, _ = run(new_job(candidate()), changed, ys)
    assert before[:300] == after[:300] and before[300] != after[300]


def test_stale_missing_and_replayed_legs_are_counted_and_leave_the_job_as_it_was():
    job = new_job(candidate())
    row, counted = pair_step(job, merge_legs(leg("y", T0, 10.0), None), PARAMS)
    assert row is None and counted == [NO_X_LEG]
    stale = merge_legs(leg("y", T0 + 3 * MINUTE_MS, 10.0), leg("x", T0, 20.0))
    assert pair_step(job, stale, PARAMS) == (None, [STALE_LEG]) and job == new_job(candidate())
    fresh = merge_legs(leg("y", T0 + 2 * MINUTE_MS, 10.0), leg("x", T0, 20.0))  # at the max age: joined
    row, counted = pair_step(job, fresh, PARAMS)
    assert row is not None and row["x_lag_s"] == 120 and counted == []
    assert pair_step(job, fresh, PARAMS) == (None, [NOT_AFTER_LAST]) and len(job["warmup"]) == 1


def test_a_failed_fit_is_counted_and_the_warm_up_starts_again(monkeypatch):
    def fail(x, y):
        raise np.linalg.LinAlgError("singular")

    monkeypatch.setattr(pair_spread, "estimate_noise", fail)
    xs, ys = log_prices(250)
    job = new_job(candidate())
    rows, counted = run(job, xs, ys)
    assert counted == [NOISE_FIT_FAILED] and len(rows) == 250 and all(math.isnan(r["z"]) for r in rows)


class DictState:
    """The part of Quix's State the steps use."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: object) -> None:
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def test_the_router_step_fans_out_and_dead_letters_bad_candles():
    rejects = Rejects("test_legs")
    step, state = route(rejects), DictState()
    y_member = memberships(candidate())[0]
    assert step(y_member, "ETH/USDT", T0, None, state)[0]["control"] == "enter"
    candle = {"pair": "ETH/USDT", "interval": "1m", "window_end_ms": T0 + MINUTE_MS, "close": 2000.0}
    assert [r["role"] for r in step(candle, "ETH/USDT", 0, None, state)] == ["y"]
    assert step({**candle, "interval": "5m"}, "ETH/USDT", 0, None, state) == []
    assert step({"control": "end", "pair": "ETH/USDT"}, "ETH/USDT", 0, None, state) == []
    [dead] = step({**candle, "close": -1}, "ETH/USDT", 0, None, state)
    assert dead["reason"] == "non_positive_or_nan" and rejects.counts == {"non_positive_or_nan": 1}
    step({**y_member, "event": "leave"}, "ETH/USDT", 0, None, state)
    assert step(candle, "ETH/USDT", 0, None, state) == [] and state.values == {}


def test_the_job_step_starts_on_enter_and_drops_its_state_on_leave():
    skipped = Rejects("test_jobs")
    step, state = run_job(PARAMS, skipped), DictState()
    control = apply_membership({}, memberships(candidate())[0])
    y_candle = merge_legs(leg("y", T0 + MINUTE_MS, 10.0), leg("x", T0 + MINUTE_MS, 20.0))
    assert step(y_candle, PAIR, 0, None, state) is None and skipped.counts == {NO_JOB: 1}
    assert step(merge_legs(control, None), PAIR, 0, None, state) is None
    assert step(y_candle, PAIR, 0, None, state)["pair_id"] == PAIR
    step(merge_legs(control, None), PAIR, 0, None, state)  # a replayed enter keeps the job
    assert state.values[dataflow.JOB_KEY]["last_ms"] == T0 + MINUTE_MS
    step(merge_legs({**control, "control": "leave"}, None), PAIR, 0, None, state)
    assert state.values == {} and step(y_candle, PAIR, 0, None, state) is None and skipped.counts == {NO_JOB: 2}
