"""The edge attention alone on CPU: the fused C++ kernel against the pure-torch edge path,
forward and forward + backward, as multiples of the bandwidth bound, on uniform and
power-law graphs.

The call is ``graph_attention(q, k, v, graph, score=..., backend=...)`` with ``B=1``,
``--heads`` heads of dim ``--dim``, fp32, the graph built once (so the rows time the kernel,
not the projections or the graph's preparation). Graphs: every target with exactly
``--degree`` random sources, at each ``--n``; and a Barabasi-Albert graph with the same mean
in-degree at the first ``--n`` (hubs with thousands of in-edges), whose time is also given
as a multiple of the uniform graph's (the goal of "A fused edge kernel ...": within 1.5x).
The bound is ``benchmarks.bench_core.fused_bytes`` at the copy bandwidth measured at the
start of the run, the same bound as ``make bench`` and ``benchmarks.sweep_triton``.

Each fused row is also timed with the huge-page copies off (``fused_4k_ms``: rows read in
random order stay in 4 KiB pages), alternated with the other two in the same run.

Small graphs (64 to 20,000 nodes, with and without dropout) give the forward + backward of
``fused`` as a multiple of ``edges``: the evidence for ``AutoPolicy.fused_min_work``.

Run: ``python -m benchmarks.bench_fused_cpu [--quick] [--n 100000 1000000] [--out PATH]`` (about 8
minutes on 2 threads; results in ``benchmarks/results/fused_cpu.json``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks._harness import fmt, format_table, run_info, write_json_atomic
from benchmarks.bench_core import (
    _seeded,
    barabasi_albert_graph,
    copy_bandwidth,
    fused_bytes,
    random_in_degree_graph,
)
from benchmarks.timing import time_alternating
from graphattn import Graph, graph_attention, scores
from graphattn.backends.fused import fused_extension

_SCORES = ("dot", "gat", "gatv2")


def _score(name: str, heads: int, dim: int) -> tuple[scores.Score, int]:
    """The score function and the width of its queries and keys (1 for GAT)."""
    if name == "gatv2":
        return scores.GATv2(torch.randn(heads, dim, generator=_seeded(2)), 0.2), dim
    if name == "gat":
        return scores.GAT(0.2), 1
    return scores.DotProduct(), dim


def _calls(
    graph: Graph, score_name: str, args: argparse.Namespace, dropout_p: float = 0.0
) -> tuple[Callable[[str], None], Callable[[str], None], int]:
    """``fwd(backend)`` and ``fwd_bwd(backend)`` of one attention call on ``graph``, with
    random inputs in the layout of a projection's output, ``(1, N, H, D)`` seen as
    ``(1, H, N, D)`` as in GraphAttention (the kernel's node-major rows are then views, not
    copies), and the width of the queries and keys (1 for GAT)."""
    n, h, d = graph.num_dst, args.heads, args.dim
    score, dk = _score(score_name, h, d)
    gen = _seeded(1)
    leaves = [torch.randn(1, n, h, w, generator=gen).requires_grad_() for w in (dk, dk, d)]
    q, k, v = (x.transpose(1, 2) for x in leaves)  # (1, H, N, .)
    grad = torch.randn(1, n, h, d, generator=gen).transpose(1, 2)  # (1, H, N, D)

    def fwd(backend: str) -> None:
        with torch.no_grad():
            graph_attention(q, k, v, graph, score=score, dropout_p=dropout_p, backend=backend)

    def fwd_bwd(backend: str) -> None:
        out = graph_attention(q, k, v, graph, score=score, dropout_p=dropout_p, backend=backend)
        torch.autograd.grad(out, leaves, grad)

    return fwd, fwd_bwd, dk


def measure(
    edge_index: Tensor, n: int, score_name: str, args: argparse.Namespace, bandwidth: float
) -> list[dict]:
    """Rows for one graph and score: forward and forward + backward of ``fused`` and
    ``edges``, alternated, with each as a multiple of the bound; the ``fused`` rows also
    hold ``fused_4k_ms``, the kernel without its huge-page copies, alternated with them.

    Shapes:
        edge_index: ``(2, E)``.
    """
    graph = Graph.from_edge_index(edge_index, n, n)
    h, d = args.heads, args.dim
    fwd, fwd_bwd, dk = _calls(graph, score_name, args)
    bound_fb = fused_bytes(graph.num_edges, n, h, dk, d, dk) / bandwidth * 1e3  # ms

    fwd_bwd("edges")  # the graph's sorted structure and source order, once, before timing
    ext, _ = fused_extension()
    threshold = ext.huge_pages()

    def small_pages(fn: Callable[[str], None]) -> None:
        ext.set_huge_pages(-1)
        try:
            fn("fused")
        finally:
            ext.set_huge_pages(threshold)

    rows = []
    for part, fn, bound in (("fwd", fwd, bound_fb / 3), ("fwd+bwd", fwd_bwd, bound_fb)):
        timing = time_alternating(
            {
                "fused": lambda fn=fn: fn("fused"),
                "fused_4k": lambda fn=fn: small_pages(fn),
                "edges": lambda fn=fn: fn("edges"),
            },
            repeats=args.repeats,
            budget_s=args.budget,
        )
        for backend in ("fused", "edges"):
            ms = timing.median_ms[backend]
            extra = {}
            if backend == "fused":
                four_k = timing.median_ms["fused_4k"]
                extra = {"fused_4k_ms": four_k, "fused_4k_times_ms": timing.times_ms["fused_4k"]}
                extra["fused_4k_x_bound"] = four_k / bound
            rows.append(
                {
                    **extra,
                    "n": n,
                    "edges": graph.num_edges,
                    "score": score_name,
                    "part": part,
                    "backend": backend,
                    "median_ms": ms,
                    "times_ms": timing.times_ms[backend],
                    "bound_ms": bound,
                    "x_bound": ms / bound,
                }
            )
    return rows


#: (N, in-degree) of the small-graph rows: where ``auto`` must choose well for small calls
SMALL = ((64, 4), (256, 8), (1000, 5), (2708, 5), (5000, 16), (20000, 16))


def _small_pair(graph: Graph, name: str, p: float, args: argparse.Namespace) -> dict:
    """Forward + backward of ``fused`` and ``edges`` on one small graph, alternated."""
    _, fwd_bwd, _ = _calls(graph, name, args, dropout_p=p)
    timing = time_alternating(
        {"fused": lambda: fwd_bwd("fused"), "edges": lambda: fwd_bwd("edges")},
        repeats=3 if args.quick else 15,
        budget_s=1.0 if args.quick else 5.0,
    )
    fused, edges = timing.median_ms["fused"], timing.median_ms["edges"]
    return {
        "n": graph.num_dst,
        "edges": graph.num_edges,
        "score": name,
        "dropout_p": p,
        "fused_ms": fused,
        "edges_ms": edges,
        "ratio": fused / edges,
    }


def measure_small(args: argparse.Namespace) -> list[dict]:
    """Forward + backward of ``fused`` against ``edges`` on small random graphs, with and
    without dropout on the weights (0.6, as GAT on Cora): the evidence for ``auto``'s
    ``fused_min_work``."""
    rows = []
    sizes = SMALL[:2] if args.quick else SMALL
    for (n, degree), name, p in itertools.product(sizes, ("dot", "gat"), (0.0, 0.6)):
        graph = Graph.from_edge_index(random_in_degree_graph(n, degree, _seeded(0)), n, n)
        row = _small_pair(graph, name, p, args)
        rows.append(row)
        print(
            f"small N={n} E={row['edges']} {name} p={p}: fused {row['fused_ms']:.3f} ms, "
            f"edges {row['edges_ms']:.3f} ms, {row['ratio']:.2f}x",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--degree", type=int, default=16)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument(
        "--scores", nargs="+", default=["dot", "gat", "gatv2"], choices=sorted(_SCORES)
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per timed pair")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--skip-small", action="store_true", help="leave out the small-graph rows (auto's rule)"
    )
    parser.add_argument("--out", default="benchmarks/results/fused_cpu.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats, args.budget = [2000], 2, 1.0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _, why = fused_extension()
    if why is not None:
        sys.exit(f"the fused CPU kernel is not available: {why}")
    start = time.perf_counter()
    info = run_info(
        "benchmarks.bench_fused_cpu", sys.argv[1:] if argv is None else argv, torch.device("cpu")
    )
    bandwidth = copy_bandwidth(torch.device("cpu"))
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)", flush=True)
    rows: list[dict] = []
    graphs = [("uniform", n, random_in_degree_graph(n, args.degree, _seeded(0))) for n in args.n]
    n0 = args.n[0]
    graphs.insert(1, ("power-law", n0, barabasi_albert_graph(n0, args.degree // 2, _seeded(0))))
    for kind, n, edge_index in graphs:
        for name in args.scores:
            if kind == "power-law" and name == "gatv2":
                continue
            for row in measure(edge_index, n, name, args, bandwidth):
                row["graph"] = kind
                rows.append(row)
                print(
                    f"{kind} N={n} {name} {row['part']} {row['backend']}: "
                    f"{row['median_ms']:.1f} ms, {row['x_bound']:.2f}x bound",
                    flush=True,
                )
    for row in rows:  # the power-law graph against the uniform one of the same size
        if row["graph"] == "power-law":
            same = [
                r
                for r in rows
                if r["graph"] == "uniform"
                and r["n"] == row["n"]
                and all(r[key] == row[key] for key in ("score", "part", "backend"))
            ]
            row["x_uniform"] = row["median_ms"] / same[0]["median_ms"] if same else None
    small = [] if args.skip_small else measure_small(args)
    table = format_table(
        [
            "graph",
            "N",
            "E",
            "score",
            "part",
            "fused ms",
            "x bound",
            "4 KiB pages ms",
            "x bound",
            "edges ms",
            "x bound",
            "edges / fused",
        ],
        [
            [
                r["graph"],
                r["n"],
                r["edges"],
                r["score"],
                r["part"],
                fmt(r["median_ms"]),
                fmt(r["x_bound"], 2),
                fmt(r["fused_4k_ms"]),
                fmt(r["fused_4k_x_bound"], 2),
                fmt(e["median_ms"]),
                fmt(e["x_bound"], 2),
                fmt(e["median_ms"] / r["median_ms"], 2),
            ]
            for r, e in zip(rows[0::2], rows[1::2], strict=True)
        ],
    )
    print(table)
    if small:
        print(
            format_table(
                ["N", "E", "score", "dropout", "fused ms", "edges ms", "fused / edges"],
                [
                    [
                        r["n"],
                        r["edges"],
                        r["score"],
                        r["dropout_p"],
                        fmt(r["fused_ms"], 3),
                        fmt(r["edges_ms"], 3),
                        fmt(r["ratio"], 2),
                    ]
                    for r in small
                ],
            )
        )
    info.update(
        {
            "heads": args.heads,
            "dim": args.dim,
            "degree": args.degree,
            "copy_bandwidth_bytes_s": bandwidth,
            "huge_page_threshold_bytes": fused_extension()[0].huge_pages(),
            "wall_s": time.perf_counter() - start,
            "rows": rows,
            "small_rows": small,
        }
    )
    write_json_atomic(args.out, info)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
