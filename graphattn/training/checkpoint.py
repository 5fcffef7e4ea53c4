"""Checkpoints written atomically and read back safely.

- :func:`save_checkpoint` writes with ``torch.save`` to a temporary file in the same folder,
  flushes and fsyncs it, then ``os.replace``-s it onto the final name: a crash leaves the old
  file or the new one, never half of one.
- :func:`load_checkpoint` reads with ``torch.load(..., weights_only=True)``: only tensors and
  plain containers are unpickled, so a checkpoint cannot run code when it is loaded.
- :class:`CheckpointManager` keeps ``step_XXXXXX.pt`` files in one folder, prunes old ones,
  and finds the newest one that loads (a damaged file is skipped with a warning).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ._atomic import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointManager"]

PathLike = str | os.PathLike


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically.

    Args:
        path: the checkpoint file; missing parent folders are created.
        state: tensors, numbers, strings, ``None`` and lists/tuples/dicts of them (what
            ``weights_only=True`` can read back): model/optimizer/scheduler ``state_dict()``s,
            :func:`~graphattn.training.rng_state`, counters.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Args:
        path: the checkpoint file.
        map_location: where tensors go, as for ``torch.load`` (default ``"cpu"``).

    Returns:
        The saved dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


class CheckpointManager:
    """Numbered checkpoints ``step_000100.pt`` in one folder, newest ``keep`` kept.

    Args:
        directory: the folder (created on the first save).
        keep: how many of the newest checkpoints to keep (>= 1).
        prefix: file name prefix; files are ``{prefix}{step:06d}.pt``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     manager = CheckpointManager(d, keep=2)
        ...     for step in (10, 20, 30):
        ...         _ = manager.save(step, {"step": step})
        ...     [p.name for _, p in manager.checkpoints()], manager.load_latest()["step"]
        (['step_000020.pt', 'step_000030.pt'], 30)
    """

    def __init__(self, directory: PathLike, keep: int = 2, prefix: str = "step_") -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        if not prefix or "/" in prefix or os.sep in prefix:
            raise ValueError(f"prefix must be a non-empty file name prefix, got {prefix!r}")
        self.directory = Path(directory)
        self.keep = keep
        self.prefix = prefix
        self._pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.pt$")

    def path_for(self, step: int) -> Path:
        """The file name used for ``step``."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        return self.directory / f"{self.prefix}{step:06d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every checkpoint file present, oldest first (not validated)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = self._pattern.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write checkpoint ``step`` atomically, then delete all but the newest ``keep``."""
        path = save_checkpoint(self.path_for(step), state)
        self._prune()
        return path

    def _prune(self) -> None:
        for _, path in self.checkpoints()[: -self.keep]:
            path.unlink(missing_ok=True)
        # temporary files of writes that were killed before their os.replace
        for tmp in self.directory.glob(f".{self.prefix}*.pt.*.tmp"):
            tmp.unlink(missing_ok=True)

    def latest(self, map_location: Any = "cpu") -> tuple[int, Path, dict[str, Any]] | None:
        """The newest checkpoint that loads, as ``(step, path, state)``; ``None`` if none.

        A file that fails to load (truncated, corrupt, not a dict) is skipped with a warning
        and the next older one is tried.
        """
        for step, path in reversed(self.checkpoints()):
            try:
                state = load_checkpoint(path, map_location=map_location)
            except Exception as err:  # noqa: BLE001 - any failure means "not usable"
                warnings.warn(
                    f"skipping unreadable checkpoint {path}: {type(err).__name__}: {err}",
                    stacklevel=2,
                )
                continue
            return step, path, state
        return None

    def load_latest(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The state of the newest checkpoint that loads, or ``None``."""
        found = self.latest(map_location=map_location)
        return None if found is None else found[2]

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self.directory)!r}, keep={self.keep})"
