"""The node-classification example's hot paths on Cora against this machine's limits,
measured in one run.

First the limits, in this process and at this thread count:

- **GEMM rate**: fp32 ``(1024, 1024) @ (1024, 1024)`` (the peak), and at GCNII's layer shape
  ``(N, 64) @ (64, 64)``;
- **copy rate**: ``dst.copy_(src)``, read + write bytes per second, of 256 MiB (main memory)
  and of one ``(N, 64)`` fp32 tensor (about 0.7 MB for Cora: in cache);
- **random draws**: ``torch.rand_like`` of an ``(N, 64)`` tensor, uniform floats per second
  (torch's CPU generator draws one number at a time: no dropout mask is drawn faster).

Then the paths of ``examples.node_classification`` and ``graphattn.positional`` whose
speed the docs quote, timed with :func:`benchmarks.timing.time_alternating`, each with its
bound: the time its arithmetic takes at the GEMM rate, or its bytes at the copy rate.

- ``gcnii step``: one training step of ``--layout deep --layers 64`` ``gcn`` (forward,
  cross-entropy, backward, Adam; sparse bag of words, as the example trains it). Its bound
  is the sum of the three rows below it, which are its three kinds of work timed alone: the
  64 layer products, the 64 sparse propagations, and the 65 dropouts, forward + backward.
  Everything else (ReLU, the residual sums, the input and output maps, Adam) counts as
  zero, so the bound is optimistic.
- ``64 x gemm``: ``(N, 64) @ (64, 64)`` forward and its two backward products, at the peak
  GEMM rate.
- ``64 x spmm``: :class:`~examples.node_classification.GCNPropagation`, forward + backward:
  the CSR values and column indices (12 bytes a non-zero), the gathered source rows
  (256 bytes a non-zero) and the output rows, each way, at the in-cache copy rate.
- ``65 x mask_dropout`` and ``65 x F.dropout``: one uniform draw an element at the
  generator's rate (``torch.rand_like``, measured with the limits), plus reading the input
  and writing the output, forward and backward (16 bytes an element), at the in-cache copy
  rate.
- ``spd lookup``: ``ShortestPathBias(1, 5).lookup(buckets)``, forward + backward: the int64
  buckets read twice, the float32 bias written and its gradient read (24 bytes a pair), at
  the main-memory copy rate.
- ``shortest_path_distance`` (``max_distance=5``) and ``random_walk_pe`` (``k=8``): the bytes
  the implementation itself moves, at the main-memory copy rate: how far each is from being
  limited by its own traffic. A hop of the search moves ``26 + 2c`` bytes a pair, ``c`` the
  width of its hop counter (1 byte up to ``max_distance`` 126; otherwise the narrowest
  integer that holds ``N``): the float product written (4), read and compared (4 + 1),
  masked with the unreached pairs (3), tested for any new pair (1), the counter bumped
  (``2c + 1``), the unreached pairs updated (3) and the next frontier written (1 + 4). The
  setup moves ``7 + c``, and the final fill ``9 + 3c`` (-1 for the unreached pairs, then the
  widening to int64); with ``max_distance``, the component test and its fill ``5 + 2c``
  more. ``random_walk_pe`` moves 16 bytes a float64 entry a walk step.
  Then the same search without ``max_distance``, which runs to the graph's diameter (its
  last hop, which finds nothing, moves 17 bytes a pair).

``--quick`` runs every row on a random Cora-shaped graph of 400 nodes with 8 layers (a smoke
run of seconds). Results go to ``benchmarks/results/node_limits_cpu.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks._harness import fmt, format_table, run_info, write_json_atomic
from benchmarks.bench_core import copy_bandwidth, load_cora_for_bench
from benchmarks.timing import Timing, time_alternating
from examples.node_classification import (
    DeepNet,
    GCNPropagation,
    NodeConfig,
    graph_for,
    input_features,
    mask_dropout,
    optimizer,
    settings,
    sparse_csr,
)
from graphattn import Graph
from graphattn.positional import (
    ShortestPathBias,
    _narrowest_int,
    random_walk_pe,
    shortest_path_distance,
)

HIDDEN = 64


@dataclass
class Limits:
    """The machine's measured rates.

    Attributes:
        gemm_peak: fp32 FLOP/s of a 1024^3 product.
        gemm_shape: fp32 FLOP/s of ``(N, 64) @ (64, 64)``.
        copy_memory: bytes/s of a 256 MiB copy (read + write).
        copy_cache: bytes/s of an ``(N, 64)`` fp32 copy (read + write).
        rand: uniform floats/s of ``torch.rand_like`` on an ``(N, 64)`` tensor (torch's CPU
            generator, a Mersenne twister, one number at a time).
    """

    gemm_peak: float
    gemm_shape: float
    copy_memory: float
    copy_cache: float
    rand: float


def _median_s(fn: Callable[[], Any], calls: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time of ``calls`` calls of ``fn``, in seconds."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def measure_limits(n: int, quick: bool) -> Limits:
    """GEMM rates and copy rates (see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    m = 256 if quick else 1024
    a, b = torch.randn(m, m, generator=gen), torch.randn(m, m, generator=gen)
    peak = 2 * m**3 / _median_s(lambda: a @ b, 2 if quick else 10)
    h, w = torch.randn(n, HIDDEN, generator=gen), torch.randn(HIDDEN, HIDDEN, generator=gen)
    shape = 2 * n * HIDDEN * HIDDEN / _median_s(lambda: h @ w, 20 if quick else 200)
    dst = torch.empty_like(h)
    cache = 2 * h.numel() * 4 / _median_s(lambda: dst.copy_(h), 20 if quick else 500)
    memory = copy_bandwidth(torch.device("cpu"), mib=16 if quick else 256)
    rand = h.numel() / _median_s(lambda: torch.rand_like(h), 20 if quick else 200)
    return Limits(peak, shape, memory, cache, rand)


def cora_like(n: int, seed: int = 0) -> Any:
    """A random graph shaped like Cora (mean in-degree 3.9, a 1.3 %-dense bag of words of
    1433 columns, 7 classes, 20 training nodes a class), for ``--quick``."""
    gen = torch.Generator().manual_seed(seed)
    e = 4 * n
    edge_index = torch.randint(0, n, (2, e), generator=gen)
    x = (torch.rand(n, 1433, generator=gen) < 0.013).float()
    x = x / x.sum(1, keepdim=True).clamp(min=1)
    y = torch.randint(0, 7, (n,), generator=gen)
    train = torch.zeros(n, dtype=torch.bool)
    train[:140] = True
    return SimpleNamespace(x=x, y=y, edge_index=edge_index, num_nodes=n, train_mask=train)


def _step_fn(
    model: torch.nn.Module, x: Tensor, graph: Graph, data: Any, cfg: NodeConfig
) -> Callable[[], None]:
    """One training step of ``model`` as ``examples.node_classification.train_one`` runs it.

    Shapes:
        - x: ``(N, F)`` dense or sparse CSR; ``data.y``, ``data.train_mask``: ``(N,)``
    """
    opt = optimizer(model, cfg)
    train = data.train_mask

    def step() -> None:  # the example's training step (train_one)
        loss = F.cross_entropy(model(x, graph)[train], data.y[train])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _row(name: str, timing: Timing, bound_s: float, work: str, limit: str) -> dict[str, Any]:
    """One table row: ``name``'s median time from ``timing`` against its bound."""
    ms, bound_ms = timing.median_ms[name], 1e3 * bound_s
    return {"path": name, "median_ms": ms, "samples_ms": timing.times_ms[name], "work": work,
            "limit": limit, "bound_ms": bound_ms, "x_bound": ms / bound_ms}  # fmt: skip


def gcnii_rows(data: Any, layers: int, limits: Limits, args: argparse.Namespace) -> list[dict]:
    """The GCNII step and its three kinds of work, each with its bound."""
    cfg = settings(NodeConfig(layout="deep", layers=layers, lr=0.01), "Cora")
    torch.manual_seed(0)
    graph = graph_for(data, cfg.sep)
    x = input_features(data, cfg)  # (N, F + 1)
    model = DeepNet("gcn", x.shape[1], int(data.y.max()) + 1, cfg).train()
    step = _step_fn(model, sparse_csr(x), graph, data, cfg)
    n, p = data.num_nodes, cfg.dropout

    gen = torch.Generator().manual_seed(1)
    h = torch.randn(n, HIDDEN, generator=gen, requires_grad=True)  # (N, 64)
    w = torch.randn(HIDDEN, HIDDEN, generator=gen, requires_grad=True)  # (64, 64)
    g = torch.randn(n, HIDDEN, generator=gen)  # (N, 64) the upstream gradient
    prop = GCNPropagation()

    def repeat(fn: Callable[[], Tensor], times: int) -> Callable[[], None]:
        def run() -> None:
            h.grad = w.grad = None
            for _ in range(times):
                fn().backward(g)

        return run

    fns = {
        "gcnii step": step,
        f"{layers} x gemm": repeat(lambda: h @ w, layers),
        f"{layers} x spmm": repeat(lambda: prop(h, graph), layers),
        f"{layers + 1} x mask_dropout": repeat(lambda: mask_dropout(h, p, True), layers + 1),
        f"{layers + 1} x F.dropout": repeat(lambda: F.dropout(h, p, True), layers + 1),
    }
    t = time_alternating(fns, repeats=args.repeats, budget_s=args.budget)
    nnz = graph.num_edges
    gemm_flop = layers * 3 * 2 * n * HIDDEN * HIDDEN
    spmm_bytes = layers * 2 * (nnz * (12 + 4 * HIDDEN) + n * 4 * HIDDEN)
    drop_bytes = (layers + 1) * 2 * 8 * n * HIDDEN
    drop_s = (layers + 1) * n * HIDDEN / limits.rand + drop_bytes / limits.copy_cache
    drop_work = f"{(layers + 1) * n * HIDDEN / 1e6:.1f}M draws, {drop_bytes / 1e6:.0f} MB"
    bounds = {
        f"{layers} x gemm": (gemm_flop / limits.gemm_peak, f"{gemm_flop / 1e9:.2f} GFLOP", "gemm"),
        f"{layers} x spmm": (spmm_bytes / limits.copy_cache, f"{spmm_bytes / 1e6:.0f} MB", "cache"),
        f"{layers + 1} x mask_dropout": (drop_s, drop_work, "rand + cache"),
        f"{layers + 1} x F.dropout": (drop_s, drop_work, "rand + cache"),
    }
    parts = [f"{layers} x gemm", f"{layers} x spmm", f"{layers + 1} x mask_dropout"]
    step_bound = sum(bounds[k][0] for k in parts)
    bounds["gcnii step"] = (step_bound, "the sum of the next three", "sum")
    return [_row(name, t, *bounds[name]) for name in fns]


def positional_rows(data: Any, limits: Limits, args: argparse.Namespace) -> list[dict]:
    """``ShortestPathBias.lookup``, ``shortest_path_distance`` and ``random_walk_pe``."""
    n = data.num_nodes
    spd = shortest_path_distance(data.edge_index, n, max_distance=5)  # (N, N)
    diameter = int(shortest_path_distance(data.edge_index, n).max())
    products = min(5, diameter + 1)  # undirected: it stops at max_distance, or when done
    spb = ShortestPathBias(1, 5)
    buckets = spb.bucket(spd)  # (N, N) int64
    grad = torch.randn(1, n, n, generator=torch.Generator().manual_seed(2))  # (1, N, N)

    def lookup() -> None:
        spb.zero_grad(set_to_none=True)
        spb.lookup(buckets).backward(grad)

    edge_index = data.edge_index
    fns = {
        "spd lookup": lookup,
        "shortest_path_distance": lambda: shortest_path_distance(edge_index, n, max_distance=5),
        "  to the diameter": lambda: shortest_path_distance(edge_index, n),
        "random_walk_pe": lambda: random_walk_pe(edge_index, n, k=8),
    }
    t = time_alternating(fns, repeats=args.repeats, budget_s=args.budget)
    pair = n * n

    def search(hops: int, cap: int, last: int, components: bool) -> int:
        """Bytes a pair: setup, ``hops`` hops, the last one's test, the fill(s); the hop
        counter is as wide as the search makes it for ``cap``."""
        c = _narrowest_int(cap).itemsize
        return 7 + c + (26 + 2 * c) * hops + last + 9 + 3 * c + (5 + 2 * c) * components

    work = {
        "spd lookup": 24 * pair,
        "shortest_path_distance": search(products, 5 + 1, 0, True) * pair,
        "  to the diameter": search(diameter, n, 17, False) * pair,
        "random_walk_pe": 16 * 8 * pair,
    }
    rows = [
        _row(name, t, work[name] / limits.copy_memory, f"{work[name] / 1e6:.0f} MB", "memory")
        for name in fns
    ]
    rows[1]["products"], rows[2]["products"] = products, diameter + 1
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the example's)")
    parser.add_argument("--layers", type=int, default=64, help="GCNII's depth")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per timed group")
    parser.add_argument("--out", default="benchmarks/results/node_limits_cpu.json")
    parser.add_argument("--quick", action="store_true", help="a 400-node random graph, 8 layers")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.repeats, args.budget = 8, 3, 1.0
    torch.set_num_threads(args.threads)
    info = run_info(
        "benchmarks.bench_node_limits",
        sys.argv[1:] if argv is None else argv,
        torch.device("cpu"),
    )
    data = cora_like(400) if args.quick else load_cora_for_bench()
    limits = measure_limits(data.num_nodes, args.quick)
    print(
        f"GEMM {limits.gemm_peak / 1e9:.1f} GFLOP/s peak, {limits.gemm_shape / 1e9:.1f} at "
        f"({data.num_nodes}, 64) @ (64, 64); copy {limits.copy_memory / 1e9:.1f} GB/s "
        f"(memory), {limits.copy_cache / 1e9:.1f} GB/s (in cache); "
        f"{limits.rand / 1e6:.0f}M uniform draws/s",
        flush=True,
    )
    rows = gcnii_rows(data, args.layers, limits, args) + positional_rows(data, limits, args)
    cells = [
        [r["path"], fmt(r["median_ms"], 2), r["work"], r["limit"], fmt(r["bound_ms"], 2),
         fmt(r["x_bound"], 2)]
        for r in rows
    ]  # fmt: skip
    table = format_table(["path", "ms", "work", "limit", "bound ms", "x bound"], cells)
    print(table, flush=True)
    result = {
        **info,
        "num_nodes": data.num_nodes,
        "layers": args.layers,
        "limits": {
            "gemm_peak_flop_s": limits.gemm_peak,
            "gemm_shape_flop_s": limits.gemm_shape,
            "copy_memory_bytes_s": limits.copy_memory,
            "copy_cache_bytes_s": limits.copy_cache,
            "rand_per_s": limits.rand,
        },
        "rows": rows,
        "table": table,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}", flush=True)
    return result


if __name__ == "__main__":
    main()
