"""The Triton edge kernel on CUDA alone: time per launch configuration (edges per block,
warps), forward and forward + backward, as multiples of the bandwidth bound, and where the
time of one forward + backward goes (the CUDA kernels of torch's profiler).

The call is ``graph_attention(q, k, v, graph, backend="fused")`` on a random graph of in-degree
``--degree`` (``B=1``, ``--heads`` heads of dim ``--dim``, fp32), the graph built once; dot
product and GAT scores. The bound is ``benchmarks.bench_core.fused_bytes`` at the copy
bandwidth measured at the start of the run.

Run on a CUDA machine: ``python -m benchmarks.sweep_triton [--n 1000000] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch

from benchmarks._harness import write_json_atomic
from benchmarks.bench_core import copy_bandwidth, fused_bytes, random_in_degree_graph
from graphattn import Graph, graph_attention, scores
from graphattn.backends import _chunks
from graphattn.backends import fused as fused_mod


def _median_ms(fn, reps: int = 20) -> float:
    """Median milliseconds of ``fn`` over ``reps`` calls (CUDA events, after 3 warm-ups)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _sweep(kind: str, graph: Graph, args: argparse.Namespace, bandwidth: float, kernels) -> list:
    """Rows of one score: every launch configuration, the default one, and its profile."""
    dev, n, h, d = torch.device("cuda"), args.n, args.heads, args.dim
    dk = d if kind == "dot" else 1
    score = scores.DotProduct() if kind == "dot" else scores.GAT(0.2)
    q = torch.randn(1, h, n, dk, device=dev, requires_grad=True)
    k = torch.randn(1, h, n, dk, device=dev, requires_grad=True)
    v = torch.randn(1, h, n, d, device=dev, requires_grad=True)
    grad = torch.randn(1, h, n, d, device=dev)
    bound_fb = fused_bytes(graph.num_edges, n, h, dk, d, dk) / bandwidth * 1e3

    def fwd(backend: str = "fused") -> None:
        with torch.no_grad():
            graph_attention(q, k, v, graph, score=score, backend=backend)

    def fwd_bwd(backend: str = "fused") -> None:
        out = graph_attention(q, k, v, graph, score=score, backend=backend)
        torch.autograd.grad(out, (q, k, v), grad)

    rows = []
    edges_ms = _median_ms(lambda: fwd_bwd("edges"), reps=5)
    for be, warps in itertools.product((8, 16, 32), (1, 2, 4)):
        kernels.CONFIG.clear()
        kernels.CONFIG.update({"BE": be, "num_warps": warps})
        f_ms, fb_ms = _median_ms(fwd), _median_ms(fwd_bwd)
        row = {
            "score": kind,
            "BE": be,
            "num_warps": warps,
            "fwd_ms": f_ms,
            "fwd_bwd_ms": fb_ms,
            "fwd_x_bound": f_ms / (bound_fb / 3),
            "fwd_bwd_x_bound": fb_ms / bound_fb,
            "edges_fwd_bwd_ms": edges_ms,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    kernels.CONFIG.clear()
    default = (_median_ms(fwd), _median_ms(fwd_bwd))
    print(
        f"{kind}: default config fwd {default[0]:.2f} ms, fwd+bwd {default[1]:.2f} ms "
        f"({default[1] / bound_fb:.1f}x bound {bound_fb:.2f} ms); pure-torch edges "
        f"fwd+bwd {edges_ms:.2f} ms",
        flush=True,
    )
    rows.append({"score": kind, "config": "default", "fwd_ms": default[0],
                 "fwd_bwd_ms": default[1], "bound_fwd_bwd_ms": bound_fb})  # fmt: skip
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fwd_bwd()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=12), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--degree", type=int, default=16)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    kernels, why = fused_mod.triton_kernels()
    if kernels is None:
        raise SystemExit(f"the Triton kernel is not available: {why}")
    dev, n = torch.device("cuda"), args.n
    gen = torch.Generator().manual_seed(0)
    graph = Graph.from_edge_index(random_in_degree_graph(n, args.degree, gen).to(dev), n)
    _chunks.by_source(graph.edge_structure())  # the backward's source order, cached
    bandwidth = copy_bandwidth(dev)
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s; N={n}, E={graph.num_edges}", flush=True)
    rows = []
    for kind in ("dot", "gat"):
        rows += _sweep(kind, graph, args, bandwidth, kernels)
    out = args.out or os.path.join("benchmarks", "results", "sweep_triton_cuda.json")
    write_json_atomic(out, {"n": n, "bandwidth": bandwidth, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
