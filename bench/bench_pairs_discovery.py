"""Benchmark of pair discovery: clustered screening (`discover`) against testing all pairs (`all_pairs`).

    .venv/bin/python -m bench.bench_pairs_discovery [--sizes 20,100,500] [--bars 10080] [--sample 1000] [--json]

Input: the real Binance 1-minute candles of 23 USDT pairs (../shared/data/binance/1m_2021-05-15_2021-06-05/,
read with `coinflow.exchange_files.read_candle_file`), log closes over the latest ``--bars`` minutes (by default
one re-test window, COINFLOW_PAIRS_RETEST_WINDOW_BARS: a week). A universe of N tickers: the real tickers first,
then copies (``ETH7/USDT`` is copy 7 of ETH/USDT): the real log price + log of a scale drawn log-uniformly in
[0.5, 2] + a perturbation whose step is 0.3 times the real ticker's 1-minute return standard deviation (seeded,
one generator per size): a random walk for most copies (so a copy shares its original's returns but is not
cointegrated with it), and for every 10th copy a stationary AR(1) (phi 0.98, half-life 34 bars): a planted pair,
cointegrated with its original (and with the other planted copies of it).

Both screenings use the same settings (the defaults) and the same statsmodels calls per pair. At each size the
table shows pairs tested, pairs accepted, the recall of discovery among the pairs `all_pairs` accepts and among
the planted pairs, and both times. At sizes above ``--exact-up-to`` (100) `all_pairs` is not run in full: a
seeded random sample of ``--sample`` pairs of eligible tickers is tested (the same `pair_statistics` calls) and
its time per pair times the number of pairs, plus the screening time, is the estimate; its acceptance is BH on
the sample (for a random sample, an estimate of BH's threshold over all pairs), so its recall is on the accepted
pairs of the sample only (few: planted pairs are rare among N^2/2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from bench.bench_feature_pipeline import console, machine_info
from coinflow.exchange_files import candle_files, read_candle_file
from coinflow.pair_discovery import (
    Discovery,
    adjust,
    all_pairs,
    discover,
    finite_prices,
    pair_statistics_of,
    screen_tickers,
)
from coinflow.settings import PairsTrading

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "binance" / "1m_2021-05-15_2021-06-05"
STEP_SCALE = 0.3  # a copy's perturbation step, in units of its original's 1-minute return standard deviation
AR_PHI = 0.98
PLANT_EVERY = 10
TARGET_SPEEDUP = 10.0


def real_log_prices(folder: Path) -> pd.DataFrame:
    """Log closes of every file of the folder, one column per pair, indexed by the candle's close time."""
    frames = [read_candle_file(path, 60) for path in candle_files(folder)]
    closes = pd.concat(frames).pivot(index="event_timestamp", columns="pair", values="close").sort_index()
    return np.log(closes)


def perturbation(rng: np.random.Generator, n: int, step: float, planted: bool) -> np.ndarray:
    """A copy's perturbation: a random walk, or a stationary AR(1) for a planted pair."""
    shocks = rng.normal(0.0, step, n)
    if not planted:
        return np.cumsum(shocks)
    out = np.empty(n)
    out[0] = shocks[0] / math.sqrt(1 - AR_PHI**2)
    for t in range(1, n):
        out[t] = AR_PHI * out[t - 1] + shocks[t]
    return out


def tiled_universe(real: pd.DataFrame, size: int, seed: int) -> tuple[pd.DataFrame, set[frozenset[str]]]:
    """`size` tickers: the real ones first, then perturbed copies (see the module's doc); and the planted pairs."""
    rng = np.random.default_rng(seed)
    names = list(real.columns)
    columns = {name: real[name].to_numpy() for name in names[:size]}
    originals: dict[str, list[str]] = {}
    for i in range(len(names), size):
        base = names[i % len(names)]
        copy = f"{base.split('/')[0]}{i // len(names)}/{base.split('/')[1]}"
        planted = (i - len(names)) % PLANT_EVERY == 0
        step = STEP_SCALE * float(np.nanstd(np.diff(columns[base])))
        scale = rng.uniform(math.log(0.5), math.log(2.0))  # log of a scale log-uniform in [0.5, 2]
        columns[copy] = columns[base] + scale + perturbation(rng, len(real), step, planted)
        if planted:
            originals.setdefault(base, [base]).append(copy)
    pairs = {frozenset(p) for group in originals.values() for p in combinations(group, 2)}
    return pd.DataFrame(columns, index=real.index), pairs


def accepted_set(result: Discovery) -> set[frozenset[str]]:
    return {frozenset((p.y, p.x)) for p in result.accepted}


def recall(found: set[frozenset[str]], truth: set[frozenset[str]]) -> float | None:
    return len(found & truth) / len(truth) if truth else None


def timed_all_pairs(prices: pd.DataFrame, settings: PairsTrading, sample: int | None, seed: int) -> dict:
    """`all_pairs` in full, or estimated from a random sample of pairs (see the module's doc)."""
    start = time.perf_counter()
    if sample is None:
        result = all_pairs(prices, settings)
        return {"seconds": time.perf_counter() - start, "tested": result.tests, "accepted": accepted_set(result)}
    clean = finite_prices(prices)
    eligible, _ = screen_tickers(clean, settings.min_history_bars)
    screened = time.perf_counter()
    everyone = list(combinations(eligible, 2))
    chosen = random.Random(seed).sample(everyone, min(sample, len(everyone)))
    tested_at = time.perf_counter()
    pairs = adjust(pair_statistics_of(clean, chosen, settings), settings)
    per_pair = (time.perf_counter() - tested_at) / len(chosen)
    accepted = {frozenset((p.y, p.x)) for p in pairs if p.accepted}
    estimate = (screened - start) + per_pair * len(everyone)
    return {"seconds": estimate, "tested": len(everyone), "accepted": accepted, "sampled": len(chosen)}


def run_size(real: pd.DataFrame, size: int, settings: PairsTrading, sample: int | None) -> dict:
    prices, planted = tiled_universe(real, size, seed=size)
    start = time.perf_counter()
    discovered = discover(prices, settings)
    discover_s = time.perf_counter() - start
    reference = timed_all_pairs(prices, settings, sample, seed=size)
    found = accepted_set(discovered)
    truth = reference["accepted"]
    return {
        "tickers": size,
        "clusters": len(discovered.clusters),
        "largest_cluster": max((len(c) for c in discovered.clusters), default=0),
        "discover_tested": discovered.tests,
        "discover_accepted": len(found),
        "discover_s": discover_s,
        "all_pairs_tested": reference["tested"],
        "all_pairs_accepted": len(truth),
        "all_pairs_s": reference["seconds"],
        "all_pairs_sampled": reference.get("sampled"),
        "speedup": reference["seconds"] / discover_s,
        "recall_vs_all_pairs": recall(found, truth),
        "planted": len(planted),
        "recall_vs_planted": recall(found, planted),
        "found_not_in_all_pairs": None if "sampled" in reference else len(found - truth),
    }


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def results_table(rows: list[dict], machine: dict, bars: int) -> Table:
    table = Table(title=f"pair discovery: clusters vs all pairs ({bars} one-minute bars, real Binance files tiled)")
    for column in ("tickers", "clusters (largest)", "pairs tested", "accepted", "time", "recall", "speedup"):
        table.add_column(column, justify="right")
    for r in rows:
        sampled = f" (est. from {r['all_pairs_sampled']})" if r["all_pairs_sampled"] else ""
        table.add_row(
            str(r["tickers"]),
            f"{r['clusters']} ({r['largest_cluster']})",
            f"{r['discover_tested']} / {r['all_pairs_tested']}",
            f"{r['discover_accepted']} / {r['all_pairs_accepted']}",
            f"{r['discover_s']:.1f} s / {r['all_pairs_s']:.1f} s{sampled}",
            f"{fmt(r['recall_vs_all_pairs'])} of all-pairs', {fmt(r['recall_vs_planted'])} of {r['planted']} planted",
            f"{r['speedup']:.1f}x" + (" (target >= 10x)" if r["tickers"] == 100 else ""),
        )
    table.caption = (
        f"discover / all_pairs; {machine['cpu_model']}, {machine['cores_usable']} cores, "
        f"load {machine['load_start']:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,100,500", help="universe sizes, comma-separated")
    parser.add_argument("--bars", type=int, default=None, help="latest bars used (default: one re-test window)")
    parser.add_argument("--sample", type=int, default=1000, help="pairs all_pairs tests above --exact-up-to")
    parser.add_argument("--exact-up-to", type=int, default=100, help="largest size all_pairs runs in full")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    settings = PairsTrading()
    machine = machine_info()
    real = real_log_prices(args.data)
    bars = args.bars or settings.retest_window_bars
    real = real.iloc[-bars:]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(run_size(real, size, settings, None if size <= args.exact_up_to else args.sample))
        console.print(rows[-1])
    console.print(results_table(rows, machine, len(real)))
    if args.json:
        console.print_json(json.dumps({"machine": machine, "bars": len(real), "results": rows}))
    for r in (r for r in rows if r["tickers"] == 100):
        met = r["speedup"] >= TARGET_SPEEDUP and r["recall_vs_all_pairs"] in (None, 1.0)
        console.print(
            f"target at 100 tickers (>= {TARGET_SPEEDUP:.0f}x, recall 1.0 of all-pairs'): {'met' if met else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
