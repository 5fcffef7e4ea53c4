"""Shared fixtures and the independent dense reference every backend is compared with."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

if not torch.cuda.is_available():
    # Without a GPU, Triton's kernels (graphattn.backends._fused_triton) are tested in its
    # interpreter: the mode is read when triton.language is first imported (torch.compile
    # may import it before the tests of the kernel run), so it is set for the whole session.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (small models run fastest so, and CI machines are
    shared); the process's thread count is restored afterwards, also when the code under test
    called ``torch.set_num_threads`` itself (the examples' ``threads=``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator, so every test draws the same numbers on every run."""
    return torch.Generator().manual_seed(0)


def edge_counts(edge_index: Tensor, num_dst: int, num_src: int) -> Tensor:
    """``(Nd, Ns)`` number of copies of each edge (a duplicated edge counts each time)."""
    src, dst = edge_index
    counts = torch.zeros(num_dst * num_src, dtype=torch.long)
    counts.index_add_(0, dst * num_src + src, torch.ones_like(src))
    return counts.view(num_dst, num_src)


def dense_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask_counts: Tensor,
    bias: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Attention written out in plain torch, independent of graphattn.

    ``scores = q @ k^T * scale + bias + log(count)`` (``-inf`` where count == 0), softmax
    over sources, rows without any edge give 0, then ``@ v``.

    Shapes:
        - q: ``(..., Nd, D)``; k: ``(..., Ns, D)``; v: ``(..., Ns, Dv)``
        - mask_counts: broadcastable to ``(..., Nd, Ns)``, integer copies per edge
        - bias: broadcastable to ``(..., Nd, Ns)``
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (..., Nd, Ns)
    if bias is not None:
        scores = scores + bias
    counts = mask_counts.to(scores.dtype)
    present = mask_counts > 0
    log_counts = torch.where(present, counts.clamp_min(1).log(), -math.inf)
    scores = scores + log_counts
    has_edge = present.expand_as(scores).any(-1, keepdim=True)  # (..., Nd, 1)
    scores = torch.where(has_edge, scores, torch.zeros_like(scores))
    weights = torch.softmax(scores, dim=-1) * has_edge
    return weights @ v


def edge_bias_as_dense(bias: Tensor, edge_index: Tensor, num_dst: int, num_src: int) -> Tensor:
    """A per-edge bias ``([B,] E, H)`` as a dense bias ``([B,] H, Nd, Ns)`` for
    :func:`dense_reference`: the log of the mean of ``exp(bias)`` over the copies of an edge,
    so that adding ``log(count)`` gives ``logsumexp`` over the copies (0 where no edge)."""
    src, dst = edge_index
    batched = bias.dim() == 3
    b = bias if batched else bias[None]  # (B, E, H)
    flat = dst * num_src + src  # (E,)
    total = b.new_zeros(b.shape[0], b.shape[2], num_dst * num_src)
    total.index_add_(2, flat, b.permute(0, 2, 1).exp())
    counts = edge_counts(edge_index, num_dst, num_src).view(-1).to(b.dtype)
    dense = torch.where(counts > 0, (total / counts.clamp_min(1)).log(), 0.0)
    dense = dense.view(b.shape[0], b.shape[2], num_dst, num_src)
    return dense if batched else dense[0]


def random_edge_index(
    num_dst: int, num_src: int, num_edges: int, generator: torch.Generator
) -> Tensor:
    """``(2, E)`` random edges (duplicates and self-loops likely)."""
    src = torch.randint(0, num_src, (num_edges,), generator=generator)
    dst = torch.randint(0, num_dst, (num_edges,), generator=generator)
    return torch.stack([src, dst])


REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def torchrun() -> Callable[..., subprocess.CompletedProcess]:
    """``torchrun(module, *args, timeout=...)``: ``python -m module *args`` in 2 processes
    under ``torch.distributed.run`` (a free local port, one thread each); fails the test
    with the processes' output when the launch fails."""

    def run(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
        cmd += ["-m", module, *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    return run


def edge_backend() -> str:
    """The backend ``auto`` gives a sparse call without weights: the fused kernel where it
    builds on this machine, else the pure-torch edge path."""
    from graphattn.backends.fused import fused_extension

    return "fused" if fused_extension()[0] is not None else "edges"
