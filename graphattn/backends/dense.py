"""Dense backend: every (target, source) pair, with a mask derived from the graph.

Dot-product calls run ``F.scaled_dot_product_attention`` (the fused kernel): complete and
causal graphs without padding or bias with no mask at all, other graphs with a boolean mask,
or an additive float mask when edges are duplicated (``log(count)``, so that a duplicated
edge counts as often as it appears) or a bias is given. A per-edge bias becomes a dense bias
with ``logsumexp`` over duplicated edges. Scores with a dense form other than the dot
product (GAT), and calls that return weights, run the explicit math: logits, mask, softmax,
matmul.

Targets with no in-edge get a zero output and zero gradient: their mask row is opened (so the
kernel never sees an all-masked row) and their output multiplied by zero.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``D`` head dim,
``Dv`` value head dim, ``E`` edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .._finite import bad_rows, may_be_non_finite
from ..graph import Graph
from ..scores import Score
from ..softmax import segment_softmax
from ..weights import AttentionWeights
from ._base import AttentionCall, Backend, BackendResult, memory_reasons
from ._blockwise import blockwise_attention

__all__ = ["DenseBackend", "attend", "edge_bias_to_dense"]

#: maps dense weights to (weights handed back, dense weights the output is computed from)
Reparam = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class _Dense:
    out: Tensor  # (B, H, Nd, Dv)
    weights: Tensor | None  # (B, H, Nd, Ns), or what ``reparam`` hands back


class DenseBackend(Backend):
    """``F.scaled_dot_product_attention`` (dot product) or explicit dense math (other dense
    scores, or when weights are returned) over a mask of the graph.

    Serves: every graph whose ``Nd x Ns`` mask fits ``policy.max_mask_elements`` (complete
    and causal graphs need no mask); scores with a dense form; per-edge and dense biases.
    Refuses: per-edge values and per-edge score features, scores without a dense form.
    """

    name = "dense"

    def reasons(self, call: AttentionCall) -> list[str]:
        reasons = []
        if not call.score.dense:
            reasons.append(f"score {call.score!r} has no dense form")
        if call.edge_values is not None:
            reasons.append("per-edge values (edge features: edge_values) need edges")
        if call.edge_features is not None:
            reasons.append("per-edge score inputs (edge features: edge_features) need edges")
        g = call.graph
        if not g.mask_free and not g.is_complete:
            size = g.num_dst * g.num_src
            limit = call.policy.max_mask_elements
            if size > limit:
                reasons.append(
                    f"a {g.num_dst} x {g.num_src} mask ({size} elements) exceeds "
                    f"max_mask_elements={limit}"
                )
        if not reasons:
            reasons += memory_reasons(call, _memory(call), "mask, bias, scores and output")
        return reasons

    def run(self, call: AttentionCall) -> BackendResult:
        graph, b = call.graph, call.batch
        bias = call.bias
        if call.bias_layout == "edges":
            bias = edge_bias_to_dense(bias.expand(b, -1, -1), graph)  # (B, H, Nd, Ns)
        reparam = None
        if call.need_weights and graph.weights_layout == "edges":

            def reparam(dense_w: Tensor) -> tuple[Tensor, Tensor]:
                """(B, H, Nd, Ns) -> per-edge (B, E, H), and the dense weights rebuilt from
                them (the output is computed from those, so the per-edge weights are
                differentiable)."""
                per_edge = AttentionWeights(dense_w, graph, "dense").to_edges()  # (B, E, H)
                if call.bias_layout == "edges" and graph.edge_counts() is not None:
                    per_edge = _split_by_bias(per_edge, call.bias, graph, b)
                return per_edge, AttentionWeights(per_edge, graph, "edges").to_dense()

        res = dense_attention(call, bias=bias, reparam=reparam)
        return BackendResult(res.out, res.weights)


def _memory(call: AttentionCall) -> int:
    """Bytes the dense path allocates beyond its inputs: the mask (bool, or additive with
    duplicated edges), a dense bias and its conversions, the ``(B, H, Nd, Ns)`` scores and
    weights of the explicit path (SDPA and the blockwise kernel keep none) and the output."""
    g = call.graph
    b, h, nd, _ = call.q.shape
    ns, dv, item = g.num_src, call.v.shape[-1], call.q.element_size()
    pairs = nd * ns
    total = b * h * nd * dv * item  # output
    if not g.is_complete and not g.mask_free:
        total += pairs * (1 if g.edge_counts() is None else item) * (b if call.padded else 1)
    if call.bias is not None:
        total += 3 * b * h * pairs * item
    blockwise = call.dropout_p == 0.0 and call.q.dtype in (torch.float32, torch.float64)
    blockwise = blockwise and not torch.compiler.is_compiling()  # see attend()
    if call.need_weights or not (call.score.sdpa or blockwise):
        total += 3 * b * h * pairs * item  # scores, weights, dropped weights
    return total


def edge_bias_to_dense(bias: Tensor, graph: Graph) -> Tensor:
    """Scatter a per-edge additive bias into a dense one, log-mean-exp over duplicates
    (the structure mask adds ``log(count)``, which makes it ``logsumexp``); absent edges
    get ``-inf``.

    Shapes:
        - bias: ``(B, E, H)``
        - returns ``(B, H, Nd, Ns)``
    """
    src, dst = graph.edge_index()
    b, e, h = bias.shape
    flat = dst * graph.num_src + src  # (E,)
    size = graph.num_dst * graph.num_src
    bt = bias.permute(0, 2, 1)  # (B, H, E)
    with torch.no_grad():
        m = bt.new_full((b, h, size), -math.inf)
        m.scatter_reduce_(2, flat.expand(b, h, e), bt, "amax")
        m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype, device=m.device))
    ex = (bt - m.gather(2, flat.expand(b, h, e))).exp()  # (B, H, E)
    total = bt.new_zeros(b, h, size).index_add(2, flat, ex)
    counts = graph.edge_counts()
    if counts is not None:  # the structure mask adds log(count) itself: keep the mean here
        total = total / counts.view(-1).clamp_min(1).to(total.dtype)
    # no edge -> -inf; a NaN or inf bias stays non-finite (as on the edge backend)
    dense = torch.where(total == 0, -math.inf, total.clamp_min(1e-38).log() + m)
    return dense.view(b, h, graph.num_dst, graph.num_src)


def _split_by_bias(weights: Tensor, bias: Tensor, graph: Graph, b: int) -> Tensor:
    """Per-edge weights ``(B, E, H)`` split evenly among duplicated edges, re-split in
    proportion to ``exp(bias)`` of each copy (what the edge backend computes)."""
    src, dst = graph.edge_index()
    eb = bias.expand(b, -1, -1)  # (B, E, H)
    key = dst * graph.num_src + src  # (E,), copies of one edge share a key
    share = segment_softmax(eb.transpose(0, 1), key, graph.num_dst * graph.num_src)  # (E, B, H)
    counts = graph.edge_counts()[dst, src].to(weights.dtype)  # (E,)
    return weights * counts[None, :, None] * share.transpose(0, 1).to(weights.dtype)


def _structure_mask(graph: Graph, dtype: torch.dtype) -> Tensor:
    """``(Nd, Ns)`` mask of the structure: boolean, or additive (``log(count)``, ``-inf``
    for no edge) when an edge appears more than once."""
    counts = graph.edge_counts()
    if counts is None:
        return graph.materialize_structure()
    return torch.where(counts > 0, counts.to(dtype).log(), -math.inf)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    *,
    score: Score,
    is_causal: bool,
    scale: float,
    dropout_p: float,
    need_weights: bool,
    row_keep: Tensor | None = None,
    reparam: Reparam | None = None,
) -> _Dense:
    """Fused SDPA; for other scores the blockwise kernel (no weights, no dropout, fp32/64);
    otherwise the explicit math.

    ``mask`` is boolean (``True`` = attend) or additive, broadcastable to
    ``(B, H, Nd, Ns)``. ``row_keep`` (bool, broadcastable to ``(B, H, Nd, 1)``) zeroes the output
    and weights of rows without in-edges. ``reparam`` maps the dense weights to the weights
    handed back and the dense weights the output is computed from.
    """
    if score.sdpa and not need_weights:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
        return _Dense(_keep_rows(out, row_keep), None)
    if (
        not need_weights
        and dropout_p == 0.0
        and q.dtype in (torch.float32, torch.float64)
        and (mask is None or not mask.requires_grad)
        and not torch.compiler.is_compiling()  # compiled: the explicit math, fused by Inductor
    ):  # nothing of size Nd x Ns is stored
        out = blockwise_attention(q, k, v, mask, score=score, scale=scale, is_causal=is_causal)
        return _Dense(_keep_rows(out, row_keep), None)
    logits = score.dense_logits(q, k)  # (B, H, Nd, Ns)
    if score.uses_scale:
        logits = logits * scale
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~causal, -math.inf)
    if mask is not None:
        logits = logits.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else logits + mask
    low = q.dtype in (torch.float16, torch.bfloat16)
    weights = torch.softmax(logits.float() if low else logits, dim=-1).to(q.dtype)
    weights = _keep_rows(weights, row_keep)
    returned = weights
    if reparam is not None:
        returned, weights = reparam(weights)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return _Dense(torch.matmul(dropped, v), returned if need_weights else None)


def _keep_rows(x: Tensor, row_keep: Tensor | None) -> Tensor:
    """Zero the rows of targets without in-edges (``row_keep`` false), even where ``x`` is
    NaN there (a NaN query of a target without neighbours)."""
    return x if row_keep is None else torch.where(row_keep, x, 0.0)


def _reached(sends: Tensor, bad: Tensor) -> Tensor:
    """Targets with an in-edge from a bad source.

    Shapes:
        - sends: ``(…, Nd, Ns)`` bool, broadcastable to ``(B, H, Nd, Ns)``: the edges
        - bad: ``(B, H, Ns)`` bool
        - returns ``(B, H, Nd)`` bool
    """
    hits = torch.matmul(sends.to(torch.float32), bad.to(torch.float32)[..., None])
    return hits[..., 0] > 0  # (B, H, Nd)


def dense_attention(call: AttentionCall, *, bias: Tensor | None, reparam: Reparam | None) -> _Dense:
    """Dense attention over ``call.graph`` with a dense additive ``bias``
    ``(B or 1, H or 1, Nd, Ns)`` (per-edge biases converted by the caller).

    Shapes:
        - returns out ``(B, H, Nd, Dv)`` and, if ``need_weights``, weights ``(B, H, Nd, Ns)``
          (or what ``reparam`` hands back)
    """
    q, graph = call.q, call.graph
    pad = graph.key_padding_mask  # (B, Ns) or None
    is_causal = graph.is_causal and pad is None and bias is None
    mask: Tensor | None = None
    if not graph.is_complete and not is_causal:
        mask = _structure_mask(graph, q.dtype)  # (Nd, Ns)
    if bias is not None:
        bias = bias.to(q.dtype)
        if mask is None:
            mask = bias
        elif mask.dtype == torch.bool:
            mask = bias.masked_fill(~mask, -math.inf)
        else:
            mask = mask + bias
    if pad is not None:
        keep = ~pad[:, None, None, :]  # (B, 1, 1, Ns)
        if mask is None:
            mask = keep
        elif mask.dtype == torch.bool:
            mask = mask & keep
        else:
            mask = mask.masked_fill(~keep, -math.inf)
    edges = mask  # the pairs that are edges, before empty rows are opened below
    row_keep = None
    if mask is not None:
        has_edge = mask.any(-1) if mask.dtype == torch.bool else (mask != -math.inf).any(-1)
        # compiled code opens rows always (a no-op where every row has an edge)
        if torch.compiler.is_compiling() or not bool(has_edge.all()):
            empty = ~has_edge  # (…, Nd)
            open_row = empty[..., None]
            mask = mask | open_row if mask.dtype == torch.bool else mask.masked_fill(open_row, 0.0)
            row_keep = ~empty[..., None]  # (…, Nd, 1)
            while row_keep.dim() < 4:
                row_keep = row_keep.unsqueeze(0)
    # A non-finite source must reach only its own targets: attend with it set to zero,
    # then make the output of the targets it reaches NaN (the sum of products would
    # otherwise carry 0 * NaN to every target). Padded sources reach nobody.
    k, v = call.k, call.v
    bad_k = bad_v = None
    if not graph.is_complete and may_be_non_finite(k, v):
        bad_k, bad_v = bad_rows(k), bad_rows(v)  # (B, H, Ns)
        k = k.masked_fill(bad_k[..., None], 0.0)
        v = v.masked_fill(bad_v[..., None], 0.0)
    res = attend(
        q,
        k,
        v,
        mask,
        score=call.score,
        is_causal=is_causal,
        scale=call.scale,
        dropout_p=call.dropout_p,
        need_weights=call.need_weights,
        row_keep=row_keep,
        reparam=reparam,
    )
    # A NaN or inf query makes its own target's output NaN, as on the edge backend (the CPU
    # SDPA kernel returns zeros for such a row); targets without in-edges stay zero.
    bad_q = None
    if may_be_non_finite(q):
        bad_q = bad_rows(q)  # (B, H, Nd)
        if row_keep is not None:
            bad_q = bad_q & row_keep[..., 0]
    if bad_k is None and bad_q is None:
        return res
    no_rows = torch.zeros(q.shape[:-1], dtype=torch.bool, device=q.device)  # (B, H, Nd)
    weight_rows = out_rows = no_rows if bad_q is None else bad_q
    if bad_k is not None:
        # values travel every edge of the structure from a real source (a -inf bias makes
        # the weight zero, and 0 * NaN is NaN on every backend); scores skip -inf edges
        carries = graph.materialize_structure()  # (Nd, Ns) bool
        if pad is not None:
            carries = carries & ~pad[:, None, None, :]  # (B, 1, Nd, Ns)
        scores = carries if edges is None or edges.dtype == torch.bool else edges != -math.inf
        weight_rows = weight_rows | _reached(scores, bad_k)  # (B, H, Nd)
        out_rows = weight_rows | _reached(carries, bad_v)
    return _Dense(
        res.out.masked_fill(out_rows[..., None], math.nan),
        _nan_weight_rows(res.weights, weight_rows, graph),
    )


def _nan_weight_rows(weights: Tensor | None, rows: Tensor, graph: Graph) -> Tensor | None:
    """``weights`` with the rows of targets ``rows`` ``(B, H, Nd)`` set to NaN, in either
    layout: dense ``(B, H, Nd, Ns)`` or per edge ``(B, E, H)``."""
    if weights is None:
        return None
    if graph.weights_layout == "edges":
        dst = graph.edge_index()[1]
        return weights.masked_fill(rows[:, :, dst].transpose(1, 2), math.nan)
    return weights.masked_fill(rows[..., None], math.nan)
