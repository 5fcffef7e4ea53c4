"""Linear backend: kernel scores (:mod:`graphattn.kernels`) on complete graphs, in time and
memory linear in the number of nodes.

``out_i = phi(q_i) (phi(K)^T V) / phi(q_i) . sum_j phi(k_j)`` per batch sample and head,
plus the self weight of :class:`~graphattn.kernels.SGFormer`. Nothing of size ``Nd x Ns``
is formed, so the weights cannot be returned, and dropout on them is refused.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``D`` head dim,
``Dv`` value head dim, ``F`` features of the kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import AttentionCall, Backend, BackendResult, memory_reasons

__all__ = ["LinearBackend", "linear_attention"]


class LinearBackend(Backend):
    """Serves kernel scores on complete graphs (self and bipartite), with key padding and
    batches. Refuses other scores and graphs, biases and per-edge inputs, returned weights
    and dropout."""

    name = "linear"

    def reasons(self, call: AttentionCall) -> list[str]:
        reasons = []
        if not call.score.kernel:
            reasons.append(f"score {call.score!r} is not a kernel score (graphattn.kernels)")
        if not call.graph.is_complete:
            reasons.append("the graph is not complete (linear attention sums over all sources)")
        if call.bias is not None or call.edge_features is not None or call.edge_values is not None:
            reasons.append("biases and per-edge inputs need the weight of every pair")
        if call.need_weights:
            reasons.append("never forms the Nd x Ns weights (need_weights must be False)")
        if call.dropout_p > 0:
            reasons.append("dropout on the weights needs them (dropout_p must be 0)")
        if not reasons:
            reasons += memory_reasons(call, _memory(call), "features and their sums")
        return reasons

    def run(self, call: AttentionCall) -> BackendResult:
        return BackendResult(linear_attention(call))


def _memory(call: AttentionCall) -> int:
    """Bytes beyond the inputs: query and key features (and their gradients' buffers), the
    ``F x Dv`` sums and the output."""
    b, h, nd, d = call.q.shape
    ns, dv, item = call.k.shape[-2], call.v.shape[-1], call.q.element_size()
    f = getattr(call.score, "num_features", d)
    return b * h * ((nd + ns) * f * 2 + f * (dv + 1) + nd * (dv + 1)) * item


def linear_attention(call: AttentionCall) -> Tensor:
    """The linear backend's computation (see the module docstring).

    A target whose weights sum to exactly zero (every source padded) gets a zero output.

    Shapes:
        - q: ``(B, H, Nd, D)``; k: ``(B, H, Ns, D)``; v: ``(B, H, Ns, Dv)``
        - returns ``(B, H, Nd, Dv)``
    """
    score, q, k, v = call.score, call.q, call.k, call.v
    pad = call.graph.key_padding_mask  # (B, Ns) or None
    phq = score.feature_map(q, query=True)  # (B, H, Nd, F)
    phk = score.feature_map(k, query=False, pad=pad)  # (B, H, Ns, F), padded rows zero
    if pad is not None:
        v = v.masked_fill(pad[:, None, :, None], 0.0)
    # the values with a column of ones: one product gives numerator and normaliser, so that
    # the queries' features are read once (and their gradient is not a sum of two)
    ones = v.new_ones(*v.shape[:-1], 1)  # (B, H, Ns, 1)
    kv = torch.matmul(phk.transpose(-2, -1), torch.cat([v, ones], -1))  # (B, H, F, Dv + 1)
    both = torch.matmul(phq, kv)  # (B, H, Nd, Dv + 1)
    num, den = both[..., :-1], both[..., -1:]  # (B, H, Nd, Dv), (B, H, Nd, 1)
    if score.self_weight:  # SGFormer: each target also receives its own value, weight N
        if pad is None:
            ns = float(k.shape[-2])
            num = num.add_(v, alpha=ns)  # (B, H, N, Dv)
            den = den.add_(ns)
        else:
            n = (~pad).sum(-1).to(v.dtype).view(-1, 1, 1, 1)  # (B, 1, 1, 1) real sources
            num = torch.addcmul(num, n, v)
            den = den + n
    if pad is None:  # every target has sources; weights sum to a positive number
        return num * den.reciprocal()  # a (Nd, 1) reciprocal, then one product per value
    empty = den == 0  # every source of the sample padded: a zero output, not NaN
    out = num / torch.where(empty, 1.0, den)
    return torch.where(empty, 0.0, out)
