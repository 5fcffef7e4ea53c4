"""A graph bigger than one step's memory: 2 million nodes, random node partitions, local +
linear global attention, one or more epochs on a CPU; optionally data parallel.

The graph is a stochastic block model: ``--nodes`` nodes in ``--classes`` blocks, every node
with ``--degree`` in-edges, a fraction ``--p-in`` of them from its own block. A node's
features are its block's mean vector plus noise (signal-to-noise ``--snr``), so a node alone
is hard to classify and its neighbourhood helps. Each step takes one part of a random node
partition (:class:`graphattn.NodePartitions`): local attention over the edges inside the
part, SGFormer's linear global attention over all its nodes (:class:`graphattn.
LocalGlobalLayer`). Peak memory is reported from the kernel's high-water mark.

    python -m examples.big_graph                               # 2M nodes, 1 epoch
    python -m examples.big_graph --nodes 20000 --epochs 5      # small
    torchrun --nproc_per_node 2 -m examples.big_graph --nodes 20000   # data parallel (gloo)

``--results PATH`` writes the results as JSON (rank 0's; a ``{rank}`` in the path: every
rank's). Every field of :class:`Config` is a flag (``--help``).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from examples.harness import parse_config, write_json
from graphattn import LocalGlobalLayer, NodePartitions
from graphattn.kernels import SGFormer


@dataclass
class Config:
    """One run; the defaults are the 2-million-node run."""

    nodes: int = 2_000_000  # nodes of the stochastic block model
    degree: int = 16  # in-edges per node
    classes: int = 10  # blocks (the labels)
    p_in: float = 0.6  # share of a node's in-edges from its own block
    features: int = 32  # input features per node
    snr: float = 0.3  # scale of the block means against unit noise
    dim: int = 64  # node width of the model
    heads: int = 8  # attention heads
    parts: int = 40  # random node partition: parts per epoch (one per step)
    epochs: int = 1  # passes over the partition
    lr: float = 3e-3  # Adam
    seed: int = 0  # graph, split, partition and weights
    threads: int = 2  # torch.set_num_threads per process
    results: str | None = None  # the results JSON ('{rank}' in it: one file per process)


ALIASES = {"results": ["--out"]}  # the flag's old spelling


def stochastic_block_model(cfg: Config) -> tuple[Tensor, Tensor, Tensor]:
    """``edge_index`` ``(2, N * degree)``, features ``(N, F)`` and labels ``(N,)``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n, k = cfg.nodes, cfg.classes
    labels = torch.randint(0, k, (n,), generator=gen)
    by_class = torch.argsort(labels)  # nodes grouped by class
    counts = torch.bincount(labels, minlength=k)
    starts = torch.cumsum(counts, 0) - counts
    dst = torch.arange(n).repeat_interleave(cfg.degree)  # (E,)
    inside = torch.rand(dst.numel(), generator=gen) < cfg.p_in
    cls = labels[dst]
    pick = (torch.rand(dst.numel(), generator=gen) * counts[cls]).long()
    same = by_class[starts[cls] + pick]  # a random node of the target's class
    other = torch.randint(0, n, (dst.numel(),), generator=gen)
    src = torch.where(inside, same, other)
    means = torch.randn(k, cfg.features, generator=gen)
    x = cfg.snr * means[labels] + torch.randn(n, cfg.features, generator=gen)
    return torch.stack([src, dst]), x, labels


class Model(nn.Module):
    """Input projection, one local + global layer, a linear classifier."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.inp = nn.Linear(cfg.features, cfg.dim)
        self.layer = LocalGlobalLayer(
            cfg.dim, cfg.heads, global_score=SGFormer(), dim_feedforward=2 * cfg.dim, dropout=0.1
        )
        self.head = nn.Linear(cfg.dim, cfg.classes)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.head(self.layer(self.inp(x), edge_index))  # (n, classes)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(cfg: Config) -> dict:
    """Train and evaluate; returns the results (rank 0's view in a data-parallel run)."""
    torch.set_num_threads(cfg.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    t0 = time.perf_counter()
    edge_index, x, y = stochastic_block_model(cfg)
    split = torch.rand(cfg.nodes, generator=torch.Generator().manual_seed(cfg.seed + 1))
    train, test = split < 0.5, split >= 0.75
    build_s = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)
    model: nn.Module = Model(cfg)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    parts = NodePartitions(
        edge_index, cfg.nodes, cfg.parts, seed=cfg.seed, rank=rank, world_size=world
    )
    epochs = []
    for epoch in range(cfg.epochs):
        parts.set_epoch(epoch)
        model.train()
        t = time.perf_counter()
        losses = []
        for batch in parts:
            mask = train[batch.nodes]
            out = model(x[batch.nodes], batch.edge_index)
            loss = F.cross_entropy(out[mask], y[batch.nodes][mask])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        epoch_s = time.perf_counter() - t
        epochs.append({"epoch": epoch, "seconds": epoch_s, "loss": sum(losses) / len(losses)})
        if rank == 0:
            print(f"epoch {epoch}: {epoch_s:.1f} s, mean loss {epochs[-1]['loss']:.4f}", flush=True)
    model.eval()
    correct = total = 0
    parts.set_epoch(10_000)  # a fresh partition for evaluation
    with torch.no_grad():
        for batch in parts:
            mask = test[batch.nodes]
            pred = model(x[batch.nodes], batch.edge_index).argmax(-1)
            correct += int((pred[mask] == y[batch.nodes][mask]).sum())
            total += int(mask.sum())
    if distributed:
        both = torch.tensor([correct, total], dtype=torch.long)
        dist.all_reduce(both)
        correct, total = int(both[0]), int(both[1])
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    result = {
        "config": asdict(cfg),
        "world_size": world,
        "edges": int(edge_index.shape[1]),
        "build_seconds": build_s,
        "epochs": epochs,
        "test_accuracy": correct / max(total, 1),
        "peak_rss_mib": _peak_rss_mib(),
        "param_checksum": float(params.double().sum()),
    }
    if distributed:
        dist.destroy_process_group()
    return result


def main(argv: Sequence[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__, aliases=ALIASES)
    result = {"rank": int(os.environ.get("RANK", "0")), **run(cfg)}
    print(json.dumps(result), flush=True)
    if cfg.results and (result["rank"] == 0 or "{rank}" in cfg.results):
        write_json(cfg.results.format(rank=result["rank"]), result)  # "{rank}": one per process


if __name__ == "__main__":
    main()
