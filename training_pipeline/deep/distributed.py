"""Data-parallel training of the deep models over the processes torchrun starts (DistributedDataParallel).

torchrun gives each process its place in the environment (WORLD_SIZE, RANK,
LOCAL_RANK and the rendezvous address); `Distributed.from_environment` reads
it once at start-up and `start` joins the process group: NCCL with one GPU per
process on CUDA, gloo on CPU. `TrainingLoop` then sees the group: every rank
draws the single-process run's batch order from the same seeded generator and
trains on its share of each global batch (`ShardedBatches`), so a step of N
processes sees the same samples as a step of one. Rank 0 alone writes
checkpoints, TensorBoard and MLflow; the others wait for it at barriers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks torchrun started."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def main(self) -> bool:
        """Whether this is the rank that checkpoints, logs and registers."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Distributed | None:
        """The place torchrun gave this process; None for a plain run (no WORLD_SIZE, or 1)."""
        world_size = int(environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return None
        return cls(rank=int(environ["RANK"]), local_rank=int(environ.get("LOCAL_RANK", "0")), world_size=world_size)


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Each rank's share of a global batch; the batch must split evenly, so that every rank does the same work."""
    if global_batch % world_size:
        raise ValueError(
            f"the batch size {global_batch} (COINFLOW_DEEP_BATCH_SIZE, the global batch) does not divide among "
            f"{world_size} processes; choose a multiple of {world_size}"
        )
    return global_batch // world_size


def start(context: Distributed, device: torch.device) -> torch.device:
    """Join the process group on `device` (see `resolve_device`): NCCL on CUDA, each rank on GPU LOCAL_RANK, or gloo
    on CPU; the device this rank trains on."""
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
        device = torch.device("cuda", context.local_rank)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"distributed training runs on cuda (NCCL) or cpu (gloo), not {device.type}")
    dist.init_process_group(backend, rank=context.rank, world_size=context.world_size)
    return device


def stop() -> None:
    """Wait for every rank, then leave the process group (nothing when there is none)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of this process in its group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def summed(values: list[float], device: torch.device) -> list[float]:
    """`values` summed over the ranks (float64), the same on every rank."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value: T) -> T:
    """Rank 0's `value` on every rank (pickled: for small things, such as a checkpoint)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class ShardedBatches(Sampler[list[int]]):
    """Rank `rank`'s share (every `world_size`-th position) of each batch of `batches`.

    Every rank iterates the same global batches (the same generator, seeded
    alike), so the shares of one step together are exactly the global batch
    a single process would train on, the last, smaller one included (its
    shares may differ in size by one, or be empty).
    """

    def __init__(self, batches: Sampler[list[int]], rank: int, world_size: int) -> None:
        self.batches = batches
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(cast(Sized, self.batches))

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rank :: self.world_size]
