"""What the rules for non-finite values and memory limits cost on clean inputs.

Runs the training steps of ``make bench`` (``bench_core``'s cases, graphattn's variants only)
twice in one alternating run: as shipped, and with the checks patched out (the output sum
and the careful path of ``functional._run_finite``, the dense backend's key/value sums, the
edge path's query/key sums, the modules' padded-feature sums, the backends' memory
estimates). The ratio ``checked / unchecked`` is the clean path's slowdown; the goal is at
most 1.02. Not patched out (compiled into the fused kernel): its NaN-aware max and its
``-inf``-bias select.

    python -m benchmarks.bench_finite            # the full sizes of make bench (~10 min)
    python -m benchmarks.bench_finite --quick    # tiny sizes, a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

import graphattn.attention as attention_mod
import graphattn.backends.blocks as blocks_mod
import graphattn.backends.dense as dense_mod
import graphattn.backends.edges as edges_mod
import graphattn.backends.fused as fused_mod
import graphattn.functional as functional_mod
import graphattn.layers as layers_mod

from ._harness import format_table, run_info, write_json_atomic
from .bench_core import PEER, THREADS, make_cases
from .timing import time_alternating

MODULE = "benchmarks.bench_finite"
GOAL = 1.02


def _unchecked_patches() -> list[tuple[Any, str, Any]]:
    """(module, attribute, replacement) that turn every clean-path check into a no-op."""
    no_memory = lambda *args: []  # noqa: E731
    return [
        (functional_mod, "_run_finite", lambda chosen, call: chosen.run(call)),
        (dense_mod, "all_finite", lambda *tensors: True),
        (edges_mod, "all_finite", lambda *tensors: True),
        (attention_mod, "zero_padded_nodes", lambda x, mask: x),
        (layers_mod, "zero_padded_nodes", lambda x, mask: x),
        *[(m, "memory_reasons", no_memory) for m in (dense_mod, blocks_mod, edges_mod, fused_mod)],
    ]


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Run the body with the checks patched out (restored afterwards, also on error)."""
    patches = _unchecked_patches()
    saved = [(m, name, getattr(m, name)) for m, name, _ in patches]
    try:
        for m, name, new in patches:
            setattr(m, name, new)
        yield
    finally:
        for m, name, old in saved:
            setattr(m, name, old)


def _without_checks(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with unchecked():
            step()

    return run


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per variant (max)")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timing per case")
    parser.add_argument("--cases", nargs="+", default=None, help="case ids to run (prefixes)")
    parser.add_argument("--out", default=None, help="JSON path (default results/finite_cpu.json)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
    torch.set_num_threads(THREADS)
    device = torch.device("cpu")
    start = time.perf_counter()
    info = run_info(MODULE, argv, device)
    cases = [
        c for c in make_cases(args.quick) if not args.cases or c.id.startswith(tuple(args.cases))
    ]
    rows: list[dict[str, Any]] = []
    for case in cases:
        steps = case.build(device)
        for name, step in steps.items():
            if name == PEER or name in case.info_only:
                continue
            timing = time_alternating(
                {"checked": step, "unchecked": _without_checks(step)},
                repeats=args.repeats,
                budget_s=args.budget,
            )
            on, off = timing.median_ms["checked"], timing.median_ms["unchecked"]
            rows.append(
                {"case": case.id, "variant": name, "checked_ms": on, "unchecked_ms": off,
                 "ratio": on / off, "rounds": timing.repeats}
            )  # fmt: skip
            print(
                f"{case.id:14s} {name:10s} {on:9.2f} ms {off:9.2f} ms  {on / off:.3f}", flush=True
            )
        del steps
    table = format_table(
        ["case", "variant", "checked ms", "unchecked ms", "checked / unchecked"],
        [
            [r["case"], r["variant"], f"{r['checked_ms']:.2f}", f"{r['unchecked_ms']:.2f}",
             f"{r['ratio']:.3f}"]
            for r in rows
        ],
    )  # fmt: skip
    ratios = [r["ratio"] for r in rows]
    print()
    print(table)
    if ratios:
        print(
            f"\nmedian ratio {statistics.median(ratios):.3f}, geometric mean "
            f"{statistics.geometric_mean(ratios):.3f}, largest {max(ratios):.3f} (goal <= {GOAL})"
        )
    wall = time.perf_counter() - start
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "finite_cpu.json"
    )
    write_json_atomic(out, {**info, "quick": args.quick, "wall_s": wall, "rows": rows})
    print(f"total wall time {wall:.1f} s; wrote {out}")


if __name__ == "__main__":
    main()
