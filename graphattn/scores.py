"""Score functions: how an edge ``j -> i`` is scored before the softmax over ``i``'s in-edges.

The attention operator is ``softmax over the in-edges of i of score(i, j)`` followed by a
weighted sum of values. The score is the part that varies between attention kinds:

==================  ======================================================  ==============
score               ``score(i, j)`` for one head                            ``q``/``k`` dim
==================  ======================================================  ==============
:class:`DotProduct` ``<q_i, k_j + e_ij> * scale`` (MHA, ``TransformerConv``)  ``D``
:class:`GAT`        ``LeakyReLU(q_i + k_j + e_ij)`` (``GATConv``)             1
:class:`GATv2`      ``a . LeakyReLU(q_i + k_j + e_ij)`` (``GATv2Conv``)       ``D``
:class:`Custom`     your function of one chunk of edges                    any
==================  ======================================================  ==============

``q_i`` are the target features, ``k_j`` the source features and ``e_ij`` the optional
per-edge features (``edge_features=`` of :func:`~graphattn.graph_attention`). For GAT,
``q_i = <a_dst, W x_i>`` and ``k_j = <a_src, W x_j>`` are one scalar per node and head, so
the edge backend never stores anything of size ``E x C``.

Every score is a small object. Its :meth:`Score.forward` is the plain-torch reference for a
chunk of edges; the edge backend runs it chunk by chunk and recomputes it in backward (so
memory stays ``O(E x H + chunk)``), and built-in scores override that with faster
closed-form passes. Scores that have a dense form (:class:`DotProduct`, :class:`GAT`) are
served by the dense backend too.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``E`` edges (sorted
by target), ``G = B * H`` groups, ``D`` head dim, ``De`` edge feature dim, ``n`` edges (times
batch) in a chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backends._chunks import (
    Buffers,
    add_chunk_to_dst,
    chunk_size,
    chunks,
    rowdot,
    sum_to_dst,
    sum_to_src,
)
from .graph import EdgeStructure

__all__ = ["Score", "DotProduct", "GAT", "GATv2", "Custom", "as_score", "ScoreFn"]

#: A user score on one chunk: ``fn(q_i, k_j, e_ij) -> logits`` with ``q_i``, ``k_j`` of shape
#: ``(n, H, D)``, ``e_ij`` ``(n, H, De)`` or ``None``, logits ``(n, H)``.
ScoreFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


class Score:
    """Base class of score functions (see the module docstring).

    Subclasses set :attr:`name` and implement :meth:`forward`; they may override the edge
    backend's passes (:meth:`edge_logits`, :meth:`edge_backward`) and provide a dense form
    (:meth:`dense_logits`, with :attr:`dense` set).

    Attributes:
        name: short name used in messages.
        uses_scale: whether the call's ``scale`` multiplies the score (dot product only).
        dense: whether :meth:`dense_logits` exists (the dense backend serves the score).
        sdpa: whether the dense backend may run it through ``F.scaled_dot_product_attention``.
        softmax: whether the weights are a softmax of the logits (every score here; a
            kernel score of :mod:`graphattn.kernels` may not be, and then only the linear
            backend serves it).
        kernel: whether the score factors through feature maps (:mod:`graphattn.kernels`),
            so that the linear backend serves it on complete graphs.
    """

    name: ClassVar[str] = "score"
    uses_scale: ClassVar[bool] = False
    dense: ClassVar[bool] = False
    sdpa: ClassVar[bool] = False
    softmax: ClassVar[bool] = True
    kernel: ClassVar[bool] = False

    # ------------------------------------------------------------------ description
    def tensors(self) -> tuple[Tensor, ...]:
        """Tensors the score uses besides its inputs (parameters); gradients flow to them."""
        return ()

    def edge_feature_dim(self, head_dim: int) -> int:
        """The last dim ``De`` that ``edge_features`` must have for query/key head dim ``D``."""
        return head_dim

    def check(self, q: Tensor, k: Tensor) -> None:
        """Raise if ``q`` ``(B, H, Nd, D)`` and ``k`` ``(B, H, Ns, D)`` do not fit the score."""

    def step(self) -> None:
        """Called once after every :func:`~graphattn.graph_attention` call that used the
        score (random-feature scores redraw their features here); a no-op by default."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ reference
    def forward(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None) -> Tensor:
        """Unscaled logits of a chunk of edges, plain torch and differentiable.

        Shapes:
            - q_i, k_j: ``(n, H, D)``; e_ij: ``(n, H, De)`` or ``None``
            - returns ``(n, H)``
        """
        raise NotImplementedError

    def __call__(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None = None) -> Tensor:
        return self.forward(q_i, k_j, e_ij)

    # ------------------------------------------------------------------ edge backend
    def edge_logits(
        self, q: Tensor, k: Tensor, ef: Tensor | None, st: EdgeStructure, heads: int, out: Tensor
    ) -> None:
        """Fill ``out`` with the unscaled logits of every edge (generic: :meth:`forward` per
        chunk without autograd).

        Shapes:
            - q: ``(Nd, G, D)``; k: ``(Ns, G, D)``; ef: ``(E, G, De)`` or ``None``
            - out: ``(E, G)``, edges in the sorted order of ``st``
        """
        g, d = q.shape[1], q.shape[-1]
        b = g // heads
        de = 0 if ef is None else ef.shape[-1]
        with torch.no_grad():
            for a, z in chunks(st.src.numel(), chunk_size(g, max(d, de), q.device)):
                qi, kj, e = _chunk_inputs(q, k, ef, st, a, z, b, heads)
                out[a:z] = _checked(self.forward(qi, kj, e), z - a, b, heads, self).view(z - a, g)

    def edge_backward(
        self,
        ds: Tensor,
        q: Tensor,
        k: Tensor,
        ef: Tensor | None,
        st: EdgeStructure,
        heads: int,
        needs: Sequence[bool],
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, list[Tensor | None]]:
        """Gradients of ``sum(ds * logits)`` with respect to q, k, ef and :meth:`tensors`
        (generic: :meth:`forward` recomputed per chunk under autograd).

        Args:
            ds: gradient of the (scaled) logits, ``(E, G)``, sorted edge order.
            needs: which of q, k, ef, then each of :meth:`tensors`, need a gradient.
        """
        g, d = q.shape[1], q.shape[-1]
        b = g // heads
        params = list(self.tensors())
        need_q, need_k, need_ef = needs[0], needs[1], needs[2] and ef is not None
        need_p = list(needs[3:])
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        d_ef = torch.zeros_like(ef) if need_ef else None
        dparams: list[Tensor | None] = [
            torch.zeros_like(p) if need else None for p, need in zip(params, need_p, strict=True)
        ]
        de = 0 if ef is None else ef.shape[-1]
        src = st.src
        for a, z in chunks(src.numel(), chunk_size(g, max(d, de), q.device)):
            with torch.enable_grad():
                qi, kj, e = _chunk_inputs(q, k, ef, st, a, z, b, heads)
                qi.requires_grad_(need_q)
                kj.requires_grad_(need_k)
                if e is not None:
                    e = e.detach().requires_grad_(need_ef)
                logits = _checked(self.forward(qi, kj, e), z - a, b, heads, self)
                wrt = [qi, kj, e, *params]
                mask = [need_q, need_k, need_ef, *need_p]
                inputs = [t for t, m in zip(wrt, mask, strict=True) if m]
                if not inputs:
                    continue
                grads = iter(
                    torch.autograd.grad(
                        logits, inputs, ds[a:z].reshape(logits.shape), allow_unused=True
                    )
                )
            n = z - a
            if need_q:
                gq = next(grads)
                if gq is not None:
                    add_chunk_to_dst(st, dq, gq.view(n, g, d), a, z)
            if need_k:
                gk = next(grads)
                if gk is not None:
                    dk.index_add_(0, src[a:z], gk.view(n, g, d))
            if need_ef:
                ge = next(grads)
                if ge is not None:
                    d_ef[a:z] = ge.view(n, g, de)
            for i, need in enumerate(need_p):
                if need:
                    gp = next(grads)
                    if gp is not None:
                        dparams[i].add_(gp)
        return dq, dk, d_ef, dparams

    # ------------------------------------------------------------------ dense backend
    def dense_logits(self, q: Tensor, k: Tensor) -> Tensor:
        """Unscaled logits of every (target, source) pair.

        Shapes:
            - q: ``(B, H, Nd, D)``; k: ``(B, H, Ns, D)``; returns ``(B, H, Nd, Ns)``
        """
        raise NotImplementedError(f"{self!r} has no dense form")


def _chunk_inputs(
    q: Tensor, k: Tensor, ef: Tensor | None, st: EdgeStructure, a: int, z: int, b: int, h: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gathered ``(n * B, H, D)`` target and source features (and edge features) of the
    sorted edges ``a:z``."""
    n, d = z - a, q.shape[-1]
    qi = q.index_select(0, st.dst[a:z]).view(n * b, h, d)
    kj = k.index_select(0, st.src[a:z]).view(n * b, h, d)
    e = None if ef is None else ef[a:z].reshape(n * b, h, ef.shape[-1])
    return qi, kj, e


def _checked(logits: Any, n: int, b: int, h: int, score: Score) -> Tensor:
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (n * b, h):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"score {score!r} must return logits of shape (n, H) = ({n * b}, {h}) for a chunk "
            f"of {n * b} edges, got {shape}"
        )
    return logits


# ---------------------------------------------------------------------------- dot product
class DotProduct(Score):
    """``score(i, j) = <q_i, k_j + e_ij> * scale``: ``nn.MultiheadAttention``,
    ``F.scaled_dot_product_attention`` and PyG's ``TransformerConv`` (whose edge features are
    added to the key and, through ``edge_values``, to the value).

    The dense backend runs it with the fused kernel; the edge backend with chunked gathers
    and batched row dots.
    """

    name = "dot_product"
    uses_scale = True
    dense = True
    sdpa = True

    def forward(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None) -> Tensor:
        key = k_j if e_ij is None else k_j + e_ij
        return (q_i * key).sum(-1)  # (n, H)

    def check(self, q: Tensor, k: Tensor) -> None:
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")

    def edge_logits(self, q, k, ef, st, heads, out) -> None:
        num_edges, (_, g, d) = st.src.numel(), q.shape
        with Buffers(q, num_edges, g, d, count=2) as bufs:
            for a, z in chunks(num_edges, bufs.chunk):
                kb = bufs.gather(0, k, st.src[a:z])  # (n, G, D)
                if ef is not None:
                    kb.add_(ef[a:z])
                qb = bufs.gather(1, q, st.dst[a:z])  # (n, G, D)
                rowdot(kb, qb, out[a:z])

    def edge_backward(self, ds, q, k, ef, st, heads, needs):
        need_q, need_k, need_ef = needs[0], needs[1], needs[2] and ef is not None
        src, dst = st.src, st.dst
        num_edges, (_, g, d) = src.numel(), q.shape
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        d_ef = torch.empty_like(ef) if need_ef else None
        if need_q or need_k or need_ef:
            with Buffers(q, num_edges, g, d, count=2) as bufs:
                for a, z in chunks(num_edges, bufs.chunk):
                    w = ds[a:z, :, None]  # (n, G, 1)
                    if need_q:
                        kb = bufs.gather(0, k, src[a:z])  # (n, G, D)
                        if ef is not None:
                            kb.add_(ef[a:z])
                        add_chunk_to_dst(st, dq, kb.mul_(w), a, z)
                    if need_k or need_ef:
                        qb = bufs.gather(1, q, dst[a:z]).mul_(w)  # (n, G, D)
                        if need_ef:
                            d_ef[a:z] = qb
                        if need_k:
                            dk.index_add_(0, src[a:z], qb)
        return dq, dk, d_ef, []

    def dense_logits(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.matmul(q, k.transpose(-2, -1))  # (B, H, Nd, Ns)


# ---------------------------------------------------------------------------- GAT
class GAT(Score):
    """Additive attention of GAT (Velickovic et al., 2018; PyG's ``GATConv``):
    ``score(i, j) = LeakyReLU(q_i + k_j + e_ij)`` where ``q_i = <a_dst, W x_i>``,
    ``k_j = <a_src, W x_j>`` and ``e_ij = <a_edge, W_e f_ij>`` are one scalar per node (edge)
    and head: ``q`` and ``k`` have head dim 1, and so do ``edge_features``.

    The edge backend needs only these scalars: its memory is ``O(E x H)``, where ``GATConv``
    keeps gathered ``E x H x C`` features. The dense backend broadcasts
    ``(Nd, 1) + (1, Ns)`` per head.

    Args:
        negative_slope: LeakyReLU slope for negative inputs (GAT: 0.2).
    """

    name = "gat"
    dense = True

    def __init__(self, negative_slope: float = 0.2) -> None:
        self.negative_slope = _check_slope(negative_slope)

    def __repr__(self) -> str:
        return f"GAT(negative_slope={self.negative_slope})"

    def edge_feature_dim(self, head_dim: int) -> int:
        return 1

    def check(self, q: Tensor, k: Tensor) -> None:
        if q.shape[-1] != 1 or k.shape[-1] != 1:
            raise ValueError(
                "the GAT score takes one scalar per node and head (q_i = <a_dst, W x_i>, "
                f"k_j = <a_src, W x_j>): q and k must have head dim 1, got q {tuple(q.shape)} "
                f"and k {tuple(k.shape)}"
            )

    def forward(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None) -> Tensor:
        pre = q_i + k_j if e_ij is None else q_i + k_j + e_ij
        return F.leaky_relu(pre, self.negative_slope).sum(-1)  # (n, H)

    def _pre(self, q: Tensor, k: Tensor, ef: Tensor | None, st: EdgeStructure, out: Tensor):
        """``out = q[dst] + k[src] (+ ef)``, all ``(E, G)``."""
        torch.index_select(q.view(q.shape[0], -1), 0, st.dst, out=out)
        out.add_(k.view(k.shape[0], -1).index_select(0, st.src))
        if ef is not None:
            out.add_(ef.view(out.shape))
        return out

    def edge_logits(self, q, k, ef, st, heads, out) -> None:
        F.leaky_relu_(self._pre(q, k, ef, st, out), self.negative_slope)

    def edge_backward(self, ds, q, k, ef, st, heads, needs):
        need_q, need_k, need_ef = needs[0], needs[1], needs[2] and ef is not None
        # d logits / d pre = 1 where pre > 0, else the slope (as F.leaky_relu's backward)
        da = self._pre(q, k, ef, st, torch.empty_like(ds)).gt_(0)  # (E, G) of 0 / 1
        da.mul_(1.0 - self.negative_slope).add_(self.negative_slope).mul_(ds)
        dq = dk = d_ef = None
        if need_q:
            dq = sum_to_dst(st, da).view_as(q)
        if need_k:
            dk = sum_to_src(st, da).view_as(k)
        if need_ef:
            d_ef = da.view_as(ef)
        return dq, dk, d_ef, []

    def dense_logits(self, q: Tensor, k: Tensor) -> Tensor:
        return _DenseAdditive.apply(q, k, self.negative_slope)


def _outer_sum(q: Tensor, k: Tensor) -> Tensor:
    """``q + k^T`` as a contiguous ``(B, H, Nd, Ns)`` tensor (the broadcast sum of strided
    views would otherwise come out in an order that makes row reductions slow)."""
    b, h, nd, _ = q.shape
    out = q.new_empty(max(b, k.shape[0]), h, nd, k.shape[-2])
    return torch.add(q, k.transpose(-2, -1), out=out)


class _DenseAdditive(torch.autograd.Function):
    """``LeakyReLU(q + k^T)`` ``(B, H, Nd, Ns)`` from ``q`` ``(B, H, Nd, 1)`` and ``k``
    ``(B, H, Ns, 1)``; saves only q and k and recomputes the sign in backward."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, slope: float) -> Tensor:
        ctx.save_for_backward(q, k)
        ctx.slope = slope
        return F.leaky_relu_(_outer_sum(q, k), slope)  # (B, H, Nd, Ns)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        q, k = ctx.saved_tensors
        da = _outer_sum(q, k).gt_(0)  # (B, H, Nd, Ns) of 0 / 1
        da.mul_(1.0 - ctx.slope).add_(ctx.slope).mul_(grad)
        dq = da.sum(-1, keepdim=True) if ctx.needs_input_grad[0] else None
        dk = da.sum(-2).unsqueeze(-1) if ctx.needs_input_grad[1] else None
        return dq, dk, None


# ---------------------------------------------------------------------------- GATv2
class GATv2(Score):
    """GATv2 (Brody et al., 2022; PyG's ``GATv2Conv``):
    ``score(i, j) = <a, LeakyReLU(q_i + k_j + e_ij)>`` per head, with ``q_i = W_dst x_i``,
    ``k_j = W_src x_j`` and ``e_ij = W_e f_ij``, all of head dim ``D``.

    The edge backend computes it chunk by chunk and recomputes it in backward: memory
    ``O(E x H + chunk)`` (plus the edge features when given), where ``GATv2Conv`` keeps
    ``E x H x C`` tensors.

    Args:
        att: the attention vector ``a``, ``(H, D)`` (or PyG's ``(1, H, D)``); gradients flow
            to it.
        negative_slope: LeakyReLU slope (GATv2: 0.2).
    """

    name = "gatv2"

    def __init__(self, att: Tensor, negative_slope: float = 0.2) -> None:
        if not isinstance(att, Tensor) or not att.is_floating_point():
            raise TypeError(f"att must be a floating-point tensor, got {type(att).__name__}")
        if att.dim() == 3 and att.shape[0] == 1:
            att = att[0]
        if att.dim() != 2:
            raise ValueError(f"att must have shape (H, D) or (1, H, D), got {tuple(att.shape)}")
        self.att = att
        self.negative_slope = _check_slope(negative_slope)

    def __repr__(self) -> str:
        h, d = self.att.shape
        return f"GATv2(heads={h}, head_dim={d}, negative_slope={self.negative_slope})"

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.att,)

    def check(self, q: Tensor, k: Tensor) -> None:
        h, d = q.shape[1], q.shape[-1]
        if k.shape[-1] != d:
            raise ValueError(f"q and k head dims differ: {d} vs {k.shape[-1]}")
        if tuple(self.att.shape) != (h, d):
            raise ValueError(
                f"GATv2's att has shape {tuple(self.att.shape)} but q has H={h} heads of "
                f"dim D={d}: att must be (H, D) = ({h}, {d})"
            )
        if self.att.dtype != q.dtype or self.att.device != q.device:
            raise TypeError(
                f"att ({self.att.dtype}, {self.att.device}) must match q ({q.dtype}, {q.device})"
            )

    def forward(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None) -> Tensor:
        pre = q_i + k_j if e_ij is None else q_i + k_j + e_ij
        return (F.leaky_relu(pre, self.negative_slope) * self.att.to(pre.dtype)).sum(-1)

    def _att(self, g: int, dtype: torch.dtype) -> Tensor:
        h, d = self.att.shape
        return self.att.to(dtype).expand(g // h, h, d).reshape(g, d)  # (G, D)

    def _pre(self, bufs: Buffers, q, k, ef, st, a, z) -> Tensor:
        pre = bufs.gather(0, q, st.dst[a:z])  # (n, G, D)
        pre.add_(bufs.gather(1, k, st.src[a:z]))
        if ef is not None:
            pre.add_(ef[a:z])
        return pre

    def edge_logits(self, q, k, ef, st, heads, out) -> None:
        num_edges, (_, g, d) = st.src.numel(), q.shape
        att = self._att(g, q.dtype)  # (G, D)
        with Buffers(q, num_edges, g, d, count=2) as bufs:
            for a, z in chunks(num_edges, bufs.chunk):
                pre = self._pre(bufs, q, k, ef, st, a, z)
                F.leaky_relu_(pre, self.negative_slope).mul_(att)
                torch.sum(pre, -1, out=out[a:z])

    def edge_backward(self, ds, q, k, ef, st, heads, needs):
        need_q, need_k, need_ef = needs[0], needs[1], needs[2] and ef is not None
        need_att = len(needs) > 3 and needs[3]
        src = st.src
        num_edges, (_, g, d) = src.numel(), q.shape
        att = self._att(g, q.dtype)  # (G, D)
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        d_ef = torch.empty_like(ef) if need_ef else None
        d_att = q.new_zeros(g, d) if need_att else None
        with Buffers(q, num_edges, g, d, count=2) as bufs:
            for a, z in chunks(num_edges, bufs.chunk):
                n, w = z - a, ds[a:z, :, None]  # (n, G, 1)
                pre = self._pre(bufs, q, k, ef, st, a, z)  # (n, G, D); buffer 1 is free again
                if need_att:
                    act = bufs.view(1, n, g, d).copy_(pre)
                    F.leaky_relu_(act, self.negative_slope).mul_(w)
                    d_att.add_(act.sum(0))
                if need_q or need_k or need_ef:
                    dpre = pre.gt_(0).mul_(1.0 - self.negative_slope).add_(self.negative_slope)
                    dpre.mul_(att).mul_(w)  # (n, G, D)
                    if need_q:
                        add_chunk_to_dst(st, dq, dpre, a, z)
                    if need_k:
                        dk.index_add_(0, src[a:z], dpre)
                    if need_ef:
                        d_ef[a:z] = dpre
        if d_att is not None:
            h = self.att.shape[0]
            d_att = d_att.view(g // h, h, d).sum(0).to(self.att.dtype)
        return dq, dk, d_ef, [d_att]


# ---------------------------------------------------------------------------- user hook
class Custom(Score):
    """A user score function, served by the edge backend: ``fn(q_i, k_j, e_ij)`` receives one
    chunk of gathered target features ``(n, H, D)``, source features ``(n, H, D)`` and edge
    features ``(n, H, De)`` (or ``None``) and returns logits ``(n, H)``.

    It runs chunk by chunk without autograd in the forward pass and is recomputed per chunk
    in backward, so nothing per edge is stored beyond the weights. Gradients flow to the
    inputs and to ``tensors`` (by default the parameters of ``fn`` when it is an
    ``nn.Module``). ``fn`` must be deterministic (no dropout inside): backward recomputes it.

    Args:
        fn: the score of one chunk.
        tensors: tensors ``fn`` uses that need gradients (default: ``fn.parameters()``).
        name: a name for messages.

    Example:
        >>> import torch
        >>> from graphattn import Graph, graph_attention, scores
        >>> q = k = v = torch.randn(2, 5, 4)  # (H, N, D)
        >>> l1 = scores.Custom(lambda qi, kj, e: -(qi - kj).abs().sum(-1))  # (n, H)
        >>> graph_attention(q, k, v, Graph.window(5, 1), score=l1).shape
        torch.Size([2, 5, 4])
    """

    name = "custom"

    def __init__(
        self, fn: ScoreFn, *, tensors: Sequence[Tensor] | None = None, name: str | None = None
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable (q_i, k_j, e_ij) -> logits, got {fn!r}")
        self.fn = fn
        if tensors is None:
            tensors = list(fn.parameters()) if isinstance(fn, nn.Module) else []
        self._tensors = tuple(t for t in tensors if t.requires_grad)
        self.label = name or getattr(fn, "__name__", type(fn).__name__)

    def __repr__(self) -> str:
        return f"Custom({self.label})"

    def tensors(self) -> tuple[Tensor, ...]:
        return self._tensors

    def forward(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None) -> Tensor:
        return self.fn(q_i, k_j, e_ij)


def as_score(score: Score | ScoreFn | None) -> Score:
    """``None`` -> :class:`DotProduct`; a :class:`Score` as is; any other callable (a function
    or an ``nn.Module``) -> :class:`Custom`."""
    if score is None:
        return DotProduct()
    if isinstance(score, Score):
        return score
    if callable(score):
        return Custom(score)
    raise TypeError(
        f"score must be a graphattn.scores.Score, a callable (q_i, k_j, e_ij) -> logits or "
        f"None, got {type(score).__name__}"
    )


def _check_slope(slope: float) -> float:
    if isinstance(slope, bool) or not isinstance(slope, int | float) or slope != slope:
        raise ValueError(f"negative_slope must be a finite number, got {slope!r}")
    return float(slope)
