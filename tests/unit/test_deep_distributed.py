"""The data-parallel pieces without a process group: torchrun's environment, the batch shares, the CLI's refusals.

Two-process training itself runs in tests/integration/test_deep_ddp.py.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler
from typer.testing import CliRunner

from training_pipeline.__main__ import app
from training_pipeline.deep.distributed import Distributed, ShardedBatches, per_rank_batch

TORCHRUN_RANK_1 = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}


def test_torchrun_environment_is_read_and_a_plain_run_has_none():
    assert Distributed.from_environment(TORCHRUN_RANK_1) == Distributed(rank=1, local_rank=1, world_size=2)
    assert not Distributed(rank=1, local_rank=1, world_size=2).main and Distributed(0, 0, 2).main
    assert Distributed.from_environment({}) is None
    assert Distributed.from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None


def test_the_global_batch_must_divide_among_the_processes():
    assert per_rank_batch(256, 4) == 64
    with pytest.raises(ValueError, match="multiple of 3"):
        per_rank_batch(256, 3)


def test_the_shares_of_a_step_are_the_global_batch_of_one_process():
    """103 samples in batches of 8 over 3 ranks: every batch, the last of 7 included, is split without loss or
    repetition, and the ranks draw the same order from equally seeded generators."""
    data = range(103)

    def batches(rank: int | None) -> list[list[int]]:
        sampler = BatchSampler(RandomSampler(data, generator=torch.Generator().manual_seed(5)), 8, drop_last=False)
        return list(sampler if rank is None else ShardedBatches(sampler, rank, 3))

    single, shares = batches(None), [batches(rank) for rank in range(3)]
    assert all(len(s) == len(single) for s in shares)
    for step, batch in enumerate(single):
        parts = [share[step] for share in shares]
        assert sorted(sum(parts, [])) == sorted(batch)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--models", "lstm,lasso"], {}, "deep price models only"),
        (["--models", "gru"], {"COINFLOW_DEEP_BATCH_SIZE": "65"}, "multiple of 2"),
    ],
)
def test_train_under_torchrun_refuses_what_cannot_run_data_parallel(args, env, message):
    result = CliRunner().invoke(app, ["train", *args], env={**TORCHRUN_RANK_1, **env})
    assert result.exit_code == 2, result.output
    assert message in result.output
