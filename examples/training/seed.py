"""Seeding and capturing every random stream: Python's ``random``, NumPy's global
generator, torch's CPU generator and (when present) every CUDA device's generator.

:func:`rng_state` returns only tensors, ints, floats, strings, ``None`` and plain
containers, so it can be stored in a checkpoint and read back with
``torch.load(..., weights_only=True)``.

Example:
    >>> import random
    >>> g = seed_everything(0)
    >>> state = rng_state()
    >>> a = (random.random(), torch.rand(1).item())
    >>> set_rng_state(state)
    >>> a == (random.random(), torch.rand(1).item())
    True
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "rng_state", "set_rng_state"]

_MAX_SEED = 2**32 - 1  # NumPy's legacy seeding accepts [0, 2**32)


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Args:
        seed: an int in ``[0, 2**32 - 1]``.
        deterministic: also ask torch for deterministic kernels
            (``torch.use_deterministic_algorithms(True)``); slower on some ops, an error on
            ops that have no deterministic version.

    Returns:
        A new ``torch.Generator`` seeded with ``seed``, for draws that must not disturb the
        global streams (a data split, a fixed validation subset). Its state is *not* part of
        :func:`rng_state`: anything that must resume exactly should use the global streams
        or derive its own generator from a seed and a checkpointed counter.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**32 - 1], got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device as well
    if deterministic:
        torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of every global random stream, as checkpoint-safe values.

    Returns:
        ``{"python": {...}, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor, ...]}``
        (``"cuda"`` is an empty list when CUDA is not available).
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),  # (625,)
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),  # (624,)
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the streams captured by :func:`rng_state`.

    Args:
        state: a dict from :func:`rng_state` (possibly after a save/load round trip).
            CUDA states are restored when CUDA is available with the same number of
            devices; otherwise they are skipped with a warning.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from rng_state(), got {type(state).__name__}")
    missing = {"python", "numpy", "torch"} - state.keys()
    if missing:
        raise KeyError(f"state is missing {sorted(missing)}; it must come from rng_state()")
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"].numpy(), dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda", [])
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(
                f"state holds {len(cuda)} CUDA generator states but "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA devices "
                "are visible; CUDA streams not restored",
                stacklevel=2,
            )
