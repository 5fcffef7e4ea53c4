"""Edge-list backend: attention as message passing over the in-edges of each target.

Per edge ``e = (j -> i)`` and attention group ``g`` (a batch sample and a head):
``s[e, g] = <q[i, g], k[j, g]> * scale + bias[e, g]``, ``alpha = softmax(s)`` over the
in-edges of ``i`` (max subtracted), ``out[i, g] = sum_e alpha[e, g] * (v[j, g] + ev[e, g])``.

Memory: two custom autograd functions (scores + softmax -> ``alpha``; ``alpha`` + values ->
output) keep only ``alpha`` ``(E, G)`` (and a dropout mask) for backward, where PyG keeps the
gathered per-edge queries, keys and values ``(E, H, D)`` each. The gathers are recomputed
in backward, chunk by chunk, into buffers allocated once per call (``CHUNK_ELEMENTS``
floats each), so peak memory beyond inputs and outputs is
``O(E * G + CHUNK_ELEMENTS)``, with ``G = B * H``. Writing into already-resident buffers is
what makes this fast on CPU: freshly allocated ``E x D`` temporaries cost page faults.

Axis legend: ``Nd`` targets, ``Ns`` sources, ``E`` edges (sorted by target), ``G`` groups
(batch x heads), ``D`` query/key head dim, ``Dv`` value head dim, ``n`` edges in a chunk.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .graph import EdgeStructure

__all__ = ["edge_attention", "segment_softmax_sorted", "CHUNK_ELEMENTS"]

#: elements of one per-chunk gather buffer (chunk edges x G x D); measured best near 2**20
#: on a 2-core CPU (benchmarks/bench_formulations.py).
CHUNK_ELEMENTS = 1 << 20


def _chunk_edges(num_groups: int, dim: int) -> int:
    return max(256, CHUNK_ELEMENTS // max(1, num_groups * dim))


def _view(flat: Tensor, n: int, g: int, d: int) -> Tensor:
    """A contiguous ``(n, g, d)`` view of the front of a flat reusable buffer."""
    return flat[: n * g * d].view(n, g, d)


def _rowdot(a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out[n, g] = sum_d a[n, g, d] * b[n, g, d]`` via one batched matmul (fast on CPU)."""
    n, g, d = a.shape
    torch.bmm(a.view(n * g, 1, d), b.view(n * g, d, 1), out=out.view(n * g, 1, 1))


def segment_softmax_sorted(scores: Tensor, st: EdgeStructure) -> Tensor:
    """In-place softmax of ``scores`` ``(E, G)`` over the in-edges of each target, for edges
    sorted by target. Targets without in-edges, or whose in-edges are all ``-inf``, give
    zeros (never NaN)."""
    if scores.numel() == 0:
        return scores
    m = torch.segment_reduce(scores, "max", offsets=st.ptr, axis=0)  # (Nd, G)
    m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype))
    scores.sub_(m.index_select(0, st.dst)).exp_()
    z = torch.segment_reduce(scores, "sum", offsets=st.ptr, axis=0)  # (Nd, G)
    z = torch.where(z > 0, z, torch.ones((), dtype=z.dtype))
    return scores.div_(z.index_select(0, st.dst))


def _alloc_buffers(ref: Tensor, num_edges: int, g: int, dim: int) -> tuple[int, Tensor, Tensor]:
    """Chunk size and two flat gather buffers, allocated once per call and reused."""
    chunk = _chunk_edges(g, dim)
    size = min(chunk, num_edges) * g * dim
    return chunk, ref.new_empty(size), ref.new_empty(size)


class _EdgeSoftmax(torch.autograd.Function):
    """``alpha = segment_softmax(<q[dst], k[src]> * scale + bias)``; saves alpha ``(E, G)``
    and recomputes the per-edge gathers of q and k in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,  # (Nd, G, D)
        k: Tensor,  # (Ns, G, D)
        bias: Tensor | None,  # (E, G), sorted edge order
        st: EdgeStructure,
        scale: float,
    ) -> Tensor:
        num_edges, (_, g, d) = st.src.numel(), q.shape
        src, dst = st.src, st.dst
        scores = q.new_empty(num_edges, g)  # (E, G)
        chunk, buf_a, buf_b = _alloc_buffers(q, num_edges, g, d)
        for a in range(0, num_edges, chunk):
            b = min(a + chunk, num_edges)
            kb = torch.index_select(k, 0, src[a:b], out=_view(buf_a, b - a, g, d))  # (n, G, D)
            qb = torch.index_select(q, 0, dst[a:b], out=_view(buf_b, b - a, g, d))  # (n, G, D)
            _rowdot(kb, qb, scores[a:b])
        scores.mul_(scale)
        if bias is not None:
            scores.add_(bias)
        alpha = segment_softmax_sorted(scores, st)  # (E, G), in place
        ctx.save_for_backward(q, k, alpha)
        ctx.st, ctx.scale = st, scale
        return alpha

    @staticmethod
    def backward(ctx: Any, dalpha: Tensor):
        q, k, alpha = ctx.saved_tensors
        st, scale = ctx.st, ctx.scale
        src, dst = st.src, st.dst
        num_edges, (_, g, d) = src.numel(), q.shape
        need_q, need_k, need_bias = ctx.needs_input_grad[:3]
        # softmax backward: ds = alpha * (dalpha - sum over the target's in-edges of alpha*dalpha)
        ds = alpha * dalpha  # (E, G)
        delta = torch.segment_reduce(ds, "sum", offsets=st.ptr, axis=0) if num_edges else None
        ds = torch.addcmul(ds, alpha, delta.index_select(0, dst), value=-1) if num_edges else ds
        d_bias = ds.clone() if need_bias else None
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        if need_q or need_k:
            ds.mul_(scale)
            chunk, buf_a, buf_b = _alloc_buffers(q, num_edges, g, d)
            for a in range(0, num_edges, chunk):
                b = min(a + chunk, num_edges)
                w = ds[a:b, :, None]  # (n, G, 1)
                if need_q:
                    kb = torch.index_select(k, 0, src[a:b], out=_view(buf_a, b - a, g, d))
                    dq.index_add_(0, dst[a:b], kb.mul_(w))
                if need_k:
                    qb = torch.index_select(q, 0, dst[a:b], out=_view(buf_b, b - a, g, d))
                    dk.index_add_(0, src[a:b], qb.mul_(w))
        return dq, dk, d_bias, None, None


class _EdgeAggregate(torch.autograd.Function):
    """``out[i] = sum_e dropout(alpha)[e] * (v[src[e]] + ev[e])`` over the in-edges of ``i``;
    recomputes the per-edge gathers of v and the output gradient in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        alpha: Tensor,  # (E, G)
        v: Tensor,  # (Ns, G, Dv)
        edge_values: Tensor | None,  # (E, G, Dv), sorted edge order
        st: EdgeStructure,
        num_dst: int,
        dropout_p: float,
    ) -> Tensor:
        num_edges, g, dv = st.src.numel(), v.shape[1], v.shape[-1]
        src, dst = st.src, st.dst
        keep = None
        alpha_d = alpha
        if dropout_p > 0.0:
            keep = torch.rand_like(alpha) >= dropout_p  # (E, G)
            alpha_d = alpha * keep / (1.0 - dropout_p)
        out = v.new_zeros(num_dst, g, dv)  # (Nd, G, Dv)
        chunk, buf_a, _ = _alloc_buffers(v, num_edges, g, dv)
        for a in range(0, num_edges, chunk):
            b = min(a + chunk, num_edges)
            vb = torch.index_select(v, 0, src[a:b], out=_view(buf_a, b - a, g, dv))  # (n, G, Dv)
            if edge_values is not None:
                vb.add_(edge_values[a:b])
            vb.mul_(alpha_d[a:b, :, None])
            out.index_add_(0, dst[a:b], vb)
        ctx.save_for_backward(alpha, v, edge_values, keep)
        ctx.st, ctx.dropout_p = st, dropout_p
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        alpha, v, edge_values, keep = ctx.saved_tensors
        st, p = ctx.st, ctx.dropout_p
        src, dst = st.src, st.dst
        num_edges, g, dv = src.numel(), v.shape[1], v.shape[-1]
        grad_out = grad_out.contiguous()
        need_alpha, need_v, need_ev = ctx.needs_input_grad[:3]
        alpha_d = alpha if keep is None else alpha * keep / (1.0 - p)
        dv_ = torch.zeros_like(v) if need_v else None
        d_ev = v.new_empty(edge_values.shape) if need_ev else None
        dalpha = alpha.new_empty(num_edges, g) if need_alpha else None  # (E, G)
        chunk, buf_a, buf_b = _alloc_buffers(v, num_edges, g, dv)
        for a in range(0, num_edges, chunk):
            b = min(a + chunk, num_edges)
            gb = torch.index_select(grad_out, 0, dst[a:b], out=_view(buf_a, b - a, g, dv))
            if need_alpha:
                vb = torch.index_select(v, 0, src[a:b], out=_view(buf_b, b - a, g, dv))
                if edge_values is not None:
                    vb.add_(edge_values[a:b])
                _rowdot(gb, vb, dalpha[a:b])  # dL/d(alpha after dropout)
            if need_v or need_ev:
                gb.mul_(alpha_d[a:b, :, None])  # (n, G, Dv)
                if need_ev:
                    d_ev[a:b] = gb
                if need_v:
                    dv_.index_add_(0, src[a:b], gb)
        if need_alpha and keep is not None:
            dalpha.mul_(keep).div_(1.0 - p)
        return dalpha, dv_, d_ev, None, None, None


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    st: EdgeStructure,
    *,
    bias: Tensor | None = None,
    edge_values: Tensor | None = None,
    scale: float,
    dropout_p: float = 0.0,
    aggregate: bool = True,
) -> tuple[Tensor | None, Tensor]:
    """Attention over the edges of ``st`` (sorted by target), node-major layout.

    Args:
        q: queries of the targets.
        k: keys of the sources.
        v: values of the sources.
        st: the edge structure, edges sorted by target.
        bias: additive score per sorted edge and group (``-inf`` removes an edge).
        edge_values: added to the value of each sorted edge (edge features).
        scale: multiplies ``<q, k>`` before the bias.
        dropout_p: dropout on the attention weights.
        aggregate: ``False`` stops after the weights (``out`` is then ``None``).

    Shapes:
        - q: ``(Nd, G, D)``; k: ``(Ns, G, D)``; v: ``(Ns, G, Dv)``
        - bias: ``(E, G)``; edge_values: ``(E, G, Dv)``
        - returns ``out (Nd, G, Dv)`` and the attention weights ``alpha (E, G)`` in sorted
          edge order (before dropout). ``out`` is computed from ``alpha``, so gradients can be
          taken with respect to the weights (gradient x attention explanations).

    Half-precision inputs are computed in float32 and the output cast back.
    """
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
        bias = None if bias is None else bias.float()
        edge_values = None if edge_values is None else edge_values.float()
    alpha = _EdgeSoftmax.apply(q.contiguous(), k.contiguous(), bias, st, float(scale))
    if not aggregate:
        return None, alpha
    out = _EdgeAggregate.apply(alpha, v.contiguous(), edge_values, st, q.shape[0], float(dropout_p))
    return out.to(dtype), alpha
