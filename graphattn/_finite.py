"""The rules for non-finite values, shared by every backend.

1. A non-finite value in a source's key or value reaches only the targets with an edge from
   that source (and a non-finite query only its own target).
2. Padded sources never send, even when their features are NaN or inf: backends mask their
   edges, and a call whose output shows non-finite padding runs again with the padded keys,
   values and per-edge inputs set to zero (``0 * NaN`` would be NaN).
3. Modules (:class:`~graphattn.GraphAttention`, the transformer layers) zero the features
   of padded nodes at entry when any is non-finite, so that the gradients of the parameters
   stay finite too (a linear layer's weight gradient sums ``x * grad`` over every node).
4. Scores that overflow the input's type (finite inputs, non-finite output) are computed
   again in the next wider type (float16 and bfloat16 in float32, float32 in float64) and
   the output cast back; a float64 call that overflows raises :class:`FloatingPointError`.

The clean path pays one sum of the output (a NaN or inf always reaches it; a sum that
overflows is checked again with the largest magnitude): no copies, no masks. Only a
non-finite output is looked into (see ``functional._run_finite``), and the dense backend of a
graph that is not complete sums its keys and values (rule 1). Under ``torch.compile``
padded inputs are always zeroed (no data-dependent branch) and the overflow check of rule 4
is skipped (it would break the graph).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from .backends._base import AttentionCall

__all__ = [
    "all_finite",
    "bad_rows",
    "may_be_non_finite",
    "mask_padded_inputs",
    "wider_dtype",
    "zero_padded_nodes",
]

_WIDER = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.float32: torch.float64,
}


def all_finite(*tensors: Tensor | None) -> bool:
    """Whether every element of the given tensors (``None`` skipped) is finite.

    One sum per tensor (in at least float32): NaN and inf always reach it. A sum that
    overflows on finite values is checked again with the largest magnitude, so the answer is
    exact.
    """
    for t in tensors:
        if t is None or t.numel() == 0 or not t.dtype.is_floating_point:
            continue
        low = t.dtype in (torch.float16, torch.bfloat16)
        total = (t.sum(dtype=torch.float32) if low else t.sum()).item()
        if not math.isfinite(total) and not math.isfinite(t.abs().amax().item()):
            return False
    return True


def may_be_non_finite(*tensors: Tensor | None) -> bool:
    """``not all_finite(*tensors)``; always True under ``torch.compile``, where the careful
    path (masks, no data-dependent branch) runs every time instead of breaking the graph."""
    return torch.compiler.is_compiling() or not all_finite(*tensors)


def bad_rows(x: Tensor) -> Tensor:
    """Rows (last dim) holding a non-finite value.

    Shapes:
        - x: ``(..., C)``
        - returns ``(...)`` bool
    """
    return ~torch.isfinite(x).all(-1)


def wider_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """The type an overflowing call is computed in again, ``None`` for float64."""
    return _WIDER.get(dtype)


def mask_padded_inputs(call: AttentionCall) -> AttentionCall:
    """The call with the keys, values and per-edge inputs of padded sources set to zero,
    when any of them is non-finite (otherwise the call itself, uncopied).

    Backends mask the edges of padded sources; zeros make sure that a NaN or inf there never
    reaches a real target (``0 * NaN`` is NaN).
    """
    pad = call.graph.key_padding_mask  # (B, Ns) or None
    if pad is None:
        return call
    if not torch.compiler.is_compiling() and all_finite(
        call.k, call.v, call.bias, call.edge_features, call.edge_values
    ):  # (compiled code masks always: no data-dependent branch, no graph break)
        return call
    node = pad[:, None, :, None]  # (B, 1, Ns, 1)
    changes: dict[str, Tensor] = {
        "k": call.k.masked_fill(node, 0.0),  # (B, H, Ns, D)
        "v": call.v.masked_fill(node, 0.0),  # (B, H, Ns, Dv)
    }
    b = call.batch
    if call.bias is not None and call.bias_layout == "dense":
        bias = call.bias.expand(b, -1, -1, -1)  # (B, H or 1, Nd, Ns)
        changes["bias"] = bias.masked_fill(pad[:, None, None, :], 0.0)
    edge_bias = call.bias if call.bias_layout == "edges" else None
    if edge_bias is None and call.edge_features is None and call.edge_values is None:
        return replace(call, **changes)  # no per-edge inputs: no edge list is needed
    edge_pad = pad[:, call.graph.edge_index()[0]]  # (B, E): edges from padded sources
    if edge_bias is not None:
        changes["bias"] = edge_bias.expand(b, -1, -1).masked_fill(edge_pad[..., None], 0.0)
    for name in ("edge_features", "edge_values"):
        t = getattr(call, name)  # (B or 1, E, H, C)
        if t is not None:
            changes[name] = t.expand(b, -1, -1, -1).masked_fill(edge_pad[..., None, None], 0.0)
    return replace(call, **changes)


def zero_padded_nodes(x: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """``x`` with padded nodes' features set to zero when any of ``x`` is non-finite
    (otherwise ``x`` itself, uncopied; compiled code keeps ``x``: no data-dependent branch).

    The padding rule of every graphattn module, public so that a module of your own follows
    it too: call it on the input before the projections, so that NaN or inf in padding can
    reach neither the outputs nor the gradients of real nodes.

    Shapes:
        - x: ``(B, N, C)`` or ``(N, C)``; key_padding_mask: ``(B, N)``, ``(N,)`` or
          ``(1, N)`` bool, True = padded
    """
    if key_padding_mask is None or torch.compiler.is_compiling() or all_finite(x):
        return x
    mask = key_padding_mask.to(x.device)
    if x.dim() == 2 and mask.dim() == 2:
        mask = mask[0]
    return x.masked_fill(mask[..., None], 0.0)
