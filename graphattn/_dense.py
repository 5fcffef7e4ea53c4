"""Dense backend: ``F.scaled_dot_product_attention`` with masks derived from the graph.

Complete and causal graphs without padding or bias run the fused kernel with no mask at all.
Other graphs become a boolean mask, or an additive float mask when edges are duplicated
(``log(count)``, so that a duplicated edge counts as often as it appears) or a bias is given.
A per-edge bias becomes a dense bias with ``logsumexp`` over duplicated edges.

A batch of complete graphs given as an edge list (a PyG ``Batch``, one block per sample) is
packed into ``(blocks, H, L, D)`` with a key padding mask and run as one fused call.

Targets with no in-edge get a zero output and zero gradient: their mask row is opened (so the
kernel never sees an all-masked row) and their output multiplied by zero.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``D`` head dim,
``E`` edges, ``P`` packed blocks, ``L`` longest block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .graph import EdgeListGraph, Graph

__all__ = [
    "dense_attention",
    "dense_reasons",
    "edge_bias_to_dense",
    "packable_blocks",
    "packed_block_attention",
]


#: maps dense weights to (weights handed back, dense weights the output is computed from)
Reparam = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class DenseResult:
    out: Tensor  # (B, H, Nd, Dv)
    weights: Tensor | None  # (B, H, Nd, Ns)


def dense_reasons(graph: Graph, *, has_edge_values: bool, max_mask_elements: int) -> list[str]:
    """Why the dense backend cannot serve this call (empty list: it can)."""
    reasons = []
    if has_edge_values:
        reasons.append("dense: per-edge values (edge features) need the edge backend")
    if not graph.mask_free and not _is_block_complete(graph):
        size = graph.num_dst * graph.num_src
        if size > max_mask_elements:
            reasons.append(
                f"dense: a {graph.num_dst} x {graph.num_src} mask ({size} elements) exceeds "
                f"max_mask_elements={max_mask_elements}"
            )
    return reasons


def _is_block_complete(graph: Graph) -> bool:
    return (
        isinstance(graph, EdgeListGraph)
        and graph.key_padding_mask is None
        and graph.complete_blocks() is not None
    )


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
    if counts is not None:  # dense_attention adds log(count) itself: keep the mean here
        total = total / counts.view(-1).clamp_min(1).to(total.dtype)
    dense = torch.where(total > 0, total.clamp_min(1e-38).log() + m, -math.inf)
    return dense.view(b, h, graph.num_dst, graph.num_src)


def _structure_mask(graph: Graph, dtype: torch.dtype) -> Tensor:
    """``(Nd, Ns)`` mask of the structure: boolean, or additive (``log(count)``, ``-inf``
    for no edge) when an edge appears more than once."""
    counts = graph.edge_counts()
    if counts is None:
        return graph.materialize_structure()
    return torch.where(counts > 0, counts.to(dtype).log(), -math.inf)


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    *,
    is_causal: bool,
    scale: float,
    dropout_p: float,
    need_weights: bool,
    row_keep: Tensor | None = None,
    reparam: Reparam | None = None,
) -> DenseResult:
    """Fused SDPA, or the explicit math when weights are requested.

    ``row_keep`` (broadcastable to ``(B, H, Nd, 1)``) zeroes the output and weights of rows
    without in-edges. ``reparam`` maps the dense weights to the weights handed back and the
    dense weights the output is computed from (see :func:`dense_attention`).
    """
    if not need_weights:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
        return DenseResult(out if row_keep is None else out * row_keep, None)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Nd, Ns)
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    low = q.dtype in (torch.float16, torch.bfloat16)
    weights = torch.softmax(scores.float() if low else scores, dim=-1).to(q.dtype)
    if row_keep is not None:
        weights = weights * row_keep
    returned = weights
    if reparam is not None:
        returned, weights = reparam(weights)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return DenseResult(torch.matmul(dropped, v), returned)


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    *,
    bias: Tensor | None,
    scale: float,
    dropout_p: float,
    need_weights: bool,
    reparam: Reparam | None = None,
) -> DenseResult:
    """Dense attention over ``graph``.

    With ``need_weights``, ``reparam`` may turn the dense weights into another layout (per
    edge) and back; the output is then computed from the rebuilt dense weights, so that the
    returned weights lie on the output's autograd path.

    Shapes:
        - q: ``(B, H, Nd, D)``; k: ``(B, H, Ns, D)``; v: ``(B, H, Ns, Dv)``
        - bias: dense additive ``(B or 1, H or 1, Nd, Ns)`` (per-edge biases are converted
          by the caller with :func:`edge_bias_to_dense`)
        - returns out ``(B, H, Nd, Dv)`` and, if ``need_weights``, weights ``(B, H, Nd, Ns)``
    """
    is_complete = graph.is_complete
    pad = graph.key_padding_mask  # (B, Ns) or None
    is_causal = graph.kind == "causal" and pad is None and bias is None
    mask: Tensor | None = None
    if not is_complete and not is_causal:
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
    empty = None
    if mask is not None:
        has_edge = mask.any(-1) if mask.dtype == torch.bool else (mask > -math.inf).any(-1)
        if not bool(has_edge.all()):
            empty = ~has_edge  # (…, Nd)
            open_row = empty[..., None]
            mask = mask | open_row if mask.dtype == torch.bool else mask.masked_fill(open_row, 0.0)
    row_keep = None
    if empty is not None:
        row_keep = (~empty).to(q.dtype)[..., None]  # (…, Nd, 1)
        while row_keep.dim() < 4:
            row_keep = row_keep.unsqueeze(0)
    return _attend(
        q,
        k,
        v,
        mask,
        is_causal=is_causal,
        scale=scale,
        dropout_p=dropout_p,
        need_weights=need_weights,
        row_keep=row_keep,
        reparam=reparam,
    )


def packable_blocks(graph: Graph) -> Tensor | None:
    """Block offsets ``(P + 1,)`` when ``graph`` is an unpadded disjoint union of at least two
    complete graphs (a PyG batch of complete graphs), else ``None``."""
    if not isinstance(graph, EdgeListGraph) or graph.key_padding_mask is not None:
        return None
    blocks = graph.complete_blocks()
    return blocks if blocks is not None and len(blocks) > 2 else None


def packed_block_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    ptr: Tensor,
    *,
    edge_bias: Tensor | None,
    dense_bias: Tensor | None,
    scale: float,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """A disjoint union of complete graphs (blocks ``ptr``) as one padded fused call.

    Shapes:
        - q: ``(B, H, N, D)``; k: ``(B, H, N, D)``; v: ``(B, H, N, Dv)``; ptr: ``(P + 1,)``
        - edge_bias: ``(B, E, H)`` aligned with ``graph.edge_index()``
        - dense_bias: broadcastable to ``(B, H, N, N)``
        - returns out ``(B, H, N, Dv)`` and, if ``need_weights``, per-edge weights
          ``(B, E, H)``
    """
    b, h, n, _ = q.shape
    sizes = ptr[1:] - ptr[:-1]  # (P,)
    nblocks, longest = len(sizes), int(sizes.max())
    pos = torch.arange(longest, device=q.device)
    valid = pos[None, :] < sizes[:, None]  # (P, L)
    node = (ptr[:-1, None] + pos[None, :]).clamp_max(n - 1)  # (P, L) node id per slot
    uniform = bool((sizes == longest).all())
    block_of = torch.repeat_interleave(torch.arange(nblocks, device=q.device), sizes)  # (N,)
    slot_of = torch.arange(n, device=q.device) - ptr[block_of]  # (N,) position in block
    src, dst = graph.edge_index()
    # flat index of each edge in the packed (B*P, H, L, L) score tensor, per sample and head
    edge_slot = (block_of[dst] * longest + slot_of[dst]) * longest + slot_of[src]  # (E,)

    def pack(x: Tensor) -> Tensor:  # (B, H, N, C) -> (B * P, H, L, C)
        if uniform:
            y = x.reshape(b, h, nblocks, longest, x.shape[-1])
        else:
            y = x[:, :, node.reshape(-1)].reshape(b, h, nblocks, longest, x.shape[-1])
        return y.transpose(1, 2).reshape(b * nblocks, h, longest, x.shape[-1])

    mask: Tensor | None = None
    if not uniform:
        mask = valid[:, None, None, :].repeat(b, 1, 1, 1)  # (B*P, 1, 1, L)
    if dense_bias is not None:  # (B', H', N, N) -> diagonal blocks (B*P, H', L, L)
        dense_bias = dense_bias.expand(b, -1, n, n)
        bblk = dense_bias[:, :, node[:, :, None], node[:, None, :]]  # (B, H', P, L, L)
        bblk = bblk.transpose(1, 2).reshape(b * nblocks, -1, longest, longest)
        mask = bblk if mask is None else bblk.masked_fill(~mask, -math.inf)
    elif edge_bias is not None:  # (B, E, H) -> (B*P, H, L, L), -inf outside the blocks
        flat = edge_bias.new_full((b, h, nblocks * longest * longest), -math.inf)
        flat[:, :, edge_slot] = edge_bias.transpose(1, 2).to(flat.dtype)
        bblk = flat.view(b, h, nblocks, longest, longest).transpose(1, 2)
        mask = bblk.reshape(b * nblocks, h, longest, longest)

    def per_edge(w: Tensor) -> tuple[Tensor, Tensor]:  # (B*P, H, L, L) -> (B, E, H), same
        flat = w.reshape(b, nblocks, h, longest * longest).transpose(1, 2)
        edges = flat.reshape(b, h, nblocks * longest * longest)[:, :, edge_slot]  # (B, H, E)
        rebuilt = edges.new_zeros(b, h, nblocks * longest * longest)
        rebuilt = rebuilt.index_add(2, edge_slot, edges)  # the output's weights, from edges
        rebuilt = rebuilt.view(b, h, nblocks, longest * longest).transpose(1, 2)
        return edges.transpose(1, 2), rebuilt.reshape(w.shape)

    res = _attend(
        pack(q),
        pack(k),
        pack(v),
        mask,
        is_causal=False,
        scale=scale,
        dropout_p=dropout_p,
        need_weights=need_weights,
        reparam=per_edge,
    )
    dv = v.shape[-1]
    out = res.out.reshape(b, nblocks, h, longest, dv).transpose(1, 2)  # (B, H, P, L, Dv)
    out = out.reshape(b, h, nblocks * longest, dv)
    if not uniform:
        out = out[:, :, valid.reshape(-1)]  # (B, H, N, Dv)
    return out, res.weights  # weights: (B, E, H) or None
