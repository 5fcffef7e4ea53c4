"""Global attention on big complete graphs: the linear backend against PyG and exact attention.

Three parts, each one training step (forward + backward, fp32, 2 threads), embed 64, 8 heads:

1. ``N`` in {10k, 100k, 1M}: graphattn's ``SGFormerAttention`` against PyG's (same weights),
   and ``GraphAttention(score=FAVOR(16, 8))`` against PyG's ``PerformerAttention`` (16
   features per head, as PyG draws ``D log D``); time (alternated calls, median) and peak RSS
   (measured in a fresh process per row). Goal: time ratio <= 1.0.
2. The crossover: the same linear layers against exact attention (``GraphAttention`` on the
   complete graph, the fused SDPA kernel) for ``N`` from 256 to 8192: the ``N`` at which
   linear beats exact.
3. FAVOR+'s error: relative error of the output against exact softmax attention (same
   weights) as a function of the number of features, at ``N = 2048``, for inputs of two
   scales (the learned projections of unit-variance features, and half of that).

    python -m benchmarks.bench_global            # full run (~10 min)
    python -m benchmarks.bench_global --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from graphattn import GraphAttention, SGFormerAttention
from graphattn.kernels import FAVOR

from ._harness import format_table, run_info, write_json_atomic
from .timing import Step, measure_peak_rss, run_measure_subprocess, time_alternating

MODULE = "benchmarks.bench_global"
THREADS = 2
EMBED, HEADS = 64, 8
FEATURES = 16  # PyG's PerformerAttention draws int(D * log(D)) = 16 rows for D = 8


def _pyg_attention() -> Any:
    from torch_geometric.nn import attention

    return attention


class _Favor(nn.Module):
    """``GraphAttention`` with a FAVOR+ score on the complete graph, ``(B, N, C)`` in and out
    (PyG's PerformerAttention's interface)."""

    def __init__(self, features: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        score = FAVOR(features, EMBED // HEADS, generator=gen)
        self.attn = GraphAttention(EMBED, HEADS, score=score)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


def _build(impl: str, n: int, seed: int = 0) -> Step:
    """One training step of ``impl`` on ``(1, n, 64)`` random features."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, EMBED, generator=gen).requires_grad_()
    if impl in ("sgformer", "sgformer_pyg"):
        pyg = _pyg_attention().SGFormerAttention(EMBED, heads=HEADS, head_channels=EMBED // HEADS)
        module: nn.Module = (
            pyg
            if impl == "sgformer_pyg"
            else SGFormerAttention(EMBED, heads=HEADS, head_channels=EMBED // HEADS)
        )
        if impl == "sgformer":
            module.load_state_dict(pyg.state_dict())
    elif impl == "performer_pyg":
        module = _pyg_attention().PerformerAttention(
            EMBED, heads=HEADS, head_channels=EMBED // HEADS
        )
    elif impl == "favor":
        module = _Favor(FEATURES, seed)
    elif impl == "exact":
        module = GraphAttention(EMBED, HEADS)
    else:
        raise ValueError(
            f"impl must be sgformer, sgformer_pyg, favor, performer_pyg or exact, got {impl!r}"
        )
    out_dim = EMBED // HEADS if impl.startswith("sgformer") else EMBED
    proj = torch.randn(1, n, out_dim, generator=gen)
    return Step(lambda: module(x), [*module.parameters(), x], proj)


# ---------------------------------------------------------------------------- parts
def part_scale(sizes: list[int], budget: float) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        for ours, peer in (("sgformer", "sgformer_pyg"), ("favor", "performer_pyg")):
            steps = {ours: _build(ours, n), peer: _build(peer, n)}
            t = time_alternating(steps, repeats=7, min_repeats=2, budget_s=budget)
            mem = {i: run_measure_subprocess(MODULE, ["--measure-one", i, str(n)]) for i in steps}
            row = {
                "n": n,
                "ours": ours,
                "peer": peer,
                "ours_ms": t.median_ms[ours],
                "peer_ms": t.median_ms[peer],
                "time_ratio": t.median_ms[ours] / t.median_ms[peer],
                "ours_peak_mib": mem[ours].get("peak_mib"),
                "peer_peak_mib": mem[peer].get("peak_mib"),
                "rounds": t.repeats,
            }
            rows.append(row)
            print(
                f"N={n:>8} {ours:>9} {row['ours_ms']:9.1f} ms  {peer:>13} {row['peer_ms']:9.1f} ms"
                f"  ratio {row['time_ratio']:.2f}  peak {row['ours_peak_mib']} / "
                f"{row['peer_peak_mib']} MiB",
                flush=True,
            )
            del steps
    return rows


def part_crossover(sizes: list[int], budget: float) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        steps = {i: _build(i, n) for i in ("exact", "sgformer", "favor")}
        t = time_alternating(steps, repeats=5, min_repeats=2, budget_s=budget)
        rows.append({"n": n, **{f"{i}_ms": t.median_ms[i] for i in steps}})
        print(
            f"N={n:>6} exact {t.median_ms['exact']:8.1f} ms  "
            f"sgformer {t.median_ms['sgformer']:7.1f} ms  favor {t.median_ms['favor']:7.1f} ms",
            flush=True,
        )
    return rows


def part_error(n: int, features: list[int], draws: int = 3) -> list[dict[str, Any]]:
    """Relative output error of FAVOR+ against exact attention, same weights."""
    rows = []
    for input_scale in (1.0, 0.5):
        torch.manual_seed(0)
        exact = GraphAttention(EMBED, HEADS).eval()
        x = torch.randn(1, n, EMBED, generator=torch.Generator().manual_seed(1)) * input_scale
        with torch.no_grad():
            ref = exact(x)
            for f in features:
                errs = []
                for seed in range(draws):
                    fav = GraphAttention(
                        EMBED,
                        HEADS,
                        score=FAVOR(
                            f, EMBED // HEADS, generator=torch.Generator().manual_seed(seed)
                        ),
                    )
                    fav.load_state_dict(exact.state_dict())
                    errs.append(float((fav(x) - ref).norm() / ref.norm()))
                rows.append(
                    {"input_scale": input_scale, "features": f, "rel_error": sum(errs) / draws}
                )
                print(
                    f"input scale {input_scale}: F={f:>5} "
                    f"relative error {rows[-1]['rel_error']:.4f}",
                    flush=True,
                )
    return rows


def measure_one(impl: str, n: int) -> None:
    torch.set_num_threads(THREADS)
    print(json.dumps(measure_peak_rss(_build(impl, n))))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timing per row")
    parser.add_argument("--out", default=None, help="JSON path (default results/global_cpu.json)")
    parser.add_argument("--measure-one", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.measure_one:
        measure_one(args.measure_one[0], int(args.measure_one[1]))
        return
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    info = run_info(MODULE, argv, torch.device("cpu"))
    if args.quick:
        scale, cross, err_n, feats = [2000], [256, 1024], 512, [8, 64]
    else:
        scale = [10_000, 100_000, 1_000_000]
        cross, err_n = [256, 512, 1024, 2048, 4096, 8192], 2048
        feats = [8, 16, 32, 64, 128, 256, 1024]
    result: dict[str, Any] = {**info, "quick": args.quick}
    result["scale"] = part_scale(scale, args.budget)
    result["crossover"] = part_crossover(cross, args.budget)
    result["favor_error"] = part_error(err_n, feats)
    crossing: Callable[[str], int | None] = lambda name: next(  # noqa: E731
        (r["n"] for r in result["crossover"] if r[f"{name}_ms"] < r["exact_ms"]), None
    )
    result["linear_beats_exact_from_n"] = {
        "sgformer": crossing("sgformer"),
        "favor": crossing("favor"),
    }
    print()
    print(
        format_table(
            ["N", "ours", "peer", "ours ms", "peer ms", "time ratio", "ours MiB", "peer MiB"],
            [
                [r["n"], r["ours"], r["peer"], f"{r['ours_ms']:.1f}", f"{r['peer_ms']:.1f}",
                 f"{r['time_ratio']:.2f}", _mib(r["ours_peak_mib"]), _mib(r["peer_peak_mib"])]
                for r in result["scale"]
            ],
            left=3,
        )
    )  # fmt: skip
    print(f"\nlinear beats exact from N = {result['linear_beats_exact_from_n']}")
    result["wall_s"] = time.perf_counter() - start
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "global_cpu.json"
    )
    write_json_atomic(out, result)
    print(f"total wall time {result['wall_s']:.1f} s; wrote {out}")


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


if __name__ == "__main__":
    main()
