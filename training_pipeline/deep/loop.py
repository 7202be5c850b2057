"""The training loop of the deep models: device choice, checkpoint/resume, early stopping, TensorBoard.

One loop serves every network that maps a batch of (inputs..., target) to a
prediction. After each epoch it writes a checkpoint (weights, optimiser,
scheduler, random generators, epoch, early-stopping state and the best
weights so far); started again with the same checkpoint folder it carries on
after the last finished epoch, so a pre-empted machine loses at most one epoch
and the result equals an uninterrupted run's. On CUDA it runs the forward pass
under bf16 autocast, copies pinned batches without blocking and can compile
the network. In a torchrun process group it trains data-parallel (see
`training_pipeline.deep.distributed`): DistributedDataParallel, each rank on
its share of every global batch of ``batch_size`` windows, losses summed over
the ranks, and rank 0 alone writing checkpoints and TensorBoard.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from coinflow.settings import Deep
from training_pipeline.deep import distributed
from training_pipeline.deep.checkpoint import CheckpointStore, restore_rng_state, rng_state
from training_pipeline.deep.data import Batches

logger = logging.getLogger(__name__)

GPU_LOADER_WORKERS = 4
GRADIENT_CLIP = 1.0


class EpochCallbackStop(Exception):
    """Raised by an `on_epoch_end` callback to stop training after the epoch's checkpoint is written."""


def resolve_device(setting: str) -> torch.device:
    """cuda, then mps, then cpu for ``auto``; an explicit device must be available."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if setting == "auto":
        return torch.device(next(name for name, ok in available.items() if ok))
    if setting not in available:
        raise ValueError(f"unknown torch device {setting!r}; choose auto, cuda, mps or cpu")
    if not available[setting]:
        raise ValueError(f"device {setting!r} was asked for but this machine has none (torch {torch.__version__})")
    return torch.device(setting)


DEEP = Deep()  # the settings' defaults (a plain model: building it reads nothing)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    device: str = DEEP.device
    loader_workers: int | None = DEEP.loader_workers
    compile: bool = DEEP.compile
    seed: int = 0
    weight_decay: float = 1e-4


@dataclass
class LoopResult:
    """What the loop did; `history` holds one dict per epoch (train_loss, val_loss, lr, samples_per_s, seconds)."""

    device: str
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    resumed_from_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's generators; returns the generator that orders the training batches."""
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _compiled(model: nn.Module) -> nn.Module:
    """`model` compiled by torch.compile, which wraps a module in a module (an OptimizedModule sharing its weights);
    its annotations promise only a callable."""
    runner = torch.compile(model)
    assert isinstance(runner, nn.Module)
    return runner


class TrainingLoop:
    """Fits `model` on batches of `train`, early-stopped on `validation`; see the module docstring.

    `model` must already be built (its initial weights drawn) after
    `seed_everything`; `loss` takes (prediction, target) and returns their
    mean loss. Batches are tuples whose last tensor is the target.
    """

    def __init__(
        self,
        model: nn.Module,
        config: LoopConfig,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        generator: torch.Generator,
        checkpoints: CheckpointStore | None = None,
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.loss = loss
        self.generator = generator
        self.checkpoints = checkpoints
        self.tensorboard_dir = tensorboard_dir
        self.rank, self.world_size = distributed.world()
        if self.world_size > 1:
            distributed.per_rank_batch(config.batch_size, self.world_size)
        self.device = resolve_device(config.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.world_size > 1:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.main = self.rank == 0
        self.model.to(self.device)
        runner: nn.Module = model
        if self.world_size > 1:
            # The ranks' weights start equal (same seed; DDP broadcasts rank 0's anyway) and stay equal; there are
            # no buffers to keep in step, and a broadcast per forward would make evaluation a collective.
            runner = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.cuda else None, forward_sync_buffers=False
            )
        self.runner = _compiled(runner) if config.compile and self.cuda else runner
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.epochs)

    def loader(self, data: Batches, shuffle: bool) -> DataLoader:
        """The batches of `data` (this rank's shares of them in a process group), pinned on CUDA."""
        order = RandomSampler(data, generator=self.generator) if shuffle else SequentialSampler(data)
        batches: Sampler[list[int]] = BatchSampler(order, self.config.batch_size, drop_last=False)
        if self.world_size > 1:
            batches = distributed.ShardedBatches(batches, self.rank, self.world_size)
        workers = self.config.loader_workers
        if workers is None:
            workers = GPU_LOADER_WORKERS if self.cuda else 0
        return DataLoader(
            data,
            batch_size=None,
            sampler=batches,
            num_workers=workers,
            pin_memory=self.cuda,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=self.generator,
        )

    def autocast(self):
        """bf16 autocast on CUDA, nothing elsewhere."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()

    def to_device(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The batch on the loop's device (asynchronous from pinned memory on CUDA)."""
        return tuple(t.to(self.device, non_blocking=self.cuda) for t in batch)

    def _share(self, step: int, samples: int, size: int) -> float:
        """What this rank's mean loss counts for in step `step`'s gradient: its share of the global batch, times the
        world size that DistributedDataParallel divides the summed gradients by (exactly 1.0 in one process)."""
        batch = min(self.config.batch_size, size - step * self.config.batch_size)
        return samples * self.world_size / batch

    def _mean(self, total: torch.Tensor, count: int) -> tuple[float, int]:
        """The mean loss and sample count of a pass, over all the ranks."""
        if self.world_size == 1:
            return float(total) / max(count, 1), count
        summed_total, summed_count = distributed.summed([float(total), float(count)], self.device)
        return summed_total / max(summed_count, 1.0), int(summed_count)

    def train_epoch(self, loader: DataLoader) -> tuple[float, int]:
        """One pass over `loader`: mean training loss and samples seen (over all the ranks)."""
        self.runner.train()
        total = torch.zeros((), device=self.device)
        count = 0
        for step, batch in enumerate(loader):
            *inputs, target = self.to_device(batch)
            with self.autocast():
                prediction = self.runner(*inputs)
            # A rank with an empty share still takes part in the step (its gradients, zero, join the all-reduce).
            loss = self.loss(prediction.float(), target) if len(target) else prediction.float().sum()
            self.optimizer.zero_grad(set_to_none=True)
            (loss * self._share(step, len(target), len(cast(Batches, loader.dataset)))).backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), GRADIENT_CLIP)
            self.optimizer.step()
            total += loss.detach() * len(target)
            count += len(target)
        return self._mean(total, count)

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> float:
        """Mean loss over the batches of `loader` (over all the ranks: the same on each, so they stop alike)."""
        self.runner.eval()
        total = torch.zeros((), device=self.device)
        count = 0
        for batch in loader:
            if len(batch[-1]) == 0:
                continue
            *inputs, target = self.to_device(batch)
            with self.autocast():
                prediction = self.runner(*inputs)
            total += self.loss(prediction.float(), target) * len(target)
            count += len(target)
        return self._mean(total, count)[0]

    def _state(self, epoch: int, progress: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.generator),
            **progress,
        }

    def _resume(self) -> tuple[int, dict[str, Any]] | None:
        if self.checkpoints is None:
            return None
        # In a process group every rank resumes from rank 0's checkpoint, which only rank 0 need be able to read.
        state = self.checkpoints.load() if self.main else None
        if self.world_size > 1:
            state = distributed.from_main(state)
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"], self.generator)
        keys = ("best_val_loss", "best_epoch", "bad_epochs", "best_model", "history", "finished")
        logger.info("resuming from the checkpoint of epoch %d in %s", state["epoch"], self.checkpoints.url)
        return state["epoch"], {k: state[k] for k in keys}

    def fit(
        self, train: Batches, validation: Batches, on_epoch_end: Callable[[int, dict[str, float]], None] | None = None
    ) -> LoopResult:
        """Train up to ``config.epochs`` epochs (fewer when validation stops improving); ends with the best weights.

        `on_epoch_end(epoch, record)` runs after each epoch's checkpoint is
        written; raising `EpochCallbackStop` there ends the call like a kill.
        """
        resumed = self._resume()
        start, progress = resumed or (
            0,
            {
                "best_val_loss": math.inf,
                "best_epoch": 0,
                "bad_epochs": 0,
                "best_model": None,
                "history": [],
                "finished": False,
            },
        )
        train_loader, validation_loader = self.loader(train, shuffle=True), self.loader(validation, shuffle=False)
        writer = self._writer(start)
        try:
            for epoch in range(start + 1, self.config.epochs + 1):
                if progress["finished"]:
                    break
                began = time.perf_counter()
                train_loss, samples = self.train_epoch(train_loader)
                seconds = time.perf_counter() - began
                val_loss = self.evaluate(validation_loader)
                record = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": seconds,
                    "samples_per_s": samples / seconds if seconds > 0 else float("nan"),
                }
                self.scheduler.step()
                progress["history"].append(record)
                if val_loss < progress["best_val_loss"]:
                    progress.update(
                        best_val_loss=val_loss,
                        best_epoch=epoch,
                        bad_epochs=0,
                        best_model={k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()},
                    )
                else:
                    progress["bad_epochs"] += 1
                progress["finished"] = progress["bad_epochs"] >= self.config.patience or epoch == self.config.epochs
                if self.checkpoints and self.main:
                    self.checkpoints.save(self._state(epoch, progress))
                distributed.barrier()
                if writer:
                    for name in ("train_loss", "val_loss", "lr", "samples_per_s"):
                        writer.add_scalar(name, record[name], epoch)
                    writer.flush()
                logger.info(
                    "epoch %d: train loss %.5f, validation loss %.5f, %.0f samples/s",
                    epoch,
                    train_loss,
                    val_loss,
                    record["samples_per_s"],
                )
                if on_epoch_end:
                    on_epoch_end(epoch, record)
        finally:
            if writer:
                writer.close()
        if progress["best_model"] is not None:
            self.model.load_state_dict(progress["best_model"])
        history = progress["history"]
        return LoopResult(
            device=str(self.device),
            epochs_run=len(history),
            best_epoch=progress["best_epoch"],
            best_val_loss=progress["best_val_loss"],
            stopped_early=len(history) < self.config.epochs,
            resumed_from_epoch=start,
            history=history,
        )

    def _writer(self, start: int):
        if self.tensorboard_dir is None or not self.main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.tensorboard_dir), purge_step=start + 1)
