"""Packed complete blocks: a disjoint union of complete graphs (a PyG ``Batch`` of complete
graphs, one block per sample) as one fused call.

The blocks are packed into ``(B * P, H, L, D)`` with a key padding mask (none when all
blocks have the same size) and run through ``F.scaled_dot_product_attention``; weights come
back per edge.

Axis legend: ``B`` batch, ``H`` heads, ``N`` nodes, ``D`` head dim, ``Dv`` value head dim,
``E`` edges, ``P`` packed blocks, ``L`` longest block.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._finite import bad_rows, may_be_non_finite
from ._base import AttentionCall, Backend, BackendResult, memory_reasons
from .dense import _nan_weight_rows, attend

__all__ = ["BlocksBackend"]


class BlocksBackend(Backend):
    """Serves graphs with block structure (:meth:`Graph.complete_blocks`) without key
    padding, with the dot-product score, per-edge or dense biases and no per-edge values or
    features."""

    name = "blocks"

    def reasons(self, call: AttentionCall) -> list[str]:
        reasons = []
        if not call.score.sdpa:
            reasons.append(f"score {call.score!r} is not served (dot product only)")
        if call.edge_values is not None or call.edge_features is not None:
            reasons.append("per-edge values and features need the edge backend")
        if call.padded:
            reasons.append("key padding is not served (each block is already one sample)")
        elif call.graph.complete_blocks() is None:
            reasons.append("the graph is not a disjoint union of complete graphs")
        if not reasons:
            reasons += memory_reasons(call, _memory(call), "packed blocks, bias and scores")
        return reasons

    def run(self, call: AttentionCall) -> BackendResult:
        b = call.batch
        edge_bias = call.bias.expand(b, -1, -1) if call.bias_layout == "edges" else None
        dense_bias = call.bias if call.bias_layout == "dense" else None
        out, weights = packed_block_attention(
            call, call.graph.complete_blocks(), edge_bias=edge_bias, dense_bias=dense_bias
        )
        if may_be_non_finite(call.q):  # a NaN query's row is NaN (SDPA on CPU returns zeros)
            rows = bad_rows(call.q)  # (B, H, N): every node of a block has in-edges
            out = out.masked_fill(rows[..., None], math.nan)
            weights = _nan_weight_rows(weights, rows, call.graph)
        return BackendResult(out, weights)


def _memory(call: AttentionCall) -> int:
    """Bytes the packed call allocates beyond its inputs: packed queries, keys, values and
    output, a packed bias, and the scores and weights when they are returned."""
    ptr = call.graph.complete_blocks()  # (P + 1,)
    b, h, _, d = call.q.shape
    dv, item = call.v.shape[-1], call.q.element_size()
    nblocks, longest = len(ptr) - 1, int((ptr[1:] - ptr[:-1]).max())
    slots = b * h * nblocks * longest  # (B * P, H, L)
    total = slots * (2 * d + 2 * dv) * item
    if call.bias is not None:
        total += 2 * slots * longest * item
    if call.need_weights:
        total += 3 * slots * longest * item
    return total


def packed_block_attention(
    call: AttentionCall, ptr: Tensor, *, edge_bias: Tensor | None, dense_bias: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """A disjoint union of complete graphs (blocks ``ptr``) as one padded fused call.

    Shapes:
        - q: ``(B, H, N, D)``; k: ``(B, H, N, D)``; v: ``(B, H, N, Dv)``; ptr: ``(P + 1,)``
        - edge_bias: ``(B, E, H)`` aligned with ``graph.edge_index()``
        - dense_bias: broadcastable to ``(B, H, N, N)``
        - returns out ``(B, H, N, Dv)`` and, if ``need_weights``, per-edge weights
          ``(B, E, H)``
    """
    q, k, v, graph = call.q, call.k, call.v, call.graph
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
        else:  # slots past a block's end hold a copy of some node: zeroed, never sent
            y = x[:, :, node.reshape(-1)].reshape(b, h, nblocks, longest, x.shape[-1])
            y.masked_fill_(~valid[:, :, None], 0.0)
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

    res = attend(
        pack(q),
        pack(k),
        pack(v),
        mask,
        score=call.score,
        is_causal=False,
        scale=call.scale,
        dropout_p=call.dropout_p,
        need_weights=call.need_weights,
        reparam=per_edge,
    )
    dv = v.shape[-1]
    out = res.out.reshape(b, nblocks, h, longest, dv).transpose(1, 2)  # (B, H, P, L, Dv)
    out = out.reshape(b, h, nblocks * longest, dv)
    if not uniform:
        out = out[:, :, valid.reshape(-1)]  # (B, H, N, Dv)
    return out, res.weights  # weights: (B, E, H) or None
