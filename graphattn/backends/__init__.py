"""Backends: the ways to run an attention call, each declaring what it serves.

==========  ==========================================================================
name        what it runs
==========  ==========================================================================
``dense``   ``F.scaled_dot_product_attention`` (or explicit dense math) over a mask
``blocks``  a disjoint union of complete graphs packed into one fused call
``edges``   message passing over the edge list in pure torch (serves every call)
``fused``   the same in one C++ pass per target (CPU; dot product, GAT, GATv2)
``linear``  kernel scores (:mod:`graphattn.kernels`) on complete graphs, linear in ``N``
==========  ==========================================================================

Every backend answers :meth:`Backend.reasons` (why it cannot serve a call) and
:meth:`Backend.run`. ``backend="auto"`` asks them in the order of
:class:`~graphattn.AutoPolicy`; a forced backend that refuses raises
:class:`BackendNotSupportedError` with every backend's reasons.
"""

from __future__ import annotations

from ._base import AttentionCall, Backend, BackendNotSupportedError, BackendResult
from .blocks import BlocksBackend
from .dense import DenseBackend
from .edges import EdgesBackend
from .fused import FusedEdgesBackend
from .linear import LinearBackend

__all__ = [
    "AttentionCall",
    "Backend",
    "BackendResult",
    "BackendNotSupportedError",
    "DenseBackend",
    "BlocksBackend",
    "EdgesBackend",
    "FusedEdgesBackend",
    "register_backend",
    "get_backend",
    "backend_names",
]

_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend under ``backend.name``; returns it."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a graphattn.backends.Backend, got {backend!r}")
    _REGISTRY[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The registered backend called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"backend must be 'auto' or one of {backend_names()}, got {name!r}")
    return _REGISTRY[name]


def backend_names() -> tuple[str, ...]:
    """Names of the registered backends, in registration order."""
    return tuple(_REGISTRY)


for _backend in (
    DenseBackend(),
    BlocksBackend(),
    EdgesBackend(),
    FusedEdgesBackend(),
    LinearBackend(),
):
    register_backend(_backend)
