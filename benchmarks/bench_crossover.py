"""Where does a masked dense call beat the edge backend? Measures the crossover that
``graphattn.AutoPolicy`` encodes, and checks which backend ``auto`` picks for each case.

For random graphs with ``N`` nodes and in-degree ``k`` (each target gets ``k`` random
sources), times ``GraphAttention`` forward+backward with ``backend="dense"`` and
``backend="edges"`` on the same inputs and weights, alternating the two, and reports the
median times, the ratio and, per ``N``, the smallest density ``k / N`` at which dense wins.

Run: ``python -m benchmarks.bench_crossover [--quick] [--embed 512] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime

import torch

from benchmarks.timing import time_alternating
from graphattn import Graph, GraphAttention, choose_backend


def random_graph(n: int, k: int, gen: torch.Generator) -> Graph:
    """``k`` random in-edges per target (self-loops and duplicates allowed, as in a random
    sparse graph), edge order shuffled."""
    src = torch.randint(0, n, (n * k,), generator=gen)
    dst = torch.arange(n).repeat_interleave(k)
    perm = torch.randperm(n * k, generator=gen)
    return Graph.from_edge_index(torch.stack([src[perm], dst[perm]]), n, n)


def time_pair(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, calls alternated, after one warm-up each."""
    timing = time_alternating(fns, repeats=repeats, min_repeats=repeats, warmup=1)
    return timing.median_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--embed", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = [256, 512] if args.quick else [256, 512, 1024, 2048, 4096]
    degrees = [4, 16] if args.quick else [4, 8, 16, 32, 64, 128]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    attn = GraphAttention(args.embed, args.heads)
    rows = []
    print(f"embed={args.embed} heads={args.heads} threads={torch.get_num_threads()}", flush=True)
    print(
        f"{'N':>6} {'k':>5} {'density':>9} {'dense ms':>9} {'edges ms':>9} {'e/d':>6} "
        f"{'auto':>6} {'auto/best':>9}"
    )
    for n in sizes:
        x = torch.randn(1, n, args.embed, requires_grad=True)
        for k in degrees:
            if k > n:
                continue
            graph = random_graph(n, k, gen)
            graph.edge_structure()  # cached, as in a training loop

            def run(backend: str, graph: Graph = graph, x: torch.Tensor = x) -> None:
                attn.backend = backend
                attn(x, graph).sum().backward()

            repeats = 3 if args.quick else max(3, min(9, int(2e6 / (n * k + n * n / 8))))
            res = time_pair({"dense": lambda: run("dense"), "edges": lambda: run("edges")}, repeats)
            ratio = res["edges"] / res["dense"]
            auto = choose_backend(graph, head_dim=args.embed // args.heads)
            auto_loss = res[auto] / min(res.values())
            rows.append(
                {
                    "N": n,
                    "k": k,
                    "density": k / n,
                    "dense_ms": res["dense"],
                    "edges_ms": res["edges"],
                    "edges_over_dense": ratio,
                    "auto": auto,
                    "auto_over_best": auto_loss,
                }
            )
            print(
                f"{n:>6} {k:>5} {k / n:>9.4f} {res['dense']:>9.1f} {res['edges']:>9.1f} "
                f"{ratio:>6.2f} {auto:>6} {auto_loss:>9.2f}",
                flush=True,
            )
    crossover = {}
    for n in sizes:
        wins = [r["density"] for r in rows if r["N"] == n and r["edges_over_dense"] > 1.0]
        crossover[n] = min(wins) if wins else None
    print("smallest density at which dense wins, per N:", crossover)
    losses = [r["auto_over_best"] for r in rows]
    print(
        f"auto picked the faster backend in {sum(x == 1.0 for x in losses)}/{len(losses)} "
        f"cases; worst auto/best = {max(losses):.2f}"
    )
    result = {
        "command": " ".join(
            [sys.executable, "-m", "benchmarks.bench_crossover", *(argv or sys.argv[1:])]
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "embed": args.embed,
        "heads": args.heads,
        "rows": rows,
        "crossover_density": crossover,
    }
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", f"crossover_e{args.embed}.json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
