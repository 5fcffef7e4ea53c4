"""Data-parallel helpers, and a real 2-process DDP run on CPU launched with torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from graphattn.training import (
    BatchLoader,
    DistInfo,
    ddp_demo,
    init_distributed,
    shard_indices,
    unwrap_model,
    wrap_ddp,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n", [0, 1, 7, 8])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_indices_cover_everything_equally(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    assert set(torch.cat(shards).tolist()) == set(range(n))
    cut = [shard_indices(n, r, world, drop_last=True) for r in range(world)]
    assert len(torch.cat(cut).unique()) == len(torch.cat(cut)) == n // world * world


@pytest.mark.parametrize(
    ("args", "match"), [((5, 2, 2), "rank must be"), ((5, 0, 0), "world_size"), ((-1, 0, 1), "n ")]
)
def test_shard_indices_names_the_bad_argument(args, match):
    with pytest.raises(ValueError, match=match):
        shard_indices(*args)


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    steps, per_rank_batch = 6, 8
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "graphattn.training.ddp_demo",
        "--out-dir",
        str(tmp_path),
        "--steps",
        str(steps),
        "--batch-size",
        str(per_rank_batch),
        "--stop-at",
        "3",  # stop after step 3, then resume from the checkpoint in the same launch
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
