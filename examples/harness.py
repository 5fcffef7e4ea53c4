"""What every example shares: its command line, its seeds loop, its table and its JSON.

An example keeps its data, its model and its training step; the rest is here:

- :func:`parse_config`: the command line, generated from the example's config dataclass:
  one flag per field (``out_dir`` -> ``--out-dir``, ``progress`` -> ``--progress`` /
  ``--no-progress``), the field's comment as its help, ``Literal`` types as choices, and
  presets (``--quick``) whose values explicit flags override;
- :class:`Experiment`: sets the threads, makes the output folder and starts the clock; every
  finished run is printed and the JSON rewritten (atomically), so a run cut short keeps the
  seeds it finished; :meth:`Experiment.finish` prints the table and writes the final JSON;
- :func:`stats` and :func:`summarize`: mean ± sample standard deviation over seeds or splits;
- :func:`format_table` and :func:`pm`: the printed table;
- :func:`count_params` and :func:`warmup_cosine`.

The training curves of a run come back in memory (:attr:`examples.training.TrainResult.history`);
timing lives in :mod:`benchmarks.timing`, shared with the benchmarks.

The flags every example spells the same way (where it has the field):

==================  ========================================================================
``--seeds N``       runs with seeds ``0..N-1`` (one seed: ``--seed S``)
``--threads N``     ``torch.set_num_threads(N)`` (default: leave torch's choice)
``--quick``         a preset: a short check, not a result (examples with a flagship add
                    ``--demo``); explicit flags override a preset's values
``--data-dir DIR``  the data folder (else ``$GRAPHATTN_DATA``, ``../shared/data``, the cache)
``--out-dir DIR``   per-run metrics, checkpoints and pictures (``--out``: the old spelling)
``--results PATH``  the results JSON; default ``examples/results/NAME.json``, with a preset
                    ``<out-dir>/NAME.json``, so that a check never overwrites a result
``--no-progress``   no progress bars
==================  ========================================================================
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import re
import statistics
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from examples.training import atomic_write

__all__ = [
    "Preset",
    "config_parser",
    "config_from_args",
    "parse_config",
    "Experiment",
    "config_dict",
    "write_json",
    "stats",
    "summarize",
    "format_table",
    "pm",
    "count_params",
    "warmup_cosine",
]

C = TypeVar("C")
#: a preset: its help line and the field values it sets
Preset = tuple[str, Mapping[str, Any]]
#: older spellings every example still accepts
OLD_SPELLINGS: dict[str, tuple[str, ...]] = {"out_dir": ("--out",)}
_PRESET = "preset_"  # argparse dest prefix of the preset switches


# ----------------------------------------------------------------------------- command line
def _field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of every field line of a dataclass, with the comment-only
    lines that continue it (not section headers such as ``# --- cost``); a subclass's
    comments override those of the dataclasses it extends."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if base is not cls and dataclasses.is_dataclass(base):
            out.update(_field_comments(base))
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # pragma: no cover - defined where no source is kept
        return out
    last = None
    for line in lines:
        field = re.match(r"\s+(\w+)\s*:[^#]*#\s?(.*)$", line)
        more = re.match(r"\s+#\s?(.*)$", line)
        if field and not line.lstrip().startswith("#"):
            last = field[1]
            out[last] = field[2].strip()
        elif more and last and not more[1].startswith(("---", "===")):
            out[last] += " " + more[1].strip()
        else:
            last = None
    return out


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return " ".join(map(str, value)) or "(none)"
    return "none" if value is None else str(value)


def _converter(tp: Any, optional: bool) -> dict[str, Any]:
    """argparse's ``type`` (and ``choices``) for one value of type ``tp``."""
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        return {"type": type(choices[0]), "choices": choices}
    if tp not in (int, float, str):
        raise TypeError(f"no command-line form for a field of type {tp!r}")
    if not optional:
        return {"type": tp}

    def convert(text: str) -> Any:
        return None if text.lower() == "none" else tp(text)

    convert.__name__ = tp.__name__  # argparse names the type in its error messages
    return {"type": convert}


def _argument(tp: Any) -> dict[str, Any]:
    """argparse keywords for a field annotated ``tp``: bool, int, float, str, a ``Literal``,
    ``X | None`` (``none`` on the command line) and ``tuple[X, ...]`` (space-separated)."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"no command-line form for a field of type {tp!r}")
        tp, optional = rest[0], True
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(tp) is tuple:
        item, *more = typing.get_args(tp)
        if more != [Ellipsis]:
            raise TypeError(f"tuples on the command line must be tuple[X, ...], got {tp!r}")
        return {"nargs": "*", **_converter(item, False)}
    return _converter(tp, optional)


def config_parser(
    cls: type,
    doc: str | None,
    presets: Mapping[str, Preset] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> argparse.ArgumentParser:
    """An argument parser with one flag per field of the dataclass ``cls``.

    Args:
        cls: the example's config dataclass; its defaults are the flags' defaults.
        doc: the example's docstring (its first paragraph describes the command).
        presets: ``{name: (help, {field: value})}``: one switch ``--name`` each.
        aliases: ``{field: ["--old-flag", ...]}``: older spellings of a field's flag.

    Example:
        >>> @dataclasses.dataclass
        ... class Config:
        ...     steps: int = 100  # optimizer steps
        ...     out_dir: str = "runs/x"
        >>> parser = config_parser(Config, "Demo.", {"quick": ("short", {"steps": 5})})
        >>> config_from_args(Config, parser.parse_args(["--quick"]), {"quick": ("", {"steps": 5})})
        Config(steps=5, out_dir='runs/x')
        >>> config_from_args(Config, parser.parse_args(["--out", "elsewhere"]))
        Config(steps=100, out_dir='elsewhere')
    """
    description = (doc or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        names = [f"--{field.name.replace('_', '-')}"]
        names += OLD_SPELLINGS.get(field.name, ()) + tuple((aliases or {}).get(field.name, ()))
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        text = comments.get(field.name, "").replace("%", "%%")
        shown = "" if default is dataclasses.MISSING else f"default: {_shown(default)}"
        parser.add_argument(
            *names,
            dest=field.name,
            default=argparse.SUPPRESS,  # absent flags leave the dataclass default
            help=f"{text} ({shown})" if text and shown else text or shown or None,
            **_argument(hints[field.name]),
        )
    for name, (text, values) in (presets or {}).items():
        settings = ", ".join(f"{k}={_shown(v)}" for k, v in values.items())
        parser.add_argument(
            f"--{name}",
            dest=_PRESET + name,
            action="store_true",
            help=f"{text} ({settings})".replace("%", "%%"),
        )
    return parser


def config_from_args(
    cls: type[C],
    args: argparse.Namespace,
    presets: Mapping[str, Preset] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> C:
    """The config of parsed arguments: the dataclass defaults, then the values of the presets
    switched on (in the order of ``presets``), then the flags given explicitly. A preset
    writes its JSON into the output folder unless ``--results`` is given. With ``parser``,
    a value the config refuses (its ``__post_init__``) is reported as a usage error."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    used = [p for p in (presets or {}) if getattr(args, _PRESET + p, False)]
    for name in used:
        values.update(presets[name][1])  # type: ignore[index]
    if used and "results" in names:
        values["results"] = None  # a check, not a result: <out_dir>/<example>.json
    for name, value in vars(args).items():
        if name in names:
            values[name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        if parser is None:
            raise
        parser.error(str(err))  # exits with the usage line and the message
        raise  # pragma: no cover - parser.error does not return


def parse_config(
    cls: type[C],
    argv: Sequence[str] | None,
    doc: str | None,
    presets: Mapping[str, Preset] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> C:
    """:func:`config_parser` and :func:`config_from_args` in one call (``argv=None``: the
    process's arguments)."""
    parser = config_parser(cls, doc, presets, aliases)
    return config_from_args(cls, parser.parse_args(argv), presets, parser)


# ----------------------------------------------------------------------------- results
def config_dict(cfg: Any) -> dict[str, Any]:
    """The config as JSON values, without ``progress`` (how it ran, not what)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "progress"}


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (:func:`examples.training.atomic_write`)."""
    path = Path(path)
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    return path


class Experiment:
    """One invocation of an example: its runs, printed and written as they finish.

    On creation: ``torch.set_num_threads(cfg.threads)`` (when set), ``cfg.out_dir`` is
    created and the clock starts. The JSON goes to ``cfg.results``, or to
    ``<out_dir>/<name>.json`` when that is ``None``.

    Args:
        name: the example's name (``"vision_hybrid"``), the JSON's ``"example"``.
        cfg: the config dataclass (fields ``out_dir``, and optionally ``threads``,
            ``results``); written to the JSON by :func:`config_dict`.
    """

    def __init__(self, name: str, cfg: Any) -> None:
        self.name = name
        self.cfg = cfg
        threads = getattr(cfg, "threads", None)
        if threads is not None:
            torch.set_num_threads(threads)
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        results = getattr(cfg, "results", None)
        self.path = Path(results) if results else self.out_dir / f"{name}.json"
        self.runs: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def add(self, run: dict[str, Any], line: str) -> dict[str, Any]:
        """Print ``line``, keep ``run`` and rewrite the JSON (``"complete": false``)."""
        print(line, flush=True)
        self.runs.append(run)
        self.write(complete=False)
        return run

    def write(self, *, complete: bool = True, **fields: Any) -> dict[str, Any]:
        """Write the JSON: the example's name, ``fields``, threads, total wall time, the
        config and the runs so far (if any were added). Returns what was written."""
        result = {
            "example": self.name,
            "complete": complete,
            **fields,
            "threads": torch.get_num_threads(),
            "total_wall_s": time.perf_counter() - self.started,
            "config": config_dict(self.cfg),
            **({"runs": self.runs} if self.runs else {}),
        }
        write_json(self.path, result)
        return result

    def finish(self, table: str, **fields: Any) -> dict[str, Any]:
        """Print ``table`` and write the final JSON with it (and ``fields``)."""
        print(table, flush=True)
        result = self.write(complete=True, **fields, table=table)
        print(f"wrote {self.path}", flush=True)
        return result


# ----------------------------------------------------------------------------- statistics
def stats(values: Iterable[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min and max of ``values``.

    Example:
        >>> s = stats([0.5, 1.0, 1.5])
        >>> s["mean"], s["std"], s["min"], s["values"]
        (1.0, 0.5, 0.5, [0.5, 1.0, 1.5])
    """
    vals = list(values)
    if not vals:
        raise ValueError("stats needs at least one value")
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "values": vals,
    }


def summarize(
    runs: Sequence[Mapping[str, Any]],
    by: str,
    metric: str = "test_acc",
    groups: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per group of runs (``run[by]``): the :func:`stats` of ``metric`` over its
    runs, their number (``"seeds"``) and total ``wall_s``.

    Args:
        runs: run records, each with ``by``, ``metric`` and ``wall_s``.
        by: the key that names a run's group (``"model"``, ``"variant"``).
        metric: the key averaged.
        groups: the groups, in this order (default: as they first appear); groups without
            runs are left out.

    Example:
        >>> runs = [{"model": "a", "acc": 0.5, "wall_s": 1.0},
        ...         {"model": "a", "acc": 0.7, "wall_s": 1.0}]
        >>> row, = summarize(runs, "model", "acc")
        >>> row["model"], row["seeds"], round(row["mean"], 3), row["wall_s"]
        ('a', 2, 0.6, 2.0)
    """
    names = dict.fromkeys(r[by] for r in runs) if groups is None else groups
    rows = []
    for name in names:
        mine = [r for r in runs if r[by] == name]
        if mine:
            rows.append(
                {
                    by: name,
                    "seeds": len(mine),
                    "metric": metric,
                    **stats(r[metric] for r in mine),
                    "wall_s": sum(r["wall_s"] for r in mine),
                }
            )
    return rows


def pm(mean: float, std: float, scale: float = 100.0, digits: int = 2, unit: str = " %") -> str:
    """``mean ± std`` as text.

    Example:
        >>> pm(0.99111, 0.0046)
        '99.11 ± 0.46 %'
    """
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}{unit}"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    """A plain-text table, columns as wide as their widest cell; the first ``left`` columns
    left-aligned, the others right-aligned.

    Example:
        >>> print(format_table(["model", "acc"], [["cnn", "99.9 %"], ["vit", "93.3 %"]]))
        model     acc
        cnn    99.9 %
        vit    93.3 %
    """
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)])


# ----------------------------------------------------------------------------- models
def count_params(model: nn.Module, trainable: bool = False) -> int:
    """Number of parameters (``trainable``: only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def warmup_cosine(warmup: int, total: int, final: float = 0.0) -> Callable[[int], float]:
    """The learning-rate multiplier of step ``s`` (``LambdaLR``): ``(s + 1) / warmup`` for
    the first ``warmup`` steps, then a half cosine from 1 down to ``final`` at ``total``.

    Example:
        >>> f = warmup_cosine(2, 6)
        >>> [round(f(s), 3) for s in range(7)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if warmup < 1 or total < 1:
        raise ValueError(f"warmup and total must be >= 1, got {warmup} and {total}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        cosine = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        return final + (1.0 - final) * cosine

    return factor
