"""Core benchmarks: ``GraphAttention`` against the modules it replaces, forward + backward.

Cases (fp32, 2 CPU threads, loss = <out, fixed random tensor>):

- a: complete graph, ``B=4``, ``N`` in {256, 1024}, embed 512, 8 heads:
  ``GraphAttention.from_multihead_attention(mha)(x)`` (``graph=None``) vs
  ``mha(x, x, x, need_weights=False)`` (``batch_first=True``). Goal: time ratio <= 1.05.
- b: random graph, in-degree exactly 16, shuffled edge order, ``N`` in {20000, 100000},
  embed 64, 8 heads: ``GraphAttention(backend="edges")`` with the weights of
  ``TransformerConv(64, 8, heads=8, root_weight=False)`` vs that conv. Goal: time ratio
  <= 0.67 and peak memory ratio <= 1. Extra rows: ``backend="auto"``, and ``"edges"`` given
  the raw ``edge_index`` every call (edge structure rebuilt per call).
- c: complete graph of ``N=1024`` as an edge list (all ``N*N`` pairs), embed 64, 8 heads:
  ``GraphAttention(backend="auto")`` (must recognise the complete graph and run the dense
  kernel) vs ``TransformerConv``. Goal: time ratio <= 0.2.
- d: a PyG ``Batch`` of 16 complete graphs of 64..128 nodes, embed 64, 8 heads,
  ``GraphAttention(backend="auto")`` given ``batch.edge_index`` vs ``TransformerConv``
  (informative).

Run: ``python -m benchmarks.bench_core [--quick] [--out PATH] [--device cpu|cuda]``.
Peak memory on CPU is measured per (implementation, case) in a fresh process (this module
with the hidden ``--measure-one CASE IMPL`` flag); see ``benchmarks/_harness.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchmarks._harness import (
    Step,
    fmt,
    format_table,
    measure_peak_cuda,
    measure_peak_rss,
    run_info,
    run_measure_subprocess,
    sync_fn,
    time_alternating,
    write_json_atomic,
)
from graphattn import Graph, GraphAttention

MODULE = "benchmarks.bench_core"
THREADS = 2
PEER = "peer"


@dataclass
class Case:
    """One comparison: graphattn variants and one peer on the same inputs and weights.

    Attributes:
        id: short name used on the command line (``--measure-one``) and in the table.
        title: what is computed.
        variants: graphattn implementation key -> description.
        peer: description of the peer implementation.
        goal_time: largest passing graphattn/peer time ratio (``None``: informative).
        goal_mem: largest passing peak-memory ratio (``None``: not a goal).
        build: ``build(device)`` -> implementation key -> :class:`Step` (keys: the
            variants and ``"peer"``).
        info_only: variants reported without a goal.
    """

    id: str
    title: str
    variants: dict[str, str]
    peer: str
    goal_time: float | None
    goal_mem: float | None
    build: Callable[[torch.device], dict[str, Step]]
    info_only: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- inputs
def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_in_degree_graph(n: int, k: int, gen: torch.Generator) -> Tensor:
    """``edge_index`` ``(2, n*k)``: every target gets exactly ``k`` random sources
    (self-loops and duplicates allowed), edge order shuffled."""
    src = torch.randint(0, n, (n * k,), generator=gen)
    dst = torch.arange(n).repeat_interleave(k)
    perm = torch.randperm(n * k, generator=gen)
    return torch.stack([src[perm], dst[perm]])


def complete_edge_index(n: int) -> Tensor:
    """``edge_index`` ``(2, n*n)`` of the complete graph with self-loops."""
    src = torch.arange(n).repeat(n)
    dst = torch.arange(n).repeat_interleave(n)
    return torch.stack([src, dst])


def transformer_conv_pair(embed: int, heads: int, *, backend: str, seed: int):
    """A ``TransformerConv(embed, embed // heads, heads, root_weight=False)`` and a
    ``GraphAttention`` computing the same function (identity output projection)."""
    from torch_geometric.nn import TransformerConv

    torch.manual_seed(seed)
    conv = TransformerConv(embed, embed // heads, heads=heads, root_weight=False)
    ga = GraphAttention.from_transformer_conv(conv, backend=backend)
    return ga, conv


def _params(*modules: nn.Module) -> list[Tensor]:
    return [p for m in modules for p in m.parameters()]


# ---------------------------------------------------------------------------- cases
def case_mha(n: int, batch: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        gen = _seeded(n)
        torch.manual_seed(0)
        mha = nn.MultiheadAttention(embed, heads, batch_first=True).to(device)
        ga = GraphAttention.from_multihead_attention(mha)
        x = torch.randn(batch, n, embed, generator=gen).to(device).requires_grad_()
        proj = torch.randn(batch, n, embed, generator=gen).to(device)
        return {
            "ga": Step(lambda: ga(x), [*_params(ga), x], proj),
            PEER: Step(lambda: mha(x, x, x, need_weights=False)[0], [*_params(mha), x], proj),
        }

    return Case(
        id=f"a-N{n}",
        title=f"complete graph, B={batch}, N={n}, embed {embed}, {heads} heads",
        variants={"ga": "GraphAttention.from_multihead_attention(mha), graph=None"},
        peer="nn.MultiheadAttention(batch_first=True), need_weights=False",
        goal_time=1.05,
        goal_mem=None,
        build=build,
    )


def case_sparse(n: int, k: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        gen = _seeded(n)
        edge_index = random_in_degree_graph(n, k, gen).to(device)
        ga, conv = transformer_conv_pair(embed, heads, backend="edges", seed=0)
        ga, conv = ga.to(device), conv.to(device)
        ga_auto = GraphAttention(embed, heads, backend="auto").to(device)
        ga_auto.load_state_dict(ga.state_dict())
        graph = Graph.from_edge_index(edge_index, n, n)  # structure cached on first use
        x = torch.randn(n, embed, generator=gen).to(device).requires_grad_()
        proj = torch.randn(n, embed, generator=gen).to(device)
        return {
            "ga": Step(lambda: ga(x, graph), [*_params(ga), x], proj),
            "ga_auto": Step(lambda: ga_auto(x, graph), [*_params(ga_auto), x], proj),
            "ga_raw": Step(lambda: ga(x, edge_index), [*_params(ga), x], proj),
            PEER: Step(lambda: conv(x, edge_index), [*_params(conv), x], proj),
        }

    return Case(
        id=f"b-N{n}",
        title=f"random graph, in-degree {k}, N={n}, E={n * k}, embed {embed}, {heads} heads",
        variants={
            "ga": 'GraphAttention(backend="edges"), Graph built once',
            "ga_auto": 'GraphAttention(backend="auto"), Graph built once',
            "ga_raw": 'GraphAttention(backend="edges"), raw edge_index each call',
        },
        peer=f"TransformerConv({embed}, {embed // heads}, heads={heads}, root_weight=False)",
        goal_time=0.67,
        goal_mem=1.0,
        build=build,
        info_only=("ga_raw",),
    )


def case_complete_edges(n: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        gen = _seeded(n)
        edge_index = complete_edge_index(n).to(device)
        ga, conv = transformer_conv_pair(embed, heads, backend="auto", seed=0)
        ga, conv = ga.to(device), conv.to(device)
        graph = Graph.from_edge_index(edge_index, n, n)
        x = torch.randn(n, embed, generator=gen).to(device).requires_grad_()
        proj = torch.randn(n, embed, generator=gen).to(device)
        return {
            "ga_raw": Step(lambda: ga(x, edge_index), [*_params(ga), x], proj),
            "ga": Step(lambda: ga(x, graph), [*_params(ga), x], proj),
            PEER: Step(lambda: conv(x, edge_index), [*_params(conv), x], proj),
        }

    return Case(
        id=f"c-N{n}",
        title=f"complete graph as edge list, N={n}, E={n * n}, embed {embed}, {heads} heads",
        variants={
            "ga_raw": 'GraphAttention(backend="auto"), raw edge_index each call',
            "ga": 'GraphAttention(backend="auto"), Graph built once',
        },
        peer=f"TransformerConv({embed}, {embed // heads}, heads={heads}, root_weight=False)",
        goal_time=0.2,
        goal_mem=None,
        build=build,
    )


def case_pyg_batch(graphs: int, lo: int, hi: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        from torch_geometric.data import Batch, Data

        gen = _seeded(graphs)
        sizes = torch.randint(lo, hi + 1, (graphs,), generator=gen).tolist()
        data = [
            Data(x=torch.randn(s, embed, generator=gen), edge_index=complete_edge_index(s))
            for s in sizes
        ]
        batch = Batch.from_data_list(data).to(device)
        edge_index = batch.edge_index
        ga, conv = transformer_conv_pair(embed, heads, backend="auto", seed=0)
        ga, conv = ga.to(device), conv.to(device)
        x = batch.x.clone().requires_grad_()
        proj = torch.randn(x.shape, generator=gen).to(device)
        return {
            "ga_raw": Step(lambda: ga(x, edge_index), [*_params(ga), x], proj),
            PEER: Step(lambda: conv(x, edge_index), [*_params(conv), x], proj),
        }

    return Case(
        id=f"d-G{graphs}",
        title=f"PyG Batch of {graphs} complete graphs of {lo}..{hi} nodes, embed {embed}, "
        f"{heads} heads",
        variants={"ga_raw": 'GraphAttention(backend="auto"), batch.edge_index each call'},
        peer=f"TransformerConv({embed}, {embed // heads}, heads={heads}, root_weight=False)",
        goal_time=None,
        goal_mem=None,
        build=build,
    )


def make_cases(quick: bool) -> list[Case]:
    if quick:
        return [
            case_mha(32, 2, 64, 8),
            case_mha(64, 2, 64, 8),
            case_sparse(2000, 16, 64, 8),
            case_complete_edges(128, 64, 8),
            case_pyg_batch(4, 8, 16, 64, 8),
        ]
    return [
        case_mha(256, 4, 512, 8),
        case_mha(1024, 4, 512, 8),
        case_sparse(20000, 16, 64, 8),
        case_sparse(100000, 16, 64, 8),
        case_complete_edges(1024, 64, 8),
        case_pyg_batch(16, 64, 128, 64, 8),
    ]


# ---------------------------------------------------------------------------- running
def _max_abs_diff(steps: dict[str, Step]) -> dict[str, float]:
    """Largest output difference of each graphattn variant from the peer (no grad)."""
    with torch.no_grad():
        ref = steps[PEER].forward()
        return {k: float((s.forward() - ref).abs().max()) for k, s in steps.items() if k != PEER}


def _measure_memory(case: Case, impl: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        steps = case.build(device)
        res = measure_peak_cuda(steps[impl], device)
        del steps
        gc.collect()
        torch.cuda.empty_cache()
        return res
    extra = ["--quick"] if args.quick else []
    return run_measure_subprocess(
        MODULE, ["--measure-one", case.id, impl, "--device", args.device, *extra]
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def run_case(case: Case, args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    t0 = time.perf_counter()
    print(f"[{case.id}] {case.title}: building", flush=True)
    steps = case.build(device)
    diffs = _max_abs_diff(steps)
    print(f"[{case.id}] max |graphattn - peer| of the outputs: {diffs}", flush=True)
    timing = time_alternating(
        steps, repeats=args.repeats, budget_s=args.budget, sync=sync_fn(device)
    )
    print(
        f"[{case.id}] timed {timing.repeats} rounds in {timing.wall_s:.1f} s: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in timing.median_ms.items()),
        flush=True,
    )
    del steps
    gc.collect()
    mem = {}
    for impl in [*case.variants, PEER]:
        mem[impl] = _measure_memory(case, impl, args)
        shown = mem[impl].get("peak_mib")
        shown = f"{shown:.1f} MiB" if shown is not None else mem[impl].get("error")
        print(f"[{case.id}] peak memory {impl}: {shown}", flush=True)
    rows = []
    peer_ms = timing.median_ms[PEER]
    peer_mib = mem[PEER].get("peak_mib")
    for impl, desc in case.variants.items():
        ga_ms, ga_mib = timing.median_ms[impl], mem[impl].get("peak_mib")
        ratio, mem_ratio = ga_ms / peer_ms, _ratio(ga_mib, peer_mib)
        goals, ok = [], True
        if case.goal_time is not None and impl not in case.info_only:
            goals.append(f"t<={case.goal_time:g}")
            ok = ok and ratio <= case.goal_time
        if case.goal_mem is not None and impl not in case.info_only:
            goals.append(f"m<={case.goal_mem:g}")
            ok = ok and mem_ratio is not None and mem_ratio <= case.goal_mem
        rows.append(
            {
                "case": case.id,
                "title": case.title,
                "impl": impl,
                "graphattn": desc,
                "peer": case.peer,
                "graphattn_ms": ga_ms,
                "peer_ms": peer_ms,
                "ratio": ratio,
                "graphattn_mib": ga_mib,
                "peer_mib": peer_mib,
                "mem_ratio": mem_ratio,
                "goal": " ".join(goals) or "info",
                "pass": (ok if goals else None),
                "max_abs_diff": diffs[impl],
                "repeats": timing.repeats,
                "graphattn_times_ms": timing.times_ms[impl],
                "peer_times_ms": timing.times_ms[PEER],
                "warmup_ms": {impl: timing.warmup_ms[impl], PEER: timing.warmup_ms[PEER]},
                "memory": {impl: mem[impl], PEER: mem[PEER]},
            }
        )
    print(f"[{case.id}] done in {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def print_table(rows: list[dict], cases: list[Case]) -> str:
    headers = ["case", "impl", "graphattn ms", "peer ms", "ratio", "graphattn MiB", "peer MiB"]
    headers += ["mem ratio", "goal", "result"]
    body = [
        [
            r["case"],
            r["impl"],
            fmt(r["graphattn_ms"]),
            fmt(r["peer_ms"]),
            fmt(r["ratio"], 3),
            fmt(r["graphattn_mib"]),
            fmt(r["peer_mib"]),
            fmt(r["mem_ratio"], 3),
            r["goal"],
            {True: "PASS", False: "FAIL", None: "-"}[r["pass"]],
        ]
        for r in rows
    ]
    lines = [format_table(headers, body, left=2), "", "cases (forward+backward, fp32):"]
    for c in cases:
        lines.append(f"  {c.id}: {c.title}; peer = {c.peer}")
        for k, v in c.variants.items():
            lines.append(f"      {k}: {v}")
    return "\n".join(lines)


def measure_one(args: argparse.Namespace) -> None:
    case_id, impl = args.measure_one
    cases = {c.id: c for c in make_cases(args.quick)}
    if case_id not in cases:
        raise SystemExit(f"unknown case {case_id!r}; known: {sorted(cases)}")
    steps = cases[case_id].build(torch.device(args.device))
    if impl not in steps:
        raise SystemExit(f"unknown implementation {impl!r}; known: {sorted(steps)}")
    step = steps[impl]
    del steps
    print(json.dumps(measure_peak_rss(step)), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--out", default=None, help="JSON path (default results/core_<dev>)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per case (max)")
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of timing per case")
    parser.add_argument("--measure-one", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
    torch.set_num_threads(THREADS)
    if args.measure_one:
        measure_one(args)
        return
    device = torch.device(args.device)
    start = time.perf_counter()
    info = run_info(MODULE, argv, device)
    print(
        f"torch {info['torch']}, {info['threads']} threads, device {device}, "
        f"{'quick' if args.quick else 'full'} run",
        flush=True,
    )
    cases = make_cases(args.quick)
    rows = []
    for case in cases:
        rows.extend(run_case(case, args))
    table = print_table(rows, cases)
    print()
    print(table, flush=True)
    wall = time.perf_counter() - start
    print(f"\ntotal wall time {wall:.1f} s", flush=True)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", f"core_{device.type}.json"
    )
    write_json_atomic(out, {**info, "quick": args.quick, "wall_s": wall, "rows": rows})
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
