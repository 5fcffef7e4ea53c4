"""Measuring tools shared by the benchmarks and the examples: alternating timing, peak memory.

Timing (:func:`time_alternating`): every implementation of a comparison runs on the same
inputs and weights; all are warmed up, then called in turn (A, B, A, B, ...) so that a
slow drift of the machine (another process, thermal state) hits them alike. Each call is
timed with ``time.perf_counter`` (after ``torch.cuda.synchronize`` on CUDA) and the median
is reported. ``torch.utils.benchmark.Timer`` times one statement at a time (no alternation)
and sets its own thread count (one by default), so it would measure something else here.

Peak memory: on CPU, :func:`measure_peak_rss` runs inside a fresh process (the caller
spawns it, see :func:`run_measure_subprocess`): one warm-up step, then gradients are
dropped, freed heap pages are returned to the OS (``malloc_trim``), the kernel's RSS
high-water mark is reset (``/proc/self/clear_refs``) and the peak RSS growth of one more
step is read from ``VmHWM`` in ``/proc/self/status`` (``resource.getrusage`` ``ru_maxrss``
before and after is recorded too, and used where the mark cannot be reset). On CUDA,
:func:`measure_peak_cuda` uses ``torch.cuda.max_memory_allocated`` above the baseline.

Used by ``benchmarks/bench_*.py`` and by the examples that time something
(``examples.core_demo``, ``examples.char_lm --compare-speed``, ``examples.why_attention``).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Step",
    "Timing",
    "time_alternating",
    "sync_fn",
    "measure_peak_rss",
    "measure_peak_cuda",
    "run_measure_subprocess",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


@dataclass
class Step:
    """One training step (forward + backward) of one implementation on fixed inputs.

    Attributes:
        forward: computes the output from the (captured) inputs.
        grads: tensors whose ``.grad`` is dropped before each step (parameters, inputs).
        proj: fixed random tensor of the output's shape; the loss is ``<out, proj>``.
    """

    forward: Callable[[], Tensor]
    grads: Sequence[Tensor]
    proj: Tensor

    def zero(self) -> None:
        for t in self.grads:
            t.grad = None

    def run(self) -> None:
        out = self.forward()
        loss = torch.dot(out.reshape(-1), self.proj.reshape(-1))
        loss.backward()

    def __call__(self) -> None:
        self.zero()
        self.run()


def sync_fn(device: torch.device) -> Callable[[], None]:
    """A no-op on CPU, ``torch.cuda.synchronize`` on CUDA."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


@dataclass
class Timing:
    """Result of :func:`time_alternating`: per-call milliseconds of every implementation."""

    times_ms: dict[str, list[float]]
    warmup_ms: dict[str, list[float]]
    repeats: int
    wall_s: float
    median_ms: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.median_ms = {k: statistics.median(v) for k, v in self.times_ms.items()}


def time_alternating(
    fns: dict[str, Callable[[], Any]],
    *,
    repeats: int = 7,
    min_repeats: int = 3,
    budget_s: float = 40.0,
    warmup: int | None = None,
    sync: Callable[[], None] = lambda: None,
) -> Timing:
    """Median time of each function, calls alternated.

    Every function is warmed up (``warmup=None``: once, twice when a call takes under a
    second; else ``warmup`` times), then the functions are called in turn for ``R`` rounds:
    ``R = repeats``, reduced (down to ``min_repeats``) so that the rounds fit in what is left
    of ``budget_s`` seconds (``warmup=0``: no estimate, ``R = repeats``).

    Example:
        >>> t = time_alternating({"a": lambda: sum(range(100)), "b": lambda: None},
        ...                      repeats=3, warmup=1)
        >>> t.repeats, sorted(t.median_ms), len(t.times_ms["a"])
        (3, ['a', 'b'], 3)
    """
    if warmup is not None and warmup < 0:
        raise ValueError(f"warmup must be None or an int >= 0, got {warmup}")
    start = time.perf_counter()
    warm: dict[str, list[float]] = {}
    for name, fn in fns.items():
        warm[name] = []
        for _ in range(1 if warmup is None else warmup):
            warm[name].append(_timed(fn, sync))
        if warmup is None and warm[name][0] < 1.0:
            warm[name].append(_timed(fn, sync))
    per_round = sum(ts[-1] for ts in warm.values() if ts)
    left = budget_s - (time.perf_counter() - start)
    rounds = max(min_repeats, min(repeats, int(left / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_timed(fn, sync) * 1e3)
    return Timing(
        times,
        {k: [t * 1e3 for t in v] for k, v in warm.items()},
        rounds,
        time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------- memory
def _current_rss_kib() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _reset_rss_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _vm_hwm_kib() -> int | None:
    """The kernel's RSS high-water mark of this process (``VmHWM``), KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def measure_peak_rss(step: Step) -> dict[str, Any]:
    """Peak RSS growth (MiB) of one step, measured in this process (call it in a fresh one).

    One warm-up step; then gradients are dropped, freed memory is given back to the OS
    (``malloc_trim``) and the RSS high-water mark is reset (``/proc/self/clear_refs``), so
    that the growth counts every byte the step touches (gradients included), not memory a
    previous step left resident. The peak is the process's ``VmHWM`` after the step; the
    fallback, where the mark cannot be reset, is the growth of ``ru_maxrss`` over the step
    (a lower bound: the warm-up step, or the imports, may have set a higher mark).
    ``ru_maxrss`` itself is not reset by ``clear_refs``: the kernel also keeps the mark of
    exited threads in it.
    """
    step()  # warm-up
    step.zero()
    gc.collect()
    _malloc_trim()
    rss0 = _current_rss_kib()
    reset = _reset_rss_high_water_mark()
    max0, hwm0 = _maxrss_kib(), _vm_hwm_kib()
    step.run()
    max1, hwm1 = _maxrss_kib(), _vm_hwm_kib()
    if reset and rss0 is not None and hwm1 is not None:
        peak, method = hwm1 - rss0, "VmHWM after resetting it, minus RSS before the step"
    else:
        peak, method = max1 - max0, "ru_maxrss growth over the step (lower bound)"
    return {
        "peak_mib": peak / 1024,
        "baseline_rss_mib": (rss0 or 0) / 1024,
        "hwm_before_mib": (hwm0 or 0) / 1024,
        "hwm_after_mib": (hwm1 or 0) / 1024,
        "maxrss_before_mib": max0 / 1024,
        "maxrss_after_mib": max1 / 1024,
        "method": method,
    }


def measure_peak_cuda(step: Step, device: torch.device) -> dict[str, Any]:
    """Peak allocated CUDA memory (MiB) of one step above what was allocated before it."""
    step()  # warm-up
    step.zero()
    gc.collect()
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step.run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    step.zero()
    return {
        "peak_mib": (peak - base) / MIB,
        "baseline_mib": base / MIB,
        "method": "torch.cuda.max_memory_allocated minus memory_allocated before the step",
    }


def run_measure_subprocess(
    module: str, args: Sequence[str], timeout_s: float = 900.0
) -> dict[str, Any]:
    """Run ``python -m module *args`` in a fresh process and parse the JSON object it prints
    on its last stdout line; ``{"error": ...}`` when it fails."""
    cmd = [sys.executable, "-m", module, *args]
    try:
        res = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s: {shlex.join(cmd)}"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        return {"error": f"rc={res.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])
