"""Atomic file writes: a temporary file in the same folder, flush + fsync, ``os.replace``.

A reader sees either the old file or the complete new one, never a half-written file, even
when the writer is killed mid-write. The temporary file is hidden (``.NAME.XXXX.tmp``) and is
removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "fsync_dir", "temp_name"]


def temp_name(path: Path) -> Path:
    """A fresh hidden name next to ``path``: ``.NAME.<hex>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table, so that a rename survives a power cut (POSIX only)."""
    if os.name != "posix":  # pragma: no cover - Windows cannot open a folder for fsync
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on a clean exit move it onto ``path``.

    The temporary file is created with the usual permissions (``0o666`` less the umask), so
    the final file looks like one written with ``open``. Raising inside the ``with`` block
    removes the temporary file and leaves ``path`` untouched.

    Args:
        path: the final file; missing parent folders are created.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
