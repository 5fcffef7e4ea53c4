"""Edge-list backend: attention as message passing over the in-edges of each target.

Per edge ``e = (j -> i)`` and attention group ``g`` (a batch sample and a head):
``s[e, g] = <q[i, g], k[j, g]> * scale + bias[e, g]``, ``alpha = softmax(s)`` over the
in-edges of ``i`` (max subtracted), ``out[i, g] = sum_e alpha[e, g] * (v[j, g] + ev[e, g])``.

Memory: a custom autograd function keeps only ``alpha`` ``(E, G)`` (and a dropout mask) for
backward, where PyG keeps the gathered per-edge queries, keys and values ``(E, H, D)`` each.
The gathers are recomputed in backward, chunk by chunk, into buffers allocated once per call
(``CHUNK_ELEMENTS`` floats each), so peak memory beyond inputs and outputs is
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


class _EdgeAttention(torch.autograd.Function):
    """Custom autograd: saves alpha ``(E, G)``; recomputes per-edge gathers in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,  # (Nd, G, D)
        k: Tensor,  # (Ns, G, D)
        v: Tensor,  # (Ns, G, Dv)
        bias: Tensor | None,  # (E, G), sorted edge order
        edge_values: Tensor | None,  # (E, G, Dv), sorted edge order
        st: EdgeStructure,
        scale: float,
        dropout_p: float,
    ) -> tuple[Tensor, Tensor]:
        num_edges, (nd, g, d), dv = st.src.numel(), q.shape, v.shape[-1]
        src, dst = st.src, st.dst
        scores = q.new_empty(num_edges, g)  # (E, G)
        chunk = _chunk_edges(g, max(d, dv))
        buf_a = q.new_empty(min(chunk, num_edges) * g * max(d, dv))
        buf_b = q.new_empty(min(chunk, num_edges) * g * d)
        for a in range(0, num_edges, chunk):
            b = min(a + chunk, num_edges)
            kb = torch.index_select(k, 0, src[a:b], out=_view(buf_a, b - a, g, d))  # (n, G, D)
            qb = torch.index_select(q, 0, dst[a:b], out=_view(buf_b, b - a, g, d))  # (n, G, D)
            _rowdot(kb, qb, scores[a:b])
        scores.mul_(scale)
        if bias is not None:
            scores.add_(bias)
        alpha = segment_softmax_sorted(scores, st)  # (E, G), in place
        keep = None
        alpha_d = alpha
        if dropout_p > 0.0:
            keep = torch.rand_like(alpha) >= dropout_p  # (E, G)
            alpha_d = alpha * keep / (1.0 - dropout_p)
        out = q.new_zeros(nd, g, dv)  # (Nd, G, Dv)
        for a in range(0, num_edges, chunk):
            b = min(a + chunk, num_edges)
            vb = torch.index_select(v, 0, src[a:b], out=_view(buf_a, b - a, g, dv))  # (n, G, Dv)
            if edge_values is not None:
                vb.add_(edge_values[a:b])
            vb.mul_(alpha_d[a:b, :, None])
            out.index_add_(0, dst[a:b], vb)
        ctx.save_for_backward(q, k, v, edge_values, alpha, keep, out)
        ctx.st, ctx.scale, ctx.dropout_p = st, scale, dropout_p
        ctx.mark_non_differentiable(alpha)
        return out, alpha

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, _grad_alpha: Tensor | None):
        q, k, v, edge_values, alpha, keep, out = ctx.saved_tensors
        st, scale, p = ctx.st, ctx.scale, ctx.dropout_p
        src, dst = st.src, st.dst
        num_edges, (_, g, d), dv = src.numel(), q.shape, v.shape[-1]
        grad_out = grad_out.contiguous()
        need_q, need_k, need_v, need_bias, need_ev = ctx.needs_input_grad[:5]
        alpha_d = alpha if keep is None else alpha * keep / (1.0 - p)
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv_ = torch.zeros_like(v) if need_v else None
        d_ev = q.new_empty(edge_values.shape) if need_ev else None
        dalpha = alpha.new_empty(num_edges, g)  # (E, G)
        chunk = _chunk_edges(g, max(d, dv))
        buf_a = q.new_empty(min(chunk, num_edges) * g * max(d, dv))
        buf_b = q.new_empty(min(chunk, num_edges) * g * max(d, dv))
        for a in range(0, num_edges, chunk):
            b = min(a + chunk, num_edges)
            gb = torch.index_select(grad_out, 0, dst[a:b], out=_view(buf_a, b - a, g, dv))
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
        if keep is not None:
            dalpha.mul_(keep).div_(1.0 - p)
        # softmax backward: ds = alpha * (dalpha - sum_e' alpha dalpha), and the row sum equals
        # <grad_out_i, out_i> because out_i = sum_e alpha_d (v + ev).
        delta = (grad_out * out).sum(-1)  # (Nd, G)
        ds = dalpha.sub_(delta.index_select(0, dst)).mul_(alpha)  # (E, G), d loss / d score
        d_bias = ds.clone() if need_bias else None
        if need_q or need_k:
            ds.mul_(scale)
            for a in range(0, num_edges, chunk):
                b = min(a + chunk, num_edges)
                w = ds[a:b, :, None]  # (n, G, 1)
                if need_q:
                    kb = torch.index_select(k, 0, src[a:b], out=_view(buf_a, b - a, g, d))
                    dq.index_add_(0, dst[a:b], kb.mul_(w))
                if need_k:
                    qb = torch.index_select(q, 0, dst[a:b], out=_view(buf_b, b - a, g, d))
                    dk.index_add_(0, src[a:b], qb.mul_(w))
        return dq, dk, dv_, d_bias, d_ev, None, None, None


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
) -> tuple[Tensor, Tensor]:
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

    Shapes:
        - q: ``(Nd, G, D)``; k: ``(Ns, G, D)``; v: ``(Ns, G, Dv)``
        - bias: ``(E, G)``; edge_values: ``(E, G, Dv)``
        - returns ``out (Nd, G, Dv)`` and the attention weights ``alpha (E, G)`` in sorted
          edge order (before dropout; not differentiable).

    Half-precision inputs are computed in float32 and the output cast back.
    """
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
        bias = None if bias is None else bias.float()
        edge_values = None if edge_values is None else edge_values.float()
    out, alpha = _EdgeAttention.apply(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        bias,
        edge_values,
        st,
        float(scale),
        float(dropout_p),
    )
    return out.to(dtype), alpha
