"""Global attention layers with PyG's names and numbers, run by the ``linear`` backend.

:class:`SGFormerAttention` mirrors ``torch_geometric.nn.attention.SGFormerAttention``
(parameter names ``q``, ``k``, ``v``; ``forward(x, mask)`` with PyG's ``mask`` convention,
True = a real node), so that :func:`~graphattn.from_pyg` copies a PyG layer's weights and
gives its outputs.

Axis legend: ``B`` batch, ``N`` nodes, ``C`` channels, ``H`` heads, ``Dh`` head channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_int
from .functional import BackendName, graph_attention
from .graph import Graph
from .kernels import SGFormer

__all__ = ["SGFormerAttention"]


class SGFormerAttention(nn.Module):
    """SGFormer's simple global attention (Wu et al., 2023), linear in ``N``: per head,
    ``out_i = (sum_j (q_hat_i . k_hat_j) v_j + N v_i) / (sum_j q_hat_i . k_hat_j + N)``
    (:class:`~graphattn.kernels.SGFormer`), averaged over heads.

    Args:
        channels: input feature size ``C``.
        heads: number of heads.
        head_channels: channels per head ``Dh`` (the output size).
        qkv_bias: biases in the query, key and value projections.
        backend: ``"auto"`` (the ``linear`` backend) or a registered backend.

    Shapes:
        - x: ``(B, N, C)``; mask: ``(B, N)`` bool, True = a real node (PyG's convention)
        - returns ``(B, N, Dh)``

    Example:
        >>> import torch
        >>> layer = SGFormerAttention(16, heads=2, head_channels=8)
        >>> layer(torch.randn(3, 10, 16)).shape
        torch.Size([3, 10, 8])
    """

    def __init__(
        self,
        channels: int,
        heads: int = 1,
        head_channels: int = 64,
        qkv_bias: bool = False,
        *,
        backend: BackendName = "auto",
    ) -> None:
        super().__init__()
        for name, value in (
            ("channels", channels),
            ("heads", heads),
            ("head_channels", head_channels),
        ):
            check_int(name, value)
        self.channels, self.heads, self.head_channels = channels, heads, head_channels
        self.backend = backend
        inner = heads * head_channels
        self.q = nn.Linear(channels, inner, bias=qkv_bias)
        self.k = nn.Linear(channels, inner, bias=qkv_bias)
        self.v = nn.Linear(channels, inner, bias=qkv_bias)
        self.score = SGFormer()

    def reset_parameters(self) -> None:
        """Re-initialise the projections as ``nn.Linear`` does."""
        for lin in (self.q, self.k, self.v):
            lin.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend from every node to every real node of its sample.

        Args:
            x: node features ``(B, N, C)``.
            mask: ``(B, N)`` bool, True = a real node, False = padding (PyG's convention).
                Padded nodes send nothing and are not counted in ``N``; PyG's layer still
                counts them in its normaliser, so the two agree exactly only without padding.
        """
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, N, channels={self.channels}), got {got}")
        b, n, _ = x.shape
        h, dh = self.heads, self.head_channels
        q, k, v = (lin(x).view(b, n, h, dh).transpose(1, 2) for lin in (self.q, self.k, self.v))
        graph = Graph.complete(n, device=x.device)
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (b, n):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(
                    f"mask must be a bool tensor of shape (B, N) = ({b}, {n}), got {got}"
                )
            graph = graph.pad(key_padding_mask=~mask)
        out = graph_attention(q, k, v, graph, score=self.score, backend=self.backend)
        return out.mean(dim=1)  # (B, N, Dh): PyG averages the heads

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_channels={self.head_channels}"
