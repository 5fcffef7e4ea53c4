"""Checkpoints written atomically and read back safely.

- :func:`save_checkpoint` first proves that ``torch.load(..., weights_only=True)`` will read
  the state back (see :func:`_dry_run`), refusing with a ``TypeError`` that names the offending
  key otherwise; then it writes with ``torch.save`` to a temporary file in the same folder,
  flushes and fsyncs it, and ``os.replace``-s it onto the final name: a crash leaves the old
  file or the new one, never half of one. The file is not read back after writing: the dry
  run already ran torch's own unpickler on the same objects, a read-back after ``fsync``
  reads the page cache rather than the disk, and a full one costs 30-50% of the save (more
  for many small tensors) and a second copy of the state in memory.
- :func:`load_checkpoint` reads with ``torch.load(..., weights_only=True)``: only tensors and
  plain containers are unpickled, so a checkpoint cannot run code when it is loaded.
- :class:`CheckpointManager` keeps ``step_XXXXXX.pt`` files in one folder, prunes old ones,
  and finds the newest one that loads (a damaged file is skipped with a warning).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import reprlib
import warnings
from pathlib import Path
from typing import Any

import torch

try:  # torch's own weights_only unpickler (private, stable since torch 2.0)
    from torch import _weights_only_unpickler
except ImportError:  # pragma: no cover - a torch without it: a full round trip instead
    _weights_only_unpickler = None

from ._atomic import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointManager"]

PathLike = str | os.PathLike


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically.

    Before anything is written, the state is pickled as ``torch.save`` pickles it and read back
    by torch's own ``weights_only`` unpickler, with tensor storages passed by reference (no data
    is copied): a state that :func:`load_checkpoint` would refuse is refused here instead.

    Args:
        path: the checkpoint file; missing parent folders are created.
        state: what ``torch.load(..., weights_only=True)`` can read back: tensors (dense,
            sparse, quantized, nested), ``torch.dtype``/``device``/``Size``, ``int``,
            ``float``, ``complex``, ``bool``, ``str``, non-empty ``bytes``, ``bytearray``,
            ``None``, ``dict``/``OrderedDict``/``Counter``/``list``/``tuple``/``set`` of them,
            and types registered with ``torch.serialization.add_safe_globals``. That covers
            model/optimizer/scheduler ``state_dict()``s, :func:`~examples.training.rng_state`
            and counters; NumPy values, ``datetime`` objects and other classes are refused.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``state`` holds a value that would not load back, named by its key path,
            e.g. ``state['optimizer']['param_groups'][0]['lr']``; nothing is written.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    _check_loadable(state)
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


# ----------------------------------------------------------------- the dry run before a save
# dtypes whose plain tensors take the fast path of _DryRunPickler; the test proves that each
# survives torch.save + torch.load(weights_only=True). Any other tensor takes torch's own path.
_PLAIN_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    }
)


def _is_plain_tensor(obj: Any) -> bool:
    """A dense CPU tensor or parameter of a common dtype, without Python attributes.

    (CUDA tensors take torch's own path, a few tens of microseconds more each: this fast
    path is only claimed where the test proves it.)
    """
    return (
        type(obj) in (torch.Tensor, torch.nn.Parameter)
        and obj.layout is torch.strided
        and not obj.is_nested
        and obj.dtype in _PLAIN_DTYPES
        and obj.device.type == "cpu"
        and not obj.__dict__
    )


class _DryRunPickler(pickle.Pickler):
    """``torch.save``'s pickler (protocol 2, storages as persistent ids), keeping references.

    Storages get the persistent id ``torch.save`` gives them. Plain tensors, the bulk of any
    state, get an int id: about 5 us each instead of about 60 us through torch's reduce and
    unpickler. Both ids refer back to the original object, so nothing is copied.
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=torch.serialization.DEFAULT_PROTOCOL)
        self.tensors: list[torch.Tensor] = []
        self.storages: dict[str, torch.UntypedStorage] = {}
        self._storage_dtypes: dict[int, torch.dtype] = {}

    def _check_dtype(self, storage: torch.UntypedStorage, dtype: torch.dtype) -> None:
        # torch.save refuses one memory seen as two dtypes; so does the dry run
        if storage.device.type != "meta" and storage.data_ptr() != 0:
            if self._storage_dtypes.setdefault(storage.data_ptr(), dtype) != dtype:
                raise RuntimeError(
                    "Cannot save multiple tensors or storages that view the same data as "
                    "different types"
                )

    def persistent_id(self, obj: Any) -> int | tuple | None:
        if _is_plain_tensor(obj):
            self._check_dtype(obj.untyped_storage(), obj.dtype)
            self.tensors.append(obj)
            return len(self.tensors) - 1  # an int: the shortest id the unpickler takes
        # as in torch.serialization._save
        if isinstance(obj, torch.storage.TypedStorage):
            storage, dtype = obj._untyped_storage, obj.dtype
            storage_type = getattr(torch, obj._pickle_storage_type())
            numel = obj._size()
        elif torch.is_storage(obj):
            storage, dtype = obj, torch.uint8
            storage_type = torch.serialization.normalize_storage_type(type(obj))
            numel = storage.nbytes()
        else:
            return None
        self._check_dtype(storage, dtype)
        key = str(storage._cdata)
        self.storages[key] = storage
        location = torch.serialization.location_tag(storage)
        return ("storage", storage_type, key, location, numel)


def _dry_run(obj: Any) -> None:
    """Raise what ``torch.save`` + ``torch.load(weights_only=True)`` of ``obj`` would raise.

    Pickles as ``torch.save`` does, then unpickles with torch's ``weights_only`` unpickler
    (the one ``torch.load`` uses) and validates sparse tensors as ``torch.load`` does. Tensors
    come back as views of the originals: no data is copied, nothing is written.
    """
    if _weights_only_unpickler is None or not hasattr(torch._utils, "_sparse_tensors_to_validate"):
        buf = io.BytesIO()  # what the dry run proves, by a real round trip (copies the data)
        torch.save(obj, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
        return
    buf = io.BytesIO()
    pickler = _DryRunPickler(buf)
    pickler.dump(obj)
    buf.seek(0)

    def persistent_load(pid: int | tuple) -> Any:
        if type(pid) is int:  # a plain tensor
            return pickler.tensors[pid]
        _, storage_type, key, _, _ = pid  # as in torch.serialization._load
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
        return torch.storage.TypedStorage(
            wrap_storage=pickler.storages[key], dtype=dtype, _internal=True
        )

    # the unpickler torch.load(weights_only=True) runs (a private module: the equivalence
    # test in tests/examples/training/test_checkpoint.py notices if torch changes it)
    unpickler = _weights_only_unpickler.Unpickler(buf, encoding="utf-8")
    unpickler.persistent_load = persistent_load
    # sparse tensors met by the unpickler wait here to be validated; clear what a failed
    # torch.load may have left, so that only this object's tensors are judged
    pending = torch._utils._sparse_tensors_to_validate
    pending.clear()
    try:
        unpickler.load()
    except BaseException:
        pending.clear()
        raise
    if pending:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            torch._utils._validate_loaded_sparse_tensors(weights_only=True)  # and clears


def _dry_run_error(obj: Any) -> Exception | None:
    try:
        _dry_run(obj)
    except Exception as err:  # noqa: BLE001 - any failure means "would not load"
        return err
    return None


def _children(where: str, obj: Any) -> list[tuple[str, Any]]:
    """The parts of a builtin container, each with a description of where it sits."""
    if isinstance(obj, dict):
        parts = []
        for key, value in obj.items():
            parts.append((f"the key {_repr.repr(key)} of {where}", key))
            parts.append((f"{where}[{key!r}]", value))
        return parts
    if isinstance(obj, list | tuple):
        return [(f"{where}[{i}]", value) for i, value in enumerate(obj)]
    if isinstance(obj, set | frozenset):
        return [(f"an element of {where}", value) for value in obj]
    return []


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60


def _type_name(obj: Any) -> str:
    cls = type(obj)
    name = cls.__qualname__
    return name if cls.__module__ == "builtins" else f"{cls.__module__}.{name}"


def _check_loadable(state: dict[str, Any]) -> None:
    """Raise a ``TypeError`` naming the part of ``state`` that would not load back.

    The dry run of the whole state is the only cost of a good state. On a failure, the search
    goes down through containers to the smallest part that fails on its own, halving the
    parts of each container (about one more dry run of that container per level). A
    container is blamed itself when no single part of it fails: its type is refused, or two
    of its parts conflict.
    """
    err = _dry_run_error(state)
    if err is None:
        return
    where, culprit = "state", state
    ancestors = {id(state)}  # a reference cycle must not send the search round in circles
    while True:
        parts = [p for p in _children(where, culprit) if id(p[1]) not in ancestors]
        while len(parts) > 1:  # keep the half that fails, down to one part
            half = len(parts) // 2
            left_err = _dry_run_error([value for _, value in parts[:half]])
            parts = parts[:half] if left_err is not None else parts[half:]
        # None also when only the parts together fail (two views of one memory as two
        # dtypes): then the container is blamed
        part_err = _dry_run_error(parts[0][1]) if parts else None
        if part_err is None:
            break
        (where, culprit), err = parts[0], part_err
        ancestors.add(id(culprit))
    reason = str(err).split("\n")[0].split(". Please use")[0]
    hint = (
        ""
        if _children(where, culprit)
        else " Store a tensor or a plain Python value instead (e.g. x.item(), "
        "torch.from_numpy(a), td.total_seconds()), or register the type with "
        "torch.serialization.add_safe_globals."
    )
    raise TypeError(
        f"cannot save {where}: a {_type_name(culprit)} ({_repr.repr(culprit)}) would not "
        f"load back with torch.load(weights_only=True) ({type(err).__name__}: {reason})."
        f"{hint} Nothing was written."
    )


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
