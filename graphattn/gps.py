"""Local + global layers in the GraphGPS style (Rampasek et al., 2022): attention over the
graph's edges and attention over the complete graph, side by side in every layer.

Axis legend: ``B`` batch, ``N`` nodes, ``C`` channels, ``E`` edges.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._checks import check_int
from ._finite import zero_padded_nodes
from .attention import GraphAttention
from .functional import BackendName, ScoreLike
from .graph import Graph
from .layers import Activation, _resolve_activation

__all__ = ["LocalGlobalLayer"]


class LocalGlobalLayer(nn.Module):
    """One GraphGPS-style layer, pre-norm::

        h = norm1(x)
        x = x + dropout(local_attn(h, graph)) + dropout(global_attn(h, complete graph))
        x = x + dropout(linear2(dropout(activation(linear1(norm2(x))))))

    The local branch attends over the graph's in-edges with any score (dot product, GAT,
    GATv2, your own); the global branch attends over the complete graph, exactly (the
    default dot product runs the fused SDPA kernel) or in linear time with a kernel score of
    :mod:`graphattn.kernels` (``FAVOR``, ``SGFormer``), which the ``linear`` backend serves
    with memory ``O(N)``.

    Args:
        embed_dim: model width ``C``.
        num_heads: heads of both attentions.
        local_score: score of the local attention (default: scaled dot product).
        global_score: score of the global attention (default: scaled dot product, exact).
        dim_feedforward: hidden size of the feed-forward block.
        dropout: dropout on both attentions' weights (where served), their outputs and the
            feed-forward block.
        activation: ``"relu"``, ``"gelu"`` or a callable (as in
            :class:`~graphattn.GraphTransformerLayer`).
        layer_norm_eps: LayerNorm epsilon.
        edge_dim: size of edge features for the local branch (``None``: none).
        local_backend: backend of the local attention.
        global_backend: backend of the global attention.

    Shapes:
        - x: ``(N, C)`` or ``(B, N, C)``; returns the same shape.

    Example:
        >>> import torch
        >>> from graphattn.kernels import FAVOR
        >>> layer = LocalGlobalLayer(16, 4, global_score=FAVOR(16, 4), dim_feedforward=32)
        >>> edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
        >>> layer(torch.randn(5, 16), edge_index).shape
        torch.Size([5, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        local_score: ScoreLike = None,
        global_score: ScoreLike = None,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        edge_dim: int | None = None,
        local_backend: BackendName = "auto",
        global_backend: BackendName = "auto",
    ) -> None:
        super().__init__()
        check_int("dim_feedforward", dim_feedforward)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.local_attn = GraphAttention(
            embed_dim,
            num_heads,
            dropout=dropout,
            edge_dim=edge_dim,
            score=local_score,
            backend=local_backend,
        )
        linear_global = getattr(global_score, "kernel", False)  # no weights to drop there
        self.global_attn = GraphAttention(
            embed_dim,
            num_heads,
            dropout=0.0 if linear_global else dropout,
            score=global_score,
            backend=global_backend,
        )
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.linear1 = nn.Linear(embed_dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, embed_dim)
        self.activation = _resolve_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.dropout_local = nn.Dropout(dropout)
        self.dropout_global = nn.Dropout(dropout)
        self.dropout_ff = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        graph: Graph | Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> Tensor:
        """Run the layer.

        Args:
            x: node features.
            graph: the local graph (a :class:`~graphattn.Graph` or an ``edge_index``).
            key_padding_mask: ``(B, N)`` bool, True = padded; padded nodes send nothing in
                either branch.
            edge_attr: edge features ``(E, edge_dim)`` of the local graph.
        """
        x = zero_padded_nodes(x, key_padding_mask)
        h = self.norm1(x)
        local = self.local_attn(h, graph, key_padding_mask=key_padding_mask, edge_attr=edge_attr)
        glob = self.global_attn(h, None, key_padding_mask=key_padding_mask)
        x = x + self.dropout_local(local) + self.dropout_global(glob)  # ([B,] N, C)
        ff = self.linear2(self.dropout(self.activation(self.linear1(self.norm2(x)))))
        return x + self.dropout_ff(ff)

    def reset_parameters(self) -> None:
        """Re-initialise every sub-module."""
        for m in (self.local_attn, self.global_attn):
            m.reset_parameters()
        for m in (self.norm1, self.norm2, self.linear1, self.linear2):
            m.reset_parameters()
