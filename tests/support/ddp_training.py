"""`python -m tests.support.ddp_training FRAME OUT`, alone or under torchrun: the LSTM's training loop on `frame`.

It joins torchrun's process group the way `python -m training_pipeline train`
does (`Distributed.from_environment`, `distributed.start`), prepares the
windows of the labelled rows in the parquet file FRAME (see `synthetic_frame`)
with the real sequence model (no dropout) and writes each rank's final weights
and history to OUT/rank<r>.pt. ``--checkpoints DIR`` keeps per-epoch
checkpoints there (and resumes from them); ``--stop-after N`` ends the run
after epoch N's checkpoint, as a kill would.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path

import pandas as pd
import torch

from tests.support.training_synthetic import FEATURES, ar1_returns, candles_from_returns, features_of
from training_pipeline.checks import drop_warmup
from training_pipeline.deep import distributed
from training_pipeline.deep.checkpoint import CheckpointStore
from training_pipeline.deep.loop import EpochCallbackStop, TrainingLoop, resolve_device
from training_pipeline.price.sequence import LOSS, LSTMPriceModel

TRAIN_ROWS = 600
# 900 rows less the warm-up and the 10-row windows leave training and validation windows that are not a multiple of
# the batch (the last, smaller batch is split too); the batch size divides by two ranks.
CONFIG = {
    "hidden_size": 8,
    "sequence_length": 10,
    "batch_size": 64,
    "dropout": 0.0,
    "epochs": 3,
    "patience": 10,
    "learning_rate": 3e-3,
    "device": "cpu",
    "seed": 3,
}


def synthetic_frame(path: Path) -> None:
    """Write the labelled rows of a predictable synthetic series to `path` (parquet), built once by the test: the
    training processes then need not import Feast (`assemble` lives with the Feast dataset code)."""
    from training_pipeline.dataset import assemble

    candles = candles_from_returns(ar1_returns(900, 0.6, seed=0), seed=1)
    drop_warmup(assemble(features_of(candles), candles, timedelta(minutes=1)), FEATURES)[0].to_parquet(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("frame", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoints")
    parser.add_argument("--stop-after", type=int)
    args = parser.parse_args()
    context = distributed.Distributed.from_environment(os.environ)
    if context:
        distributed.start(context, resolve_device(str(CONFIG["device"])))
    frame = pd.read_parquet(args.frame)
    model = LSTMPriceModel(FEATURES, CONFIG)
    prepared = model.prepare(frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:])
    checkpoints = CheckpointStore(args.checkpoints) if args.checkpoints else None
    loop = TrainingLoop(prepared.network, model.config.loop(), LOSS(), prepared.generator, checkpoints)

    def stop_after(epoch: int, record: dict[str, float]) -> None:
        if epoch == args.stop_after:
            raise EpochCallbackStop

    try:
        result = loop.fit(prepared.train, prepared.validation, on_epoch_end=stop_after)
        rank = context.rank if context else 0
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"weights": prepared.network.state_dict(), "history": result.history, "resumed": result.resumed_from_epoch},
            args.out / f"rank{rank}.pt",
        )
    except EpochCallbackStop:
        pass
    finally:
        distributed.stop()


if __name__ == "__main__":
    main()
