"""Edge-list backend: attention as message passing over the in-edges of each target.

Per edge ``e = (j -> i)`` and attention group ``g`` (a batch sample and a head):
``s[e, g] = score(q[i, g], k[j, g], ef[e, g]) * scale + bias[e, g]``, ``alpha = softmax(s)``
over the in-edges of ``i`` (max subtracted), ``out[i, g] = sum_e alpha[e, g] * (v[j, g] +
ev[e, g])``.

Memory: two custom autograd functions (scores + softmax -> ``alpha``; ``alpha`` + values ->
output) keep only ``alpha`` ``(E, G)`` (and a dropout mask) for backward, where PyG keeps the
gathered per-edge queries, keys and values ``(E, H, D)`` each. The score's per-edge work is
recomputed in backward chunk by chunk (see :mod:`graphattn.scores`), into buffers allocated
once per call, so peak memory beyond inputs and outputs is ``O(E * G + CHUNK_ELEMENTS)``.

This pure-torch path is the reference every fused kernel is tested against. Under
``torch.compile`` and ``torch.export`` the backend runs :func:`_run_traced` instead: the same
attention in plain differentiable ops on the graph's edge order, with no data-dependent
branch, so that a call is one graph with a symbolic edge count (PyG's memory, per-edge
gathers; autograd and Inductor handle backward).

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``E`` edges (sorted
by target), ``G = B * H`` groups, ``D`` query/key head dim, ``Dv`` value head dim, ``De``
edge feature dim.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._finite import all_finite
from ..graph import EdgeStructure
from ..scores import Score, _checked
from ..weights import AttentionWeights
from ._base import AttentionCall, Backend, BackendResult, memory_reasons
from ._chunks import (
    Buffers,
    add_chunk_to_dst,
    chunk_elements,
    chunks,
    rowdot,
    segment_softmax_sorted,
    sum_to_dst,
    weighted_sum_to_dst,
    weighted_sum_to_src,
)

__all__ = ["EdgesBackend", "edge_attention"]


class EdgesBackend(Backend):
    """Message passing over the edge list: serves every graph, score, bias, dtype and device;
    cost grows with the number of edges, not ``Nd * Ns``."""

    name = "edges"

    def reasons(self, call: AttentionCall) -> list[str]:
        if not call.score.softmax:
            return [f"score {call.score!r} is not a softmax of logits (the linear backend)"]
        return memory_reasons(call, edge_memory(call), "per-edge weights and inputs")

    def run(self, call: AttentionCall) -> BackendResult:
        return _run(call)


def edge_memory(call: AttentionCall, *, fused: bool = False) -> int:
    """Bytes an edge path allocates beyond its inputs: the sorted edge index, per-edge
    scores and weights (not kept by the ``fused`` kernel), the sorted per-edge inputs, the
    chunk buffers, the output and the weights handed back."""
    g, e = call.batch * call.heads, call.graph.num_edges
    nd, dv = call.graph.num_dst, call.v.shape[-1]
    item = call.q.element_size()
    per_edge = (0 if fused else 2) + (call.bias is not None or call.padded)  # scores, bias
    if call.edge_features is not None:
        per_edge += call.edge_features.shape[-1]
    if call.edge_values is not None:
        per_edge += dv
    total = (
        e * 24
        + e * g * per_edge * item
        + 4 * chunk_elements(call.q.device) * item
        + nd * g * dv * item
    )
    if call.need_weights:
        total += e * g * item
        if call.graph.weights_layout == "dense":
            total += g * nd * call.graph.num_src * item
    return total


def _node_major(x: Tensor) -> Tensor:
    """``(B, H, N, C)`` -> ``(N, B * H, C)`` (a view when ``x`` came from that layout)."""
    b, h, n, c = x.shape
    return x.permute(2, 0, 1, 3).reshape(n, b * h, c)


def _edge_major(x: Tensor, b: int) -> Tensor:
    """Per-edge ``(B', E, H, C)`` -> ``(E, B * H, C)`` in the graph's edge order."""
    _, e, h, c = x.shape
    return x.expand(b, e, h, c).permute(1, 0, 2, 3).reshape(e, b * h, c)


def _edge_bias(call: AttentionCall) -> Tensor | None:
    """The additive bias per edge and group ``(E, G)`` in the graph's edge order, key padding
    included (``-inf`` on edges from padded sources)."""
    b, h = call.batch, call.heads
    graph = call.graph
    src, dst = graph.edge_index()
    e = src.numel()
    bias = None
    if call.bias_layout == "edges":
        bias = call.bias.expand(b, e, h).permute(1, 0, 2).reshape(e, b * h)
    elif call.bias_layout == "dense":
        db = call.bias.expand(b, h, graph.num_dst, graph.num_src)
        bias = db[:, :, dst, src].permute(2, 0, 1).reshape(e, b * h)  # (E, G)
    if graph.key_padding_mask is not None:
        padded = graph.key_padding_mask[:, src].t()  # (E, B)
        q = call.q
        neg = torch.zeros(e, b, dtype=q.dtype, device=q.device).masked_fill_(padded, -math.inf)
        neg = neg[:, :, None].expand(e, b, h).reshape(e, b * h)
        bias = neg if bias is None else bias + neg
    return bias


def sorted_edge_inputs(
    call: AttentionCall, st: EdgeStructure
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The call's per-edge inputs in the sorted edge order of ``st``: the bias ``(E, G)``
    (key padding included), the score's edge features ``(E, G, De)`` and the edge values
    ``(E, G, Dv)``, each ``None`` when absent."""
    b = call.batch
    bias = _edge_bias(call)  # (E, G)
    ef = None if call.edge_features is None else _edge_major(call.edge_features, b)
    ev = None if call.edge_values is None else _edge_major(call.edge_values, b)
    if st.perm is not None:  # into the sorted edge order
        bias = None if bias is None else bias[st.perm]
        ef = None if ef is None else ef[st.perm]
        ev = None if ev is None else ev[st.perm]
    return bias, ef, ev


def _run(call: AttentionCall) -> BackendResult:
    if torch.compiler.is_compiling():
        return _run_traced(call)
    q, k, v, graph = call.q, call.k, call.v, call.graph
    b, h, nd, _ = q.shape
    dv = v.shape[-1]
    st = graph.edge_structure()
    bias, ef, ev = sorted_edge_inputs(call, st)
    # Dense-layout weights (complete, causal graphs) are returned as (B, H, Nd, Ns); the
    # output is then computed from them, so that they lie on its autograd path.
    dense_out = call.need_weights and graph.weights_layout == "dense" and ev is None
    out, alpha = edge_attention(
        _node_major(q),
        _node_major(k),
        _node_major(v),
        st,
        score=call.score,
        heads=h,
        bias=bias,
        edge_features=ef,
        edge_values=ev,
        scale=call.scale,
        dropout_p=call.dropout_p,
        aggregate=not dense_out,
    )
    if out is not None:
        out = out.view(nd, b, h, dv).permute(1, 2, 0, 3)  # (B, H, Nd, Dv)
    if not call.need_weights:
        return BackendResult(out)
    if st.perm is not None:  # back into the graph's edge order
        unsorted = torch.empty_like(alpha)
        unsorted[st.perm] = alpha
        alpha = unsorted
    return _with_weights(call, out, alpha, has_edge_values=ev is not None)


def _with_weights(
    call: AttentionCall, out: Tensor | None, alpha: Tensor, has_edge_values: bool
) -> BackendResult:
    """The result with the weights of ``alpha`` (in the graph's edge order). Dense-layout
    graphs (complete, causal) return them as ``(B, H, Nd, Ns)`` and, without edge values,
    the output is computed from them, so that they lie on its autograd path; with edge
    values they are a dense copy, off the path.

    Shapes:
        - out: ``(B, H, Nd, Dv)`` (``None`` when it is to come from the dense weights);
          alpha: ``(E, G)``; returns weights ``(B, E, H)`` or ``(B, H, Nd, Ns)``
    """
    b, h = call.q.shape[:2]
    weights = alpha.view(-1, b, h).permute(1, 0, 2).to(call.q.dtype)  # (B, E, H)
    if call.graph.weights_layout == "dense":
        weights = AttentionWeights(weights, call.graph, "edges").to_dense()  # (B, H, Nd, Ns)
        if not has_edge_values:
            p = call.dropout_p
            dropped = F.dropout(weights, p) if p > 0 else weights
            out = torch.matmul(dropped, call.v)  # (B, H, Nd, Dv)
    return BackendResult(out, weights)


def _run_traced(call: AttentionCall) -> BackendResult:
    """:func:`_run` under ``torch.compile`` and ``torch.export``: the same attention in plain
    differentiable ops on the graph's own edge order (no sort, no sparse products, no chunk
    loop, no data-dependent branch), so that the whole call is one graph whose sizes may be
    symbolic (a changing ``E`` compiles once). Autograd and Inductor handle backward and
    fusion; memory is that of PyG's formulation (per-edge gathers of ``(E, G, D)``)."""
    q, k, v, graph = call.q, call.k, call.v, call.graph
    b, h, nd, _ = q.shape
    dv = v.shape[-1]
    src, dst = graph.edge_index()  # (E,) each, the graph's order
    bias = _edge_bias(call)  # (E, G)
    ef = None if call.edge_features is None else _edge_major(call.edge_features, b)
    ev = None if call.edge_values is None else _edge_major(call.edge_values, b)
    out, alpha = _traced_edge_attention(
        _node_major(q),
        _node_major(k),
        _node_major(v),
        src,
        dst,
        nd,
        score=call.score,
        heads=h,
        bias=bias,
        edge_features=ef,
        edge_values=ev,
        scale=call.scale,
        dropout_p=call.dropout_p,
    )
    out = out.view(nd, b, h, dv).permute(1, 2, 0, 3)  # (B, H, Nd, Dv)
    if not call.need_weights:
        return BackendResult(out)
    return _with_weights(call, out, alpha, has_edge_values=ev is not None)


def _traced_edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    src: Tensor,
    dst: Tensor,
    num_dst: int,
    *,
    score: Score,
    heads: int,
    bias: Tensor | None,
    edge_features: Tensor | None,
    edge_values: Tensor | None,
    scale: float,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    """:func:`edge_attention` in plain differentiable torch, for edges in any order (the
    compiled and exported path). The score is :meth:`Score.forward` on every edge at once.
    Non-finite rules as in eager: a ``-inf`` bias removes an edge even where the score is
    NaN, and a target without finite in-edges gets zero weights and output (never NaN).

    Shapes:
        - q: ``(Nd, G, D)``; k: ``(Ns, G, D)``; v: ``(Ns, G, Dv)``; src, dst: ``(E,)``
        - bias: ``(E, G)``; edge_features: ``(E, G, De)``; edge_values: ``(E, G, Dv)``
        - returns ``out (Nd, G, Dv)`` and ``alpha (E, G)`` (before dropout)
    """
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
        bias = None if bias is None else bias.float()
        edge_features = None if edge_features is None else edge_features.float()
        edge_values = None if edge_values is None else edge_values.float()
    e, g, d = src.shape[0], q.shape[1], q.shape[-1]
    b = g // heads
    qi = q.index_select(0, dst).view(e * b, heads, d)  # (E * B, H, D)
    kj = k.index_select(0, src).view(e * b, heads, d)  # (E * B, H, D)
    ej = None if edge_features is None else edge_features.reshape(e * b, heads, -1)
    logits = _checked(score.forward(qi, kj, ej), e, b, heads, score).reshape(e, g)  # (E, G)
    if scale != 1.0:
        logits = logits * scale
    if bias is not None:  # -inf removes the edge, even where the score is NaN
        logits = (logits + bias).masked_fill(bias == -math.inf, -math.inf)
    index = dst[:, None].expand(e, g)  # (E, G)
    m = logits.new_full((num_dst, g), -math.inf)  # (Nd, G)
    m = m.scatter_reduce(0, index, logits.detach(), "amax", include_self=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype, device=m.device))
    ex = (logits - m.index_select(0, dst)).exp()  # (E, G)
    z = ex.new_zeros(num_dst, g).index_add(0, dst, ex)  # (Nd, G)
    z = torch.where(z > 0, z, torch.ones((), dtype=z.dtype, device=z.device))
    alpha = ex / z.index_select(0, dst)  # (E, G)
    alpha_d = F.dropout(alpha, dropout_p) if dropout_p > 0.0 else alpha
    vals = v.index_select(0, src)  # (E, G, Dv)
    if edge_values is not None:
        vals = vals + edge_values
    out = v.new_zeros(num_dst, g, v.shape[-1]).index_add(0, dst, alpha_d[:, :, None] * vals)
    return out.to(dtype), alpha


class _EdgeSoftmax(torch.autograd.Function):
    """``alpha = segment_softmax(score(q[dst], k[src], ef) * scale + bias)``; saves alpha
    ``(E, G)`` and the inputs, and recomputes the score's per-edge work in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,  # (Nd, G, D)
        k: Tensor,  # (Ns, G, D)
        ef: Tensor | None,  # (E, G, De), sorted edge order
        bias: Tensor | None,  # (E, G), sorted edge order
        st: EdgeStructure,
        score: Score,
        heads: int,
        scale: float,
        *tensors: Tensor,  # score.tensors(), so that they receive gradients
    ) -> Tensor:
        logits = q.new_empty(st.src.numel(), q.shape[1])  # (E, G)
        score.edge_logits(q, k, ef, st, heads, logits)
        if scale != 1.0:
            logits.mul_(scale)
        if bias is not None:
            logits.add_(bias)
            if not all_finite(q, k, ef):  # -inf removes the edge, even where the score is NaN
                logits.masked_fill_(bias == -math.inf, -math.inf)
        alpha = segment_softmax_sorted(logits, st)  # (E, G), in place
        ctx.save_for_backward(q, k, ef, alpha)
        ctx.st, ctx.score, ctx.heads, ctx.scale = st, score, heads, scale
        return alpha

    @staticmethod
    def backward(ctx: Any, dalpha: Tensor):
        q, k, ef, alpha = ctx.saved_tensors
        st = ctx.st
        needs = ctx.needs_input_grad
        # softmax backward: ds = alpha * (dalpha - sum over the target's in-edges of alpha*dalpha)
        ds = alpha * dalpha  # (E, G)
        if ds.numel():
            delta = sum_to_dst(st, ds)  # (Nd, G)
            ds = torch.addcmul(ds, alpha, delta.index_select(0, st.dst), value=-1)
        d_bias = ds.clone() if needs[3] else None
        grad_inputs = (needs[0], needs[1], needs[2], *needs[8:])
        dq = dk = d_ef = None
        d_tensors: list[Tensor | None] = [None] * (len(needs) - 8)
        if any(grad_inputs):
            if ctx.scale != 1.0:
                ds.mul_(ctx.scale)
            dq, dk, d_ef, d_tensors = ctx.score.edge_backward(
                ds, q, k, ef, st, ctx.heads, grad_inputs
            )
        return (dq, dk, d_ef, d_bias, None, None, None, None, *d_tensors)


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
        keep = None
        alpha_d = alpha
        if dropout_p > 0.0:  # keep: 0 (dropped) or 1 / (1 - p), (E, G)
            keep = torch.rand_like(alpha).ge_(dropout_p).mul_(1.0 / (1.0 - dropout_p))
            alpha_d = alpha * keep
        out = None if edge_values is not None else weighted_sum_to_dst(st, alpha_d, v)
        if out is None:
            out = _gather_aggregate(alpha_d, v, edge_values, st, num_dst)
        ctx.save_for_backward(alpha, v, edge_values, keep)
        ctx.st = st
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        alpha, v, edge_values, keep = ctx.saved_tensors
        st = ctx.st
        src, dst = st.src, st.dst
        num_edges, g, dv = src.numel(), v.shape[1], v.shape[-1]
        grad_out = grad_out.contiguous()
        need_alpha, need_v, need_ev = ctx.needs_input_grad[:3]
        alpha_d = alpha if keep is None else alpha * keep
        dv_ = weighted_sum_to_src(st, alpha_d, grad_out) if need_v else None
        gather_dv = need_v and dv_ is None
        if gather_dv:
            dv_ = torch.zeros_like(v)
        d_ev = v.new_empty(edge_values.shape) if need_ev else None
        dalpha = alpha.new_empty(num_edges, g) if need_alpha else None  # (E, G)
        if need_alpha or need_ev or gather_dv:
            with Buffers(v, num_edges, g, dv, count=2) as bufs:
                for a, z in chunks(num_edges, bufs.chunk):
                    gb = bufs.gather(0, grad_out, dst[a:z])  # (n, G, Dv)
                    if need_alpha:
                        vb = bufs.gather(1, v, src[a:z])
                        if edge_values is not None:
                            vb.add_(edge_values[a:z])
                        rowdot(gb, vb, dalpha[a:z])  # dL/d(alpha after dropout)
                    if need_ev or gather_dv:
                        gb.mul_(alpha_d[a:z, :, None])  # (n, G, Dv)
                        if need_ev:
                            d_ev[a:z] = gb
                        if gather_dv:
                            dv_.index_add_(0, src[a:z], gb)
        if need_alpha and keep is not None:
            dalpha.mul_(keep)
        return dalpha, dv_, d_ev, None, None, None


def _gather_aggregate(
    alpha_d: Tensor, v: Tensor, edge_values: Tensor | None, st: EdgeStructure, num_dst: int
) -> Tensor:
    """``out[i] = sum_e alpha_d[e] * (v[src[e]] + ev[e])`` chunk by chunk (gather, scale,
    segment sum), for edge values or where sparse products do not run.

    Shapes:
        - alpha_d: ``(E, G)``; v: ``(Ns, G, Dv)``; edge_values: ``(E, G, Dv)``
        - returns ``(Nd, G, Dv)``
    """
    num_edges, g, dv = st.src.numel(), v.shape[1], v.shape[-1]
    src = st.src
    out = v.new_zeros(num_dst, g, dv)  # (Nd, G, Dv)
    with Buffers(v, num_edges, g, dv, count=1) as bufs:
        for a, z in chunks(num_edges, bufs.chunk):
            vb = bufs.gather(0, v, src[a:z])  # (n, G, Dv)
            if edge_values is not None:
                vb.add_(edge_values[a:z])
            vb.mul_(alpha_d[a:z, :, None])
            add_chunk_to_dst(st, out, vb, a, z)
    return out


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    st: EdgeStructure,
    *,
    score: Score,
    heads: int,
    bias: Tensor | None = None,
    edge_features: Tensor | None = None,
    edge_values: Tensor | None = None,
    scale: float = 1.0,
    dropout_p: float = 0.0,
    aggregate: bool = True,
) -> tuple[Tensor | None, Tensor]:
    """Attention over the edges of ``st`` (sorted by target), node-major layout.

    Args:
        q: target features.
        k: source features.
        v: values of the sources.
        st: the edge structure, edges sorted by target.
        score: the score function (see :mod:`graphattn.scores`).
        heads: ``H`` (``G`` is ``B * H``), for score functions that work per head.
        bias: additive score per sorted edge and group (``-inf`` removes an edge).
        edge_features: per-edge input of the score, per sorted edge.
        edge_values: added to the value of each sorted edge (edge features).
        scale: multiplies the score before the bias.
        dropout_p: dropout on the attention weights.
        aggregate: ``False`` stops after the weights (``out`` is then ``None``).

    Shapes:
        - q: ``(Nd, G, D)``; k: ``(Ns, G, D)``; v: ``(Ns, G, Dv)``
        - bias: ``(E, G)``; edge_features: ``(E, G, De)``; edge_values: ``(E, G, Dv)``
        - returns ``out (Nd, G, Dv)`` and the attention weights ``alpha (E, G)`` in sorted
          edge order (before dropout). ``out`` is computed from ``alpha``, so gradients can be
          taken with respect to the weights (gradient x attention explanations).

    Half-precision inputs are computed in float32 and the output cast back.
    """
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
        bias = None if bias is None else bias.float()
        edge_features = None if edge_features is None else edge_features.float()
        edge_values = None if edge_values is None else edge_values.float()
    ef = None if edge_features is None else edge_features.contiguous()
    alpha = _EdgeSoftmax.apply(
        q.contiguous(), k.contiguous(), ef, bias, st, score, heads, float(scale), *score.tensors()
    )
    if not aggregate:
        return None, alpha
    ev = None if edge_values is None else edge_values.contiguous()
    out = _EdgeAggregate.apply(alpha, v.contiguous(), ev, st, q.shape[0], float(dropout_p))
    return out.to(dtype), alpha
