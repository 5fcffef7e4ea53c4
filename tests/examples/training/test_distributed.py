"""Data-parallel helpers, sharded batches, and a real 2-process DDP run on CPU launched with
torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from examples.training import (
    BatchLoader,
    DistInfo,
    ddp_demo,
    init_distributed,
    unwrap_model,
    wrap_ddp,
)

REPO = Path(__file__).resolve().parents[3]


def _hand_sharded_batches(
    tensors: tuple[torch.Tensor, ...],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_last: bool,
    rank: int,
    world_size: int,
) -> list[tuple[torch.Tensor, ...]]:
    """The batches the hand-written loader (graphattn.training.BatchLoader before it became a
    DataLoader over a DistributedSampler) gave: the permutation of ``seed + epoch``, wrapped
    around to ``ceil(n / world_size)`` items a rank, rank ``r`` taking ``r, r + world, ...``,
    then cut into consecutive batches gathered with one index each."""
    n = tensors[0].shape[0]
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    else:
        order = torch.arange(n)
    per_rank = -(-n // world_size)
    mine = order[(torch.arange(per_rank * world_size) % n)[rank::world_size]]  # (M,)
    count = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
    return [
        tuple(t[mine[b * batch_size : (b + 1) * batch_size]] for t in tensors) for b in range(count)
    ]


@pytest.mark.parametrize("n", [1, 7, 8, 23])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_are_those_of_the_hand_written_sharding(n, world_size, shuffle, drop_last):
    """DistributedSampler + DataLoader give bitwise the batches (and so the example results)
    of the sharding that BatchLoader used to write out by hand, every epoch and rank."""
    g = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, 3, generator=g), torch.randint(0, 5, (n,), generator=g)
    for rank in range(world_size):
        loader = BatchLoader(
            x,
            y,
            batch_size=3,
            shuffle=shuffle,
            seed=11,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )
        for epoch in (0, 1, 5):
            loader.set_epoch(epoch)
            expected = _hand_sharded_batches(
                (x, y),
                3,
                shuffle=shuffle,
                seed=11,
                epoch=epoch,
                drop_last=drop_last,
                rank=rank,
                world_size=world_size,
            )
            got = list(loader)
            assert len(got) == len(expected) == len(loader)
            for a, b in zip(got, expected, strict=True):
                assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_iterating_leaves_the_global_random_stream_alone():
    """The loader's own generator: iterating does not draw from torch's global generator (a
    plain DataLoader draws its workers' base seed from it at every ``iter``), so dropout and
    augmentation see the numbers they saw when the batches were sliced by hand."""
    x = torch.arange(10)
    torch.manual_seed(0)
    list(BatchLoader(x, batch_size=4))
    after_ours = torch.rand(1)
    torch.manual_seed(0)
    list(torch.utils.data.DataLoader(x, batch_size=4))
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after_ours, torch.rand(1))
    assert not torch.equal(after_plain, after_ours)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 2, "world_size": 2}, r"rank must be an int in \[0, 2\), got 2"),
        ({"world_size": 0}, "world_size must be an int >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
        ({"seed": -1}, "seed must be an int >= 0, got -1"),
    ],
)
def test_batch_loader_names_the_bad_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchLoader(torch.arange(5), **{"batch_size": 2, **kwargs})
    with pytest.raises(ValueError, match="share their first dimension"):
        BatchLoader(torch.arange(5), torch.arange(4), batch_size=2)


def test_sharded_batches_together_are_the_single_process_batches():
    x = torch.arange(32)
    whole = list(BatchLoader(x, batch_size=8, seed=3))
    ranks = [list(BatchLoader(x, batch_size=4, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    for i, (b,) in enumerate(whole):
        together = torch.cat([ranks[0][i][0], ranks[1][i][0]])
        assert sorted(together.tolist()) == sorted(b.tolist())


def test_init_distributed_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert info == DistInfo(0, 1, 0) and info.is_main and not info.is_distributed
    assert not torch.distributed.is_initialized()
    model = nn.Linear(2, 2)
    assert wrap_ddp(model) is model and unwrap_model(model) is model


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an int"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK \(2\) must be < WORLD_SIZE \(2\)"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": ""}, "MASTER_ADDR is not set"),
    ],
)
def test_init_distributed_explains_bad_environments(monkeypatch, env, match):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises((ValueError, RuntimeError), match=match):
        init_distributed()


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_torchrun_two_processes_end_with_identical_weights(tmp_path, torchrun):
    steps, per_rank_batch = 6, 8
    proc = torchrun(
        "examples.training.ddp_demo",
        *("--out-dir", str(tmp_path), "--steps", str(steps), "--batch-size", str(per_rank_batch)),
        *(
            "--stop-at",
            "3",
        ),  # stop after step 3, then resume from the checkpoint in the same launch
        timeout=120,
    )
    assert '"resumed_from": 3' in proc.stdout

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key

    # DDP averages the gradients of the two shards: the same as one process taking both
    reference = ddp_demo.run(tmp_path / "single", steps, 2 * per_rank_batch)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(rank0["0.weight"], ddp_demo.build()[0].state_dict()["0.weight"])
