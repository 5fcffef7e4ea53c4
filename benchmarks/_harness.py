"""Output helpers of the benchmarks: plain-text tables, atomic JSON, run information.

The measuring tools (alternating timing, peak memory) are public in
:mod:`benchmarks.timing`, which the examples use too.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import torch

__all__ = ["format_table", "write_json_atomic", "run_info", "fmt"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A plain-text table; the first ``left`` columns are left-aligned, the others
    right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON to a temporary file in the target directory, then ``os.replace`` it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_info(module: str, argv: Sequence[str], device: torch.device) -> dict[str, Any]:
    """Torch version, threads, device, date, the exact command line and the load average
    at the start (other busy processes distort CPU timings: with every core taken, a
    2-thread op waits for its preempted partner thread and can run tens of times slower)."""
    load = os.getloadavg()
    if device.type == "cpu" and load[0] > 0.5:
        print(
            f"warning: load average {load[0]:.2f} before the run; other processes may "
            "distort the timings",
            flush=True,
        )
    info: dict[str, Any] = {
        "command": shlex.join([sys.executable, "-m", module, *argv]),
        "cwd": os.getcwd(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": list(load),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    try:
        import torch_geometric

        info["torch_geometric"] = torch_geometric.__version__
    except ImportError:
        pass
    return info


def fmt(x: float | None, digits: int = 1) -> str:
    """A number for a table cell, ``-`` for missing."""
    if x is None:
        return "-"
    return f"{x:.{digits}f}"
