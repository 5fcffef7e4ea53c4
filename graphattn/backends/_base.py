"""What every backend shares: the validated call, the result, the backend interface.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``D`` query/key head
dim, ``Dv`` value head dim, ``De`` edge feature dim, ``E`` edges.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor

from ..graph import Graph
from ..scores import Score

if TYPE_CHECKING:
    from ..dispatch import AutoPolicy

__all__ = [
    "AttentionCall",
    "Backend",
    "BackendResult",
    "BackendNotSupportedError",
    "device_memory_bytes",
    "memory_reasons",
]


class BackendNotSupportedError(ValueError):
    """No backend (or not the requested one) can serve a call; the message lists every
    backend's reasons and the call's shapes, dtypes, device and graph."""


@dataclass(frozen=True)
class AttentionCall:
    """One validated call of :func:`~graphattn.graph_attention`, always batched.

    Attributes:
        q: target features ``(B, H, Nd, D)``.
        k: source features ``(B, H, Ns, D)``.
        v: values ``(B, H, Ns, Dv)``.
        graph: the graph; its key padding mask, if any, has ``B`` rows.
        score: the score function.
        scale: multiplies the score (1.0 for scores that take no scale).
        bias: additive score bias, per edge ``(B or 1, E, H)`` or dense
            ``(B or 1, H or 1, Nd, Ns)``; see ``bias_layout``.
        bias_layout: ``"edges"``, ``"dense"`` or ``None`` (no bias).
        edge_features: per-edge input of the score ``(B or 1, E, H, De)``, aligned with
            ``graph.edge_index()``.
        edge_values: added to the value of each edge ``(B or 1, E, H, Dv)``.
        dropout_p: dropout on the attention weights.
        need_weights: return the attention weights too.
        batched: whether the caller's tensors had a batch dimension.
        policy: the auto policy in force (limits such as ``max_mask_elements``).
    """

    q: Tensor
    k: Tensor
    v: Tensor
    graph: Graph
    score: Score
    scale: float
    bias: Tensor | None
    bias_layout: Literal["edges", "dense"] | None
    edge_features: Tensor | None
    edge_values: Tensor | None
    dropout_p: float
    need_weights: bool
    batched: bool
    policy: AutoPolicy

    @property
    def batch(self) -> int:
        return self.q.shape[0]

    @property
    def heads(self) -> int:
        return self.q.shape[1]

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]

    @property
    def padded(self) -> bool:
        return self.graph.key_padding_mask is not None

    def describe(self) -> str:
        """The call's shapes, dtypes, device, graph and options, for error messages."""

        def shape(t: Tensor | None) -> str:
            return "None" if t is None else str(tuple(t.shape))

        q = self.q
        g = self.graph
        parts = [
            f"q {shape(q)}, k {shape(self.k)}, v {shape(self.v)} ({q.dtype}, {q.device})",
            f"graph {g.kind}: {type(g).__name__}(num_dst={g.num_dst}, num_src={g.num_src}, "
            f"num_edges={g.num_edges}, padded={self.padded})",
            f"score {self.score!r}",
            f"bias {self.bias_layout} {shape(self.bias)}" if self.bias is not None else "no bias",
            f"edge_features {shape(self.edge_features)}, edge_values {shape(self.edge_values)}",
            f"dropout_p {self.dropout_p}, need_weights {self.need_weights}",
        ]
        return "; ".join(parts)


@dataclass
class BackendResult:
    """What a backend returns.

    Attributes:
        out: ``(B, H, Nd, Dv)``.
        weights: ``None`` unless the call needs weights; then in the graph's
            ``weights_layout``: ``(B, H, Nd, Ns)`` (dense) or ``(B, E, H)`` (edges, aligned
            with ``graph.edge_index()``). The output is computed from them, so they lie on its
            autograd path.
    """

    out: Tensor
    weights: Tensor | None = None


class Backend:
    """A way to run attention calls. Subclasses set :attr:`name` and implement
    :meth:`reasons` (why it cannot serve a call; empty when it can) and :meth:`run`.

    Register a new backend with :func:`graphattn.backends.register_backend`; ``auto`` asks
    backends in the order of :class:`~graphattn.AutoPolicy` and takes the first that can serve.
    """

    name: ClassVar[str] = "backend"

    def reasons(self, call: AttentionCall) -> list[str]:
        """Why this backend cannot serve ``call`` (an empty list: it can)."""
        raise NotImplementedError

    def run(self, call: AttentionCall) -> BackendResult:
        """Run ``call`` (only called when :meth:`reasons` is empty)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


_RAM = _physical_memory()  # read once: torch.compile cannot trace os.sysconf


def device_memory_bytes(device: torch.device) -> int | None:
    """The device's total memory: physical RAM on CPU, the GPU's memory on CUDA, ``None``
    (no limit) elsewhere (``meta`` tensors, unknown devices)."""
    if device.type == "cpu":
        return _RAM
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def memory_reasons(call: AttentionCall, needed: int, what: str) -> list[str]:
    """``[reason]`` when ``needed`` bytes (what a backend would allocate beyond its inputs,
    ``what`` says for which tensors) exceed the policy's ``max_memory_bytes`` (default: the
    device's total memory); else ``[]``."""
    limit = call.policy.max_memory_bytes
    if limit is None:
        limit = device_memory_bytes(call.q.device)
    if limit is None or needed <= limit:
        return []
    return [
        f"would allocate about {needed / 2**30:.3g} GiB ({what}), over max_memory_bytes="
        f"{limit} ({limit / 2**30:.3g} GiB)"
    ]
