"""Benchmark of the sequence model's training: samples/s and time per epoch, on CPU and on a GPU when present.

    .venv/bin/python -m bench.bench_deep [--quick] [--devices cpu,cuda]

Data: the bundled real 1-minute candles (data/kraken/ohlcvt_XBTUSDC_1m_2023Q1.csv)
turned into the FeatureService columns with the project's own batch
transforms (`compute_indicators`, `assemble`), without services: the bench
times training, not the Feast read. The model and windows are exactly those
of ``train --models lstm`` (`LSTMPriceModel.prepare`, `TrainingLoop`).

Per device it reports training samples/s over whole epochs through the
project's loop (DataLoader, copies, autocast, optimiser step) and the time an
epoch over all training windows takes at that rate. The reference, measured
in the same run, is a bare training step on one batch already on the device
(no loader, no copies): loop / bare shows what the input path costs. On CUDA
the GPU's busy share of an epoch's wall time comes from the PyTorch profiler
(sum of kernel times / elapsed), and the GPU's samples/s is divided by the
CPU's of the same run (target on an H100: >= 50x, busy >= 80 %).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch
from rich.console import Console
from rich.table import Table

from coinflow.exchange_files import iter_ohlcvt_csv
from coinflow.quality import Rejects
from feature_pipeline.transforms.indicators import compute_indicators
from feature_repo.names import ENTITY, EVENT_TIMESTAMP, INDICATOR_FEATURES, OHLCV_FEATURES
from training_pipeline.checks import drop_warmup
from training_pipeline.dataset import assemble
from training_pipeline.deep.config import DeepConfig
from training_pipeline.deep.loop import TrainingLoop, resolve_device
from training_pipeline.price.sequence import LOSS, LSTMPriceModel

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "kraken" / "ohlcvt_XBTUSDC_1m_2023Q1.csv"
FEATURES = (*OHLCV_FEATURES, *INDICATOR_FEATURES)


def load_frame() -> pd.DataFrame:
    """Labelled rows (1-minute horizon) of the bundled candles, as the training dataset holds them."""
    candles = pd.DataFrame(list(iter_ohlcvt_csv(SOURCE, "BTC/USDC", "1m", 60, Rejects("bench"))))
    candles[EVENT_TIMESTAMP] = pd.to_datetime(candles["window_end_ms"], unit="ms", utc=True)
    candles = candles.sort_values(EVENT_TIMESTAMP).reset_index(drop=True)
    features = pd.concat(
        [
            candles[[ENTITY, EVENT_TIMESTAMP, *OHLCV_FEATURES]],
            compute_indicators(candles[["open", "high", "low", "close", "volume"]]),
        ],
        axis=1,
    )
    frame = assemble(features, candles[[ENTITY, EVENT_TIMESTAMP, "close"]], timedelta(minutes=1))
    return drop_warmup(frame, FEATURES)[0]


def bare_step_rate(loop: TrainingLoop, batch: tuple[torch.Tensor, ...], steps: int, repeats: int = 3) -> float:
    """Samples/s of forward + backward + step on one batch already on the device (best of `repeats`)."""
    *inputs, target = loop.to_device(batch)
    synchronize = torch.cuda.synchronize if loop.cuda else (lambda: None)

    def step() -> None:
        with loop.autocast():
            prediction = loop.runner(*inputs)
        loss = loop.loss(prediction.float(), target)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(repeats):
        synchronize()
        began = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        rates.append(steps * len(target) / (time.perf_counter() - began))
    return max(rates)


def gpu_busy_share(loop: TrainingLoop, loader) -> float:
    """Share of one epoch's wall time during which CUDA kernels ran (PyTorch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        began = time.perf_counter()
        loop.train_epoch(loader)
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - began) * 1e6
    kernels_us = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type.name == "CUDA")
    return kernels_us / wall_us


def measure(frame: pd.DataFrame, device: str, config: DeepConfig, epochs: int, windows: int | None) -> dict:
    rows = frame if windows is None else frame.iloc[-(windows + config.sequence_length) * 100 // 85 :]
    split = int(len(rows) * 0.85)
    model = LSTMPriceModel(FEATURES, {**asdict(config), "device": device})
    prepared = model.prepare(rows.iloc[:split], rows.iloc[split:])
    loop = TrainingLoop(
        model.network, replace(model.config.loop(), epochs=epochs, patience=epochs), LOSS(), prepared.generator
    )
    loader = loop.loader(prepared.train, shuffle=True)
    bare = bare_step_rate(loop, prepared.train[list(range(min(config.batch_size, len(prepared.train))))], steps=10)
    loop.train_epoch(loader)  # warm-up: worker start, allocator, cuDNN plans, compilation
    rates, seconds = [], []
    for _ in range(epochs):
        if loop.cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        _, samples = loop.train_epoch(loader)
        if loop.cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
        rates.append(samples / seconds[-1])
    result = {
        "device": device,
        "name": device_name(loop.device),
        "windows": len(prepared.train),
        "batch": config.batch_size,
        "rate": float(np.median(rates)),
        "epoch_s": float(np.median(seconds)),
        "bare": bare,
        "busy": float("nan"),
    }
    if loop.cuda:
        result["busy"] = gpu_busy_share(loop, loader)
    return result


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU: 2,048 windows, 1 epoch (about 1 minute on 2 cores)")
    parser.add_argument(
        "--devices", default="cpu,cuda", help="devices to measure; missing ones are reported and skipped"
    )
    parser.add_argument("--cpu-windows", type=int, default=8192, help="training windows of the CPU run (all: 0)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per device (after one warm-up epoch)")
    parser.add_argument("--gpu-batch", type=int, default=1024, help="batch size on a GPU (CPU: the settings' 256)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network on CUDA")
    args = parser.parse_args()
    console = Console(width=170)
    frame = load_frame()
    config = DeepConfig()
    full_windows = int(len(frame) * 0.85) - config.sequence_length + 1
    results, skipped = [], []
    for device in [d.strip() for d in args.devices.split(",") if d.strip()]:
        try:
            resolve_device(device)
        except ValueError as exc:
            skipped.append(f"{device}: {exc}")
            continue
        if device == "cpu":
            windows = 2048 if args.quick else args.cpu_windows or None
            results.append(measure(frame, "cpu", config, 1 if args.quick else args.epochs, windows))
        else:
            gpu = replace(config, batch_size=args.gpu_batch, compile=args.compile)
            results.append(measure(frame, device, gpu, args.epochs, None))
    cpu_rate = next((r["rate"] for r in results if r["device"] == "cpu"), float("nan"))
    memory = psutil.virtual_memory().total / 2**30
    table = Table(
        title=(
            f"Sequence model training (LSTM, hidden {config.hidden_size}, window {config.sequence_length}, "
            f"{len(FEATURES)} features) on {platform.node()}: {os.cpu_count()} cores, {memory:.0f} GiB, "
            f"torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
        )
    )
    for column in (
        "device",
        "windows",
        "batch",
        "samples/s",
        "epoch (all windows)",
        "bare step samples/s",
        "loop / bare",
        "vs CPU",
        "GPU busy",
    ):
        table.add_column(column, justify="left" if column == "device" else "right")
    for r in results:
        table.add_row(
            f"{r['device']} ({r['name']})",
            f"{r['windows']:,}",
            str(r["batch"]),
            f"{r['rate']:,.0f}",
            f"{full_windows / r['rate']:,.1f} s",
            f"{r['bare']:,.0f}",
            f"{r['rate'] / r['bare']:.2f}",
            f"{r['rate'] / cpu_rate:.1f}x",
            "-" if np.isnan(r["busy"]) else f"{100 * r['busy']:.0f} %",
        )
    table.caption = (
        f"epoch (all windows): {full_windows:,} training windows of the bundled quarter at the measured rate. "
        "Targets on an H100: >= 50x the CPU samples/s, GPU busy >= 80 %."
    )
    console.print(table)
    for line in skipped:
        console.print(f"skipped {line}")


if __name__ == "__main__":
    main()
