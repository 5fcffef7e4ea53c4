"""Training curves from the metrics a :class:`~examples.training.Trainer` writes.

Built with ``matplotlib.figure.Figure`` and the Agg canvas, never ``pyplot``: nothing opens
a window and matplotlib's global state is left alone. matplotlib is optional
(``pip install -e ".[examples]"``); attention pictures live in :mod:`graphattn.plot`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_curves", "load_metrics"]

PathLike = str | os.PathLike
Series = dict[str, dict[str, tuple[list[float], list[float]]]]  # metric -> kind -> (x, y)

# bookkeeping fields of a record, not curves
_NOT_CURVES = frozenset({"kind", "step", "epoch", "elapsed_s"})


def load_metrics(path: PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a line cut short by a crash is skipped).

    Args:
        path: a JSON-lines file, one object with a ``"step"`` per line.
    """
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _series(metrics: PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Series:
    if isinstance(metrics, str | os.PathLike):
        path = Path(metrics)
        if not path.is_file():
            raise FileNotFoundError(f"metrics must name an existing file, got {str(path)!r}")
        if path.suffix == ".json":
            metrics = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(metrics, Mapping):
                raise ValueError(f"{path} must hold a JSON object of curves")
        else:
            metrics = load_metrics(path)
    out: Series = {}
    if isinstance(metrics, Mapping):  # {"name": [y, ...] or [[x, y], ...]}
        for name, values in metrics.items():
            if not isinstance(values, Sequence) or isinstance(values, str):
                continue
            xs, ys = [], []
            for i, v in enumerate(values):
                x, y = (v[0], v[1]) if isinstance(v, Sequence) and len(v) == 2 else (i, v)
                if isinstance(y, int | float) and not isinstance(y, bool):
                    xs.append(float(x))
                    ys.append(float(y))
            if ys:
                out.setdefault(str(name), {})[""] = (xs, ys)
        return out
    for i, record in enumerate(metrics):  # records {"step": s, "kind": k, "loss": ...}
        if not isinstance(record, Mapping):
            raise TypeError(f"metrics record {i} must be a mapping, got {type(record).__name__}")
        x = float(record.get("step", i))
        kind = str(record.get("kind", ""))
        for name, y in record.items():
            if name in _NOT_CURVES or isinstance(y, bool) or not isinstance(y, int | float):
                continue
            xs, ys = out.setdefault(name, {}).setdefault(kind, ([], []))
            xs.append(x)
            ys.append(float(y))
    return out


def plot_curves(
    metrics: PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    path: PathLike,
    *,
    names: Sequence[str] | None = None,
    title: str | None = None,
    log_y: Sequence[str] = ("loss",),
) -> Path:
    """One panel per metric against the step; train and eval values of the same name share
    a panel (e.g. training loss and validation loss).

    Args:
        metrics: a ``metrics.jsonl`` path, a list of records (``{"step", "kind", name:
            value}``), or a mapping ``{name: [y, ...]}`` / ``{name: [[step, y], ...]}``.
        path: output file; the format follows the suffix (``.png``, ``.svg``, ``.pdf``).
        names: the metrics to draw, in order (default: all numeric fields).
        title: a title over the figure.
        log_y: metrics drawn on a log scale when all their values are positive.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot_curves needs matplotlib: pip install matplotlib") from err
    series = _series(metrics)
    if names is not None:
        missing = [n for n in names if n not in series]
        if missing:
            raise KeyError(f"names {missing} not in the metrics (found {sorted(series)})")
        series = {n: series[n] for n in names}
    if not series:
        raise ValueError("metrics hold no numeric curves to plot")
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (name, by_kind) in enumerate(series.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for kind, (xs, ys) in by_kind.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, ms=3, label=kind or None)
        values = [y for _, ys in by_kind.values() for y in ys]
        if name in log_y and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if len(by_kind) > 1:
            ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
