"""Benchmark of the pairs orchestrator's step (`transforms.pair_orchestration.orchestrate`): its cost per candle and
per re-test, and the pair jobs alive, at 20, 100 and 500 tickers.

    .venv/bin/python -m bench.bench_pairs_orchestrator [--sizes 20,100,500] [--hours 24] [--json]

Input: the real Binance 1-minute files tiled as `bench.bench_pairs_discovery.tiled_universe` does (same copies,
perturbations and planted pairs). The stream is one re-test window (COINFLOW_PAIRS_RETEST_WINDOW_BARS, a week) of
warm-up, then ``--hours`` of candles, every ticker's candle of a minute in ticker order, with the default settings
(re-test every COINFLOW_PAIRS_RETEST_INTERVAL_S). Measured after the warm-up: CPU time of the candle path and of
the re-tests (discovery and the tracker), as a fraction of one core at 1-minute candles (CPU seconds over the
event-time seconds streamed), and the pairs alive after each re-test (the pair jobs pairs-live would run). The
state is a dict (`DictStore`): Quix's state serialisation and the broker are not in these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from bench.bench_feature_pipeline import console, machine_info
from bench.bench_pairs_discovery import DATA, real_log_prices, tiled_universe
from coinflow.settings import PairsTrading
from feature_pipeline.transforms.pair_orchestration import (
    ALIVE_KEY,
    META_KEY,
    DictStore,
    orchestrate,
    orchestrator_params,
)


def run_size(real: pd.DataFrame, size: int, settings: PairsTrading) -> dict:
    log_prices, _ = tiled_universe(real, size, seed=size)
    closes = np.exp(log_prices)
    times = (closes.index.asi8 // 1_000_000).tolist()
    tickers = [str(t) for t in closes.columns]
    values = closes.to_numpy()
    params = orchestrator_params(settings)
    store = DictStore()
    warmup = settings.retest_window_bars
    candle_cpu = retest_cpu = 0.0
    retests, enters, leaves, alive, candles = 0, 0, 0, [], 0
    for i, ms in enumerate(times):
        for j, ticker in enumerate(tickers):
            close = values[i, j]
            if not np.isfinite(close):
                continue
            before = (store.get(META_KEY) or {}).get("retested_ms")
            start = time.process_time()
            out = orchestrate(store, ticker, ms, float(close), params)
            spent = time.process_time() - start
            if i < warmup:
                continue
            candles += 1
            if (store.get(META_KEY) or {}).get("retested_ms") == before:
                candle_cpu += spent
                continue
            retest_cpu += spent
            retests += 1
            records = out if isinstance(out, list) else []
            enters += sum(r["event"] == "enter" for r in records)
            leaves += sum(r["event"] == "leave" for r in records)
            alive.append(len(store.get(ALIVE_KEY) or []))
    span_s = (times[-1] - times[warmup - 1]) / 1000
    return {
        "tickers": size,
        "candles": candles,
        "retests": retests,
        "us_per_candle": 1e6 * candle_cpu / max(candles - retests, 1),
        "s_per_retest": retest_cpu / max(retests, 1),
        "core_pct": 100 * (candle_cpu + retest_cpu) / span_s,
        "alive_mean": float(np.mean(alive)) if alive else 0.0,
        "alive_max": max(alive, default=0),
        "enters": enters,
        "leaves": leaves,
    }


def results_table(rows: list[dict], machine: dict, hours: float) -> Table:
    table = Table(title=f"pairs orchestrator: {hours:g} h of 1-minute candles after a week's warm-up (tiled files)")
    for column in (
        "tickers",
        "re-tests",
        "per candle",
        "per re-test",
        "% of one core",
        "pair jobs alive",
        "enter/leave",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["tickers"]), str(r["retests"]), f"{r['us_per_candle']:.1f} µs", f"{r['s_per_retest']:.2f} s",
            f"{r['core_pct']:.2f} %", f"{r['alive_mean']:.1f} mean, {r['alive_max']} max",
            f"{r['enters']} / {r['leaves']}",
        )  # fmt: skip
    table.caption = (
        f"{machine['cpu_model']}, {machine['cores_usable']} cores, "
        f"load {machine['load_start']:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,100,500", help="universe sizes, comma-separated")
    parser.add_argument("--hours", type=float, default=24.0, help="hours streamed after the warm-up window")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    settings = PairsTrading()
    machine = machine_info()
    real = real_log_prices(args.data)
    real = real.iloc[: settings.retest_window_bars + int(args.hours * 60) + 1]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(run_size(real, size, settings))
        console.print(rows[-1])
    console.print(results_table(rows, machine, args.hours))
    if args.json:
        console.print_json(json.dumps({"machine": machine, "hours": args.hours, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
