"""``AttentionWeights``: attention weights per edge or dense, convertible into each other.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``E`` edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from .graph import Graph

__all__ = ["AttentionWeights"]


@dataclass
class AttentionWeights:
    """Attention weights in one of two layouts, convertible into the other.

    Attributes:
        values: ``(B, E, H)`` per edge, aligned with ``graph.edge_index()``, when
            ``layout == "edges"``; ``(B, H, Nd, Ns)`` when ``layout == "dense"``. The
            batch dimension is absent when the inputs had none.
        graph: the graph the weights live on.
        layout: ``"edges"`` or ``"dense"`` (every backend returns ``graph.weights_layout``).
        batched: whether ``values`` has the batch dimension.

    Weights are taken before dropout; a padded or absent edge has weight 0, and the weights
    of each target's in-edges sum to 1 (or to 0 for a target without in-edges).
    """

    values: Tensor
    graph: Graph
    layout: Literal["edges", "dense"]
    batched: bool = True

    def to_dense(self) -> Tensor:
        """Dense weights ``([B,] H, Nd, Ns)``; duplicated edges are summed."""
        if self.layout == "dense":
            return self.values
        vals = self.values if self.batched else self.values[None]  # (B, E, H)
        b, _, h = vals.shape
        g = self.graph
        src, dst = g.edge_index()
        dense = vals.new_zeros(b, h, g.num_dst * g.num_src)
        dense.index_add_(2, dst * g.num_src + src, vals.permute(0, 2, 1))
        dense = dense.view(b, h, g.num_dst, g.num_src)
        return dense if self.batched else dense[0]

    def to_edges(self) -> Tensor:
        """Per-edge weights ``([B,] E, H)`` aligned with ``graph.edge_index()``. Coming from
        the dense layout, the weight of a duplicated edge is split evenly among its copies
        (exact when the copies share their bias)."""
        if self.layout == "edges":
            return self.values
        vals = self.values if self.batched else self.values[None]  # (B, H, Nd, Ns)
        g = self.graph
        src, dst = g.edge_index()
        per_edge = vals[:, :, dst, src]  # (B, H, E)
        counts = g.edge_counts()
        if counts is not None:
            per_edge = per_edge / counts[dst, src].to(per_edge.dtype)
        per_edge = per_edge.permute(0, 2, 1)  # (B, E, H)
        return per_edge if self.batched else per_edge[0]
