"""The pair jobs' pure steps: `pair_candidates` records -> which pairs each ticker is a leg of, a ticker's candle ->
its pairs' leg records, and one pair's joined legs -> its spread row (Kalman hedge, z-score, half-life).

A pair job's state (a JSON-able dict, kept per pair id) is created when the pair
enters and dropped when it leaves. The filter's parameters are not in the
candidate record (it carries discovery's OLS hedge ratio only): the job
estimates them by maximum likelihood (`coinflow.hedge.estimate_noise`) on its
first ``warmup_bars`` joined candles, of log prices, and keeps them for its
life. Those candles' rows are written with NaN features (their own candles are
in the fit); the filter then runs over the warm-up candles, so the first row
after them has a warm hedge and a window of spreads, and every later row uses
only candles at or before its own (the hedge before the candle, as
`KalmanHedge.update` gives it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from coinflow.hedge import KalmanHedge, NoiseVariances, estimate_noise
from coinflow.mean_reversion import half_life
from coinflow.pairs import pair_id
from coinflow.schemas import INTERVALS_SECONDS

ENTER, LEAVE = "enter", "leave"
ROLE_Y, ROLE_X = "y", "x"
# Counted, not dead-lettered: the pair's data, not a broken record.
STALE_LEG = "stale_leg"  # x's latest candle is older than the max leg age
NO_X_LEG = "no_x_leg"  # no candle of x at or before y's yet
NO_JOB = "no_job"  # a leg record of a pair that is not (or no longer) a candidate
NOT_AFTER_LAST = "not_after_last"  # a y candle not after the pair's last one (a replay)
NOISE_FIT_FAILED = "noise_fit_failed"  # the warm-up's likelihood fit failed: the warm-up starts again


@dataclass(frozen=True)
class PairJobParams:
    warmup_bars: int
    half_life_window: int
    max_leg_age_ms: int


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def candidate_reason(record: object, key: str | None) -> str | None:
    """Why a `pair_candidates` record cannot start or stop a job (what the jobs read: its pair id, event, time and
    legs, the id spelled from the legs), or None."""
    if not isinstance(record, dict):
        return "not_an_object"
    if record.get("event") not in (ENTER, LEAVE):
        return "unknown_event"
    y, x, pid = record.get("y"), record.get("x"), record.get("pair_id")
    if not (isinstance(y, str) and isinstance(x, str) and isinstance(pid, str)) or not y or not x or y == x:
        return "missing_legs"
    if pid != pair_id(y, x) or (key is not None and key != pid):
        return "pair_id_mismatch"
    if not _is_int(record.get("timestamp_ms")):
        return "bad_timestamp"
    return None


def memberships(candidate: dict) -> list[dict]:
    """A candidate record as one record per leg (for its ticker's router): the pair, the leg's role, the event."""
    base = {k: candidate[k] for k in ("pair_id", "event", "timestamp_ms", "y", "x")}
    return [{**base, "ticker": candidate["y"], "role": ROLE_Y}, {**base, "ticker": candidate["x"], "role": ROLE_X}]


def apply_membership(legs: dict[str, str], membership: dict) -> dict:
    """Update a ticker's pairs ({pair_id: role}) with an enter or leave; returns the control record its leg's topic
    gets (in order with that ticker's candles, so the pair job sees where its legs start and stop)."""
    if membership["event"] == ENTER:
        legs[membership["pair_id"]] = membership["role"]
    else:
        legs.pop(membership["pair_id"], None)
    return {"control": membership["event"], **{k: membership[k] for k in ("pair_id", "role", "y", "x", "timestamp_ms")}}


def leg_candle_reason(record: object, key: str | None) -> str | None:
    """Why a candle cannot be a leg's (what the jobs read: its pair, interval, close time and a positive finite
    close), or None."""
    if not isinstance(record, dict):
        return "not_an_object"
    if not isinstance(record.get("pair"), str) or record.get("interval") not in INTERVALS_SECONDS:
        return "missing_pair_or_interval"
    if key is not None and record["pair"] != key:
        return "key_mismatch"
    if not _is_int(record.get("window_end_ms")):
        return "bad_timestamp"
    close = record.get("close")
    if not isinstance(close, int | float) or isinstance(close, bool) or not (math.isfinite(close) and close > 0):
        return "non_positive_or_nan"
    return None


def route_candle(legs: dict[str, str], candle: dict) -> list[dict]:
    """A ticker's candle as a leg record of each pair it is a leg of (none: no candidate pair has it)."""
    return [
        {"pair_id": pid, "role": role, "ticker": candle["pair"], "window_end_ms": candle["window_end_ms"],
         "close": float(candle["close"])}
        for pid, role in sorted(legs.items())
    ]  # fmt: skip


def merge_legs(y: dict, x: dict | None) -> dict:
    """The as-of join's record: y's leg record (or control) and x's latest candle at or before it (None: none)."""
    return {"y": y, "x": x}


def new_job(control: dict) -> dict:
    """A pair job's state when the pair enters."""
    return {
        "pair_id": control["pair_id"], "y": control["y"], "x": control["x"], "entered_ms": control["timestamp_ms"],
        "last_ms": None, "warmup": [], "noise": None, "kalman": None, "spreads": [],
    }  # fmt: skip


def _noise_state(noise: NoiseVariances) -> dict[str, Any]:
    return {"beta": noise.beta, "intercept": noise.intercept, "phi": noise.phi, "sigma2": noise.sigma2,
            "converged": noise.converged}  # fmt: skip


def warm_up(job: dict, params: PairJobParams) -> str | None:
    """Fit the filter on the warm-up candles and run it over them (their spreads start the half-life window);
    a failed fit empties the warm-up (returns its reason)."""
    xs, ys = np.array(job["warmup"]).T
    job["warmup"] = []
    try:
        noise = estimate_noise(xs, ys)
    except Exception:  # noqa: BLE001 - statsmodels' optimiser fails in many ways on degenerate data; never a crash
        return NOISE_FIT_FAILED
    if not all(map(math.isfinite, (noise.beta, noise.intercept, noise.phi, noise.sigma2))):
        return NOISE_FIT_FAILED
    hedge = KalmanHedge(noise)
    spreads = [hedge.update(float(x), float(y)).spread for x, y in zip(xs, ys, strict=True)]
    job["noise"], job["kalman"] = _noise_state(noise), hedge.state()
    job["spreads"] = spreads[-params.half_life_window :]
    return None


def spread_features(job: dict, log_x: float, log_y: float, params: PairJobParams) -> dict[str, float]:
    """One candle through a warm job: the hedge known before it, the spread and z at it, the half-life over the
    window of spreads that ends with it; the state moves past the candle."""
    hedge = KalmanHedge.from_state(NoiseVariances(**job["noise"]), job["kalman"])
    step = hedge.update(log_x, log_y)
    job["kalman"] = hedge.state()
    job["spreads"] = [*job["spreads"], step.spread][-params.half_life_window :]
    return {"beta": step.beta, "spread": step.spread, "z": step.z, "half_life": half_life(np.array(job["spreads"]))}


NAN_FEATURES = {"beta": math.nan, "spread": math.nan, "z": math.nan, "half_life": math.nan}


def pair_step(job: dict, joined: dict, params: PairJobParams) -> tuple[dict | None, list[str]]:
    """One y candle of a pair with x's latest candle at or before it -> the pair's row (pair_id, window_end_ms of
    y, both closes, x's lag, beta, spread, z, half-life; NaN features while warming up) or None, and what to count
    (a stale or missing x leg, a replayed candle, a failed fit). Updates `job` in place."""
    y, x = joined["y"], joined["x"]
    y_ms = y["window_end_ms"]
    if job["last_ms"] is not None and y_ms <= job["last_ms"]:
        return None, [NOT_AFTER_LAST]
    if x is None:
        return None, [NO_X_LEG]
    if y_ms - x["window_end_ms"] > params.max_leg_age_ms:
        return None, [STALE_LEG]
    job["last_ms"] = y_ms
    log_x, log_y = math.log(x["close"]), math.log(y["close"])
    counted: list[str] = []
    if job["noise"] is not None:
        features = spread_features(job, log_x, log_y, params)
    else:
        features = NAN_FEATURES
        job["warmup"].append([log_x, log_y])
        if len(job["warmup"]) >= params.warmup_bars and (reason := warm_up(job, params)) is not None:
            counted.append(reason)
    row = {
        "pair_id": job["pair_id"], "window_end_ms": y_ms, "y_close": y["close"], "x_close": x["close"],
        "x_lag_s": (y_ms - x["window_end_ms"]) / 1000, **features,
    }  # fmt: skip
    return row, counted
