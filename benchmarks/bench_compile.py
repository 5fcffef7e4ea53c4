"""torch.compile on the three attention paths: compiled/eager time and recompiles.

Rows (fp32, 1 thread by default, embed 64, 8 heads), each module eager against
``torch.compile(module, fullgraph=True)`` (Inductor) on the same inputs and weights, calls
alternated after the compile (:func:`benchmarks.timing.time_alternating`, median), for a
training step (forward + backward) and a no-grad forward:

1. ``dense``: ``GraphAttention(64, 8)`` on the complete graph, ``B=4, N=256`` (the fused
   SDPA kernel).
2. ``edges``: ``GraphAttention(64, 8, backend="edges")`` on a random graph, in-degree 16,
   ``N=2000`` (32,000 edges), unbatched ``(N, C)`` as PyG's layers take it.
3. ``gat``: ``graphattn.GATConv(64, 8, heads=8, backend="edges", add_self_loops=False)`` on
   the same graph with its self-loops added once beforehand (as measured; the layer's own
   self-loops now trace too, by masking the input's loops instead of removing them).

Then a changing graph: the ``edges`` module's training step on a new random edge list every
step (``E`` drawn around ``16 N``), 10 steps, once with ``torch._dynamo.mark_dynamic(ei, 1)``
and once without; a counting Inductor backend reports the compiles, and the steps from the
third on are timed against eager on the same graphs. The compile time is the first call's,
with Inductor's caches disabled (a cold compile every run).

    python -m benchmarks.bench_compile            # full run (~6 min on 2 busy cores)
    python -m benchmarks.bench_compile --quick    # smoke run

Output: a table and ``benchmarks/results/compile_cpu.json`` (written atomically).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch._dynamo.testing import CompileCounterWithBackend

from graphattn import GATConv, Graph, GraphAttention

from ._harness import format_table, run_info, write_json_atomic
from .timing import Step, time_alternating

MODULE = "benchmarks.bench_compile"
EMBED, HEADS, DEGREE = 64, 8, 16


def _random_edges(n: int, e: int, gen: torch.Generator) -> Tensor:
    """``(2, E)`` random edges; every target gets ``E // n`` in-edges (the rest at random)."""
    dst = torch.arange(n).repeat_interleave(e // n)
    dst = torch.cat([dst, torch.randint(0, n, (e - dst.numel(),), generator=gen)])
    return torch.stack([torch.randint(0, n, (e,), generator=gen), dst])


def _cases(quick: bool, gen: torch.Generator) -> list[dict[str, Any]]:
    """Each case: a module, its inputs (a callable ``f(module) -> output``) and a name."""
    b, n_dense = (2, 64) if quick else (4, 256)
    n = 300 if quick else 2000
    ei = _random_edges(n, DEGREE * n, gen)
    loops = torch.arange(n).expand(2, n)
    ei_loops = torch.cat([ei[:, ei[0] != ei[1]], loops], dim=1)  # (2, E' + N)
    x_dense = torch.randn(b, n_dense, EMBED, generator=gen)
    x = torch.randn(n, EMBED, generator=gen)
    graph = Graph.from_edge_index(ei, n)
    return [
        {
            "name": "dense",
            "what": f"GraphAttention, complete graph, B={b}, N={n_dense} (SDPA)",
            "module": GraphAttention(EMBED, HEADS),
            "call": lambda m: m(x_dense),
            "inputs": [x_dense],
        },
        {
            "name": "edges",
            "what": f"GraphAttention(backend='edges'), random graph, N={n}, E={ei.shape[1]}",
            "module": GraphAttention(EMBED, HEADS, backend="edges"),
            "call": lambda m: m(x, graph),
            "inputs": [x],
        },
        {
            "name": "gat",
            "what": f"GATConv(backend='edges', add_self_loops=False), N={n}, "
            f"E={ei_loops.shape[1]} (self-loops added beforehand)",
            "module": GATConv(EMBED, EMBED // HEADS, heads=HEADS, backend="edges",
                              add_self_loops=False),
            "call": lambda m: m(x, ei_loops),
            "inputs": [x],
        },
    ]  # fmt: skip


def _step(module: nn.Module, call: Callable[[nn.Module], Tensor], inputs: list[Tensor]) -> Step:
    proj = torch.randn_like(call(module).detach())
    for t in inputs:
        t.requires_grad_(True)
    return Step(lambda: call(module), [*module.parameters(), *inputs], proj)


def _first_call_s(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def part_fixed(quick: bool, budget: float, gen: torch.Generator) -> list[dict[str, Any]]:
    """Compiled/eager time of each case on a fixed graph, training step and forward."""
    rows = []
    for case in _cases(quick, gen):
        torch._dynamo.reset()
        module = case["module"]
        compiled = torch.compile(module, fullgraph=True)  # fullgraph: a graph break fails
        eager_step = _step(module, case["call"], case["inputs"])
        compiled_step = Step(lambda c=compiled, f=case["call"]: f(c), eager_step.grads,
                             eager_step.proj)  # fmt: skip
        row: dict[str, Any] = {"case": case["name"], "what": case["what"]}
        row["compile_train_s"] = _first_call_s(compiled_step)
        timing = time_alternating({"eager": eager_step, "compiled": compiled_step}, budget_s=budget)
        row["train_eager_ms"] = timing.median_ms["eager"]
        row["train_compiled_ms"] = timing.median_ms["compiled"]
        row["train_ratio"] = row["train_compiled_ms"] / row["train_eager_ms"]
        with torch.no_grad():
            fwd_eager = lambda m=module, f=case["call"]: f(m)  # noqa: E731
            fwd_compiled = lambda c=compiled, f=case["call"]: f(c)  # noqa: E731
            row["compile_forward_s"] = _first_call_s(fwd_compiled)
            diff = (fwd_compiled() - fwd_eager()).abs().max().item()
            timing = time_alternating(
                {"eager": fwd_eager, "compiled": fwd_compiled}, budget_s=budget
            )
        row["forward_eager_ms"] = timing.median_ms["eager"]
        row["forward_compiled_ms"] = timing.median_ms["compiled"]
        row["forward_ratio"] = row["forward_compiled_ms"] / row["forward_eager_ms"]
        row["max_abs_diff"] = diff
        row["repeats"] = timing.repeats
        rows.append(row)
        print(
            f"{case['name']}: train {row['train_ratio']:.2f}, forward {row['forward_ratio']:.2f} "
            f"(compile {row['compile_train_s']:.0f} s + {row['compile_forward_s']:.0f} s)",
            flush=True,
        )
    return rows


def part_changing(quick: bool, steps: int, mark: bool, gen: torch.Generator) -> dict[str, Any]:
    """The edges case's training step on a new edge list every step: compiles and times."""
    torch._dynamo.reset()
    n = 300 if quick else 2000
    module = GraphAttention(EMBED, HEADS, backend="edges")
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(module, backend=counter, fullgraph=True)
    x = torch.randn(n, EMBED, generator=gen, requires_grad=True)
    frames, eager_ms, compiled_ms, sizes = [], [], [], []
    for _ in range(steps):
        e = DEGREE * n + int(torch.randint(-n, n, (), generator=gen))
        ei = _random_edges(n, e, gen)
        if mark:
            torch._dynamo.mark_dynamic(ei, 1)
        proj = torch.randn(n, EMBED, generator=gen)
        times = {}
        for name, m in (("compiled", compiled), ("eager", module)):
            step = Step(lambda m=m, ei=ei: m(x, ei), [*module.parameters(), x], proj)
            times[name] = _first_call_s(step) * 1e3
        frames.append(counter.frame_count)
        compiled_ms.append(times["compiled"])
        eager_ms.append(times["eager"])
        sizes.append(e)
    later_c, later_e = statistics.median(compiled_ms[2:]), statistics.median(eager_ms[2:])
    print(
        f"changing graph, mark_dynamic={mark}: compiles after each step {frames}; steps 3+: "
        f"compiled {later_c:.1f} ms, eager {later_e:.1f} ms",
        flush=True,
    )
    return {
        "mark_dynamic": mark,
        "steps": steps,
        "edges_per_step": sizes,
        "compiles_after_each_step": frames,
        "compiles": frames[-1],
        "recompiles_after_first_step": frames[-1] - frames[0],
        "step_ms_compiled": compiled_ms,
        "step_ms_eager": eager_ms,
        "median_ms_compiled_from_step_3": later_c,
        "median_ms_eager_from_step_3": later_e,
        "ratio_from_step_3": later_c / later_e,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timing per row")
    parser.add_argument("--steps", type=int, default=10, help="steps of the changing graph")
    parser.add_argument("--out", default=None, help="JSON path (default results/compile_cpu.json)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    torch.compiler.config.force_disable_caches = True  # time cold compiles, every run
    start = time.perf_counter()
    info = run_info(MODULE, argv, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    result: dict[str, Any] = {**info, "quick": args.quick}
    result["fixed_graph"] = part_fixed(args.quick, args.budget, gen)
    result["changing_graph"] = [
        part_changing(args.quick, args.steps, mark, gen) for mark in (True, False)
    ]
    print()
    print(
        format_table(
            ["path", "train eager ms", "compiled ms", "ratio", "forward eager ms", "compiled ms",
             "ratio", "compile s"],
            [
                [r["case"], f"{r['train_eager_ms']:.2f}", f"{r['train_compiled_ms']:.2f}",
                 f"{r['train_ratio']:.2f}", f"{r['forward_eager_ms']:.2f}",
                 f"{r['forward_compiled_ms']:.2f}", f"{r['forward_ratio']:.2f}",
                 f"{r['compile_train_s']:.0f} + {r['compile_forward_s']:.0f}"]
                for r in result["fixed_graph"]
            ],
        )
    )  # fmt: skip
    print()
    print(
        format_table(
            ["changing graph", "steps", "compiles", "recompiles after step 1", "step ratio"],
            [
                [f"mark_dynamic={r['mark_dynamic']}", r["steps"], r["compiles"],
                 r["recompiles_after_first_step"], f"{r['ratio_from_step_3']:.2f}"]
                for r in result["changing_graph"]
            ],
        )
    )  # fmt: skip
    result["wall_s"] = time.perf_counter() - start
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "compile_cpu.json"
    )
    write_json_atomic(out, result)
    print(f"total wall time {result['wall_s']:.1f} s; wrote {out}")


if __name__ == "__main__":
    main()
