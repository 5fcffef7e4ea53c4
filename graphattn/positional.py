"""Positional and structural encodings: absolute, rotary, relative biases, graph encodings.

Three ways to tell attention where a node is, each of which works on any graph:

- **absolute** encodings are added to the node features before the layers:
  :func:`sinusoidal_encoding` / :class:`SinusoidalPositionalEncoding`,
  :class:`LearnedPositionalEncoding`, :func:`sinusoidal_2d` for image grids, and the graph
  encodings :func:`laplacian_eigenvector_pe` (+ :class:`LaplacianPE`),
  :func:`random_walk_pe` and, for graphs of any size, :func:`degree_encoding` and
  :func:`clustering_encoding`;
- **rotary** encodings rotate queries and keys so that ``<q_i, k_j>`` depends on the offset
  between positions only: :class:`RotaryEmbedding` (1-D) and :class:`AxialRotaryEmbedding`
  (2-D); pass one as ``rotary=`` to :class:`~graphattn.GraphAttention` or the layers;
- **relative biases** are added to the score of each edge: :class:`RelativePositionBias1D`
  (T5 buckets), :class:`RelativePositionBias2D` (Swin offsets) and
  :class:`ShortestPathBias` (Graphormer); they return a per-edge bias ``(E, H)`` for
  ``attn_bias=`` of :func:`~graphattn.graph_attention` / :class:`~graphattn.GraphAttention`,
  or a dense ``(H, Nd, Ns)`` bias for the complete graph.

Axis legend: ``B`` batch, ``N`` nodes (positions), ``Nd`` targets, ``Ns`` sources, ``E``
edges, ``H`` heads, ``D`` feature dim, ``Dh`` head dim, ``F`` rotary frequencies
(``Dh / 2``), ``K`` number of graph encodings per node.

Edges follow the package's convention: ``edge_index[0]`` holds sources ``j``,
``edge_index[1]`` targets ``i`` (PyG's). The graph encodings build a dense ``(N, N)``
adjacency and are meant for graphs of up to a few thousand nodes, except
:func:`degree_encoding`, which counts edges, and :func:`clustering_encoding`, which counts
triangles with a sparse adjacency.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_int
from .graph import Graph

__all__ = [
    "sinusoidal_encoding",
    "sinusoidal_2d",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "RotaryEmbedding",
    "AxialRotaryEmbedding",
    "t5_relative_position_bucket",
    "RelativePositionBias1D",
    "RelativePositionBias2D",
    "laplacian_eigenvector_pe",
    "laplacian_eigenpairs",
    "LaplacianEigenpairs",
    "LaplacianPE",
    "random_walk_pe",
    "degree_encoding",
    "clustering_encoding",
    "shortest_path_distance",
    "ShortestPathBias",
]


# ================================================================== absolute (added to x)


def _sinusoid(positions: Tensor, dim: int, base: float) -> Tensor:
    """``[sin(p w_0), cos(p w_0), sin(p w_1), cos(p w_1), ...]`` with ``w_i = base^(-2i/dim)``.

    Shapes:
        - positions: ``(*)``; returns ``(*, dim)`` float32.
    """
    half = (dim + 1) // 2
    freq = base ** (-torch.arange(half, dtype=torch.float64, device=positions.device) * 2 / dim)
    angles = positions.to(torch.float64)[..., None] * freq  # (*, ceil(D/2))
    enc = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (*, 2 * ceil(D/2))
    return enc[..., :dim].float()


def sinusoidal_encoding(
    num_positions: int,
    dim: int,
    *,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The sinusoidal position encoding of "Attention Is All You Need" (Vaswani et al., 2017).

    ``PE[p, 2i] = sin(p / base^(2i/D))`` and ``PE[p, 2i+1] = cos(p / base^(2i/D))``; position 0
    is ``[0, 1, 0, 1, ...]``. An odd ``dim`` drops the last cosine.

    Args:
        num_positions: number of positions ``N``.
        dim: encoding size ``D``.
        base: the wavelength scale (10000 in the paper).

    Shapes:
        - returns ``(N, D)``.

    Example:
        >>> sinusoidal_encoding(3, 4)[0]
        tensor([0., 1., 0., 1.])
    """
    check_int("dim", dim)
    check_int("num_positions", num_positions, minimum=0)
    pos = torch.arange(num_positions, device=device)
    return _sinusoid(pos, dim, base).to(dtype or torch.get_default_dtype())  # (N, D)


def sinusoidal_2d(
    height: int,
    width: int,
    dim: int,
    *,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Fixed 2-D sinusoidal encoding of a row-major ``height x width`` grid (as in MAE / ViT
    sin-cos embeddings): the first ``D/2`` channels are the 1-D encoding of the row, the last
    ``D/2`` that of the column.

    Args:
        height: grid rows.
        width: grid columns.
        dim: encoding size ``D``, divisible by 4.

    Shapes:
        - returns ``(height * width, D)``; row ``r * width + c`` encodes cell ``(r, c)``.
    """
    check_int("height", height)
    check_int("width", width)
    check_int("dim", dim)
    if dim % 4 != 0:
        raise ValueError(f"dim must be divisible by 4 for a 2-D encoding, got {dim}")
    rows = torch.arange(height, device=device).repeat_interleave(width)  # (N,)
    cols = torch.arange(width, device=device).repeat(height)  # (N,)
    enc = torch.cat([_sinusoid(rows, dim // 2, base), _sinusoid(cols, dim // 2, base)], dim=-1)
    return enc.to(dtype or torch.get_default_dtype())  # (N, D)


def _positions(x: Tensor, positions: Tensor | None) -> Tensor:
    """Default or checked positions for node features ``x`` ``([B,] N, D)``."""
    n = x.shape[-2]
    if positions is None:
        return torch.arange(n, device=x.device)  # (N,)
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions must be a tensor, got {type(positions).__name__}")
    ok = positions.shape[-1:] == (n,) and (
        positions.dim() == 1 or (positions.dim() == 2 and x.dim() == 3)
    )
    if not ok:
        raise ValueError(
            f"positions must have shape (N={n},) or (B, N={n}) for x of shape "
            f"{tuple(x.shape)}, got {tuple(positions.shape)}"
        )
    return positions.to(x.device)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds :func:`sinusoidal_encoding` to node features (no parameters).

    Args:
        dim: feature size ``D``.
        base: the wavelength scale.

    Shapes:
        - x: ``(N, D)`` or ``(B, N, D)``; positions: ``(N,)`` or ``(B, N)`` (default
          ``0..N-1``); returns the shape of ``x``.
    """

    def __init__(self, dim: int, *, base: float = 10000.0) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.base = float(base)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """``x`` plus the encoding of ``positions`` (default ``0..N-1``)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"x has feature size {x.shape[-1]} but dim is {self.dim}")
        pos = _positions(x, positions)  # (N,) or (B, N)
        return x + _sinusoid(pos, self.dim, self.base).to(x.dtype)  # ([B,] N, D)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base:g}"


class LearnedPositionalEncoding(nn.Module):
    """A learned vector per position, added to node features (BERT / GPT-2 style).

    Args:
        max_positions: number of positions with a vector (positions ``0..max_positions-1``).
        dim: feature size ``D``.

    Shapes:
        - x: ``(N, D)`` or ``(B, N, D)``; positions: ``(N,)`` or ``(B, N)`` integer (default
          ``0..N-1``); returns the shape of ``x``.
    """

    def __init__(
        self,
        max_positions: int,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.max_positions = check_int("max_positions", max_positions)
        self.dim = check_int("dim", dim)
        self.weight = nn.Parameter(torch.empty(max_positions, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal with standard deviation 0.02 (GPT-2's initialisation)."""
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """``x`` plus the vectors of ``positions`` (default ``0..N-1``); a position outside
        ``[0, max_positions)`` raises :class:`IndexError` naming it."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"x has feature size {x.shape[-1]} but dim is {self.dim}")
        pos = _positions(x, positions)  # (N,) or (B, N)
        if pos.dtype.is_floating_point or pos.dtype == torch.bool:
            raise TypeError(f"positions must be integers, got {pos.dtype}")
        if pos.numel():
            lo, hi = int(pos.min()), int(pos.max())
            if lo < 0 or hi >= self.max_positions:
                bad = hi if hi >= self.max_positions else lo
                raise IndexError(
                    f"position {bad} is out of range for max_positions={self.max_positions} "
                    f"(positions must lie in [0, {self.max_positions - 1}])"
                )
        return x + self.weight[pos].to(x.dtype)  # ([B,] N, D)

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}, dim={self.dim}"


# ================================================================== rotary (rotates q and k


def _rotate(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate the pairs ``(x[..., f], x[..., f + F])`` by ``angles[..., f]`` (the "rotate half"
    layout of GPT-NeoX / LLaMA in Hugging Face).

    Shapes:
        - x: ``(..., N, 2F)``; angles: broadcastable to ``(..., N, F)``; returns ``x``'s shape.
    """
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # (..., N, F)
    x1, x2 = x.chunk(2, dim=-1)  # 2 x (..., N, F)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _rotary_angles(pos: Tensor, inv_freq: Tensor, x: Tensor, name: str) -> Tensor:
    """Angles ``pos * inv_freq`` shaped to broadcast against ``x`` ``(..., N, Dh)``.

    ``pos`` is ``(N,)`` or ``(B, N)`` (the latter needs ``x`` of shape ``(B, H, N, Dh)``)."""
    n = x.shape[-2]
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(pos).__name__}")
    if pos.shape[-1:] != (n,) or pos.dim() not in (1, 2) or (pos.dim() == 2 and x.dim() != 4):
        raise ValueError(
            f"{name} must have shape (N={n},) or (B, N={n}) for a tensor of shape "
            f"{tuple(x.shape)}, got {tuple(pos.shape)}"
        )
    inv_freq = inv_freq.float()  # (F,) even if the module was cast to half precision
    angles = pos.to(device=x.device, dtype=torch.float32)[..., None] * inv_freq  # ([B,] N, F)
    return angles if pos.dim() == 1 else angles[:, None]  # (N, F) or (B, 1, N, F)


def _pair_positions(
    q: Tensor, k: Tensor, q_pos: Tensor | None, k_pos: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """Resolve the positions of queries and keys; ``None`` means ``0..N-1``."""
    nq, nk = q.shape[-2], k.shape[-2]
    if k_pos is None and q_pos is not None and nq == nk:
        k_pos = q_pos  # self-attention: one set of positions
    if nq != nk and (q_pos is None or k_pos is None):
        raise ValueError(
            f"q has {nq} nodes but k has {nk}: for cross-attention pass both q_pos and k_pos "
            "(the position of each query and each key)"
        )
    return q_pos, k_pos


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al., 2021, "RoFormer") for queries and keys.

    Channel pair ``(f, f + Dh/2)`` of a node at position ``p`` is rotated by the angle
    ``p * base^(-2f/Dh)`` (the "rotate half" layout of GPT-NeoX / Hugging Face LLaMA). Rotations
    keep norms and make ``<rope(q, p_i), rope(k, p_j)>`` depend on ``p_i - p_j`` only.

    Call it as ``q, k = rope(q, k)`` or pass it as ``rotary=rope`` to
    :class:`~graphattn.GraphAttention`; for explicit positions use
    ``functools.partial(rope, q_pos=..., k_pos=...)``.

    Args:
        head_dim: per-head size ``Dh`` (even).
        base: the wavelength scale.

    Shapes:
        - q: ``(..., Nq, Dh)``, typically ``(B, H, Nq, Dh)``; k: ``(..., Nk, Dh)``
        - q_pos: ``(Nq,)`` or ``(B, Nq)``; k_pos: ``(Nk,)`` or ``(B, Nk)``; default ``0..N-1``
          (then ``Nq`` must equal ``Nk``); for self-attention ``k_pos`` defaults to ``q_pos``.
        - returns q, k with unchanged shapes.

    Example:
        >>> rope = RotaryEmbedding(8)
        >>> q, k = rope(torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8))
        >>> q.shape
        torch.Size([2, 4, 5, 8])
    """

    inv_freq: Tensor

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        check_int("head_dim", head_dim)
        if head_dim % 2 != 0:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
        self.head_dim, self.base = head_dim, float(base)
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (F,)

    def rotate(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate one tensor ``(..., N, Dh)`` at ``positions`` ``(N,)`` / ``(B, N)``."""
        return self._rotate(x, positions, "x", "positions")

    def forward(
        self, q: Tensor, k: Tensor, q_pos: Tensor | None = None, k_pos: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Rotate ``q`` at ``q_pos`` and ``k`` at ``k_pos`` (shapes in the class docstring)."""
        q_pos, k_pos = _pair_positions(q, k, q_pos, k_pos)
        return self._rotate(q, q_pos, "q", "q_pos"), self._rotate(k, k_pos, "k", "k_pos")

    def _rotate(self, x: Tensor, positions: Tensor | None, name: str, pos_name: str) -> Tensor:
        if x.shape[-1] != self.head_dim:
            raise ValueError(
                f"{name} has head dim {x.shape[-1]} but this rotary embedding has "
                f"head_dim={self.head_dim}"
            )
        pos = torch.arange(x.shape[-2], device=x.device) if positions is None else positions
        return _rotate(x, _rotary_angles(pos, self.inv_freq, x, pos_name))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}"


class AxialRotaryEmbedding(nn.Module):
    """2-D rotary embedding for nodes on a ``height x width`` grid: the first half of each
    head's channels is rotated by the node's row, the second half by its column (each half in
    :class:`RotaryEmbedding`'s layout), so scores depend on the 2-D offset only.

    Args:
        head_dim: per-head size ``Dh``, divisible by 4.
        height: grid rows (default positions are the row-major cells of the grid).
        width: grid columns.
        base: the wavelength scale.

    Shapes:
        - q: ``(..., Nq, Dh)``; k: ``(..., Nk, Dh)``
        - q_pos / k_pos: ``(N, 2)`` or ``(B, N, 2)`` (row, column) coordinates; default the
          row-major grid, which needs ``N == height * width``.
        - returns q, k with unchanged shapes.
    """

    inv_freq: Tensor

    def __init__(self, head_dim: int, height: int, width: int, base: float = 10000.0) -> None:
        super().__init__()
        check_int("head_dim", head_dim)
        if head_dim % 4 != 0:
            raise ValueError(f"head_dim must be divisible by 4 for axial rotary, got {head_dim}")
        self.head_dim = head_dim
        self.height = check_int("height", height)
        self.width = check_int("width", width)
        self.base = float(base)
        half = head_dim // 2
        inv_freq = base ** (-torch.arange(0, half, 2, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (Dh / 4,)

    def grid_positions(self, device: torch.device | str | None = None) -> Tensor:
        """``(height * width, 2)`` (row, column) of the row-major grid cells."""
        rows = torch.arange(self.height, device=device).repeat_interleave(self.width)
        cols = torch.arange(self.width, device=device).repeat(self.height)
        return torch.stack([rows, cols], dim=-1)  # (N, 2)

    def rotate(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate one tensor ``(..., N, Dh)`` at ``(row, column)`` positions ``([B,] N, 2)``."""
        n = x.shape[-2]
        if x.shape[-1] != self.head_dim:
            raise ValueError(
                f"x has head dim {x.shape[-1]} but this rotary embedding has "
                f"head_dim={self.head_dim}"
            )
        if positions is None:
            if n != self.height * self.width:
                raise ValueError(
                    f"x has {n} nodes but the grid has height * width = {self.height} * "
                    f"{self.width} = {self.height * self.width}; pass positions (N, 2)"
                )
            positions = self.grid_positions(x.device)
        if not isinstance(positions, Tensor) or positions.shape[-1] != 2:
            raise ValueError(
                "positions must have shape (N, 2) or (B, N, 2) (row, column), got "
                f"{tuple(getattr(positions, 'shape', ()))}"
            )
        rows = _rotary_angles(positions[..., 0], self.inv_freq, x, "row positions")
        cols = _rotary_angles(positions[..., 1], self.inv_freq, x, "column positions")
        xr, xc = x.chunk(2, dim=-1)  # 2 x (..., N, Dh/2)
        return torch.cat([_rotate(xr, rows), _rotate(xc, cols)], dim=-1)

    def forward(
        self, q: Tensor, k: Tensor, q_pos: Tensor | None = None, k_pos: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Rotate ``q`` and ``k`` at their ``(row, column)`` positions (default: the grid)."""
        q_pos, k_pos = _pair_positions(q, k, q_pos, k_pos)
        return self.rotate(q, q_pos), self.rotate(k, k_pos)

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, height={self.height}, width={self.width}, "
            f"base={self.base:g}"
        )


# ================================================================== relative biases (per edge


def _edge_index_of(graph: Graph | Tensor) -> Tensor:
    if isinstance(graph, Graph):
        return graph.edge_index()
    if isinstance(graph, Tensor):
        if graph.dim() != 2 or graph.shape[0] != 2 or graph.dtype.is_floating_point:
            raise ValueError(
                f"edge_index must be an integer tensor of shape (2, E), got "
                f"{tuple(graph.shape)} {graph.dtype}"
            )
        return graph.long()
    raise TypeError(f"graph must be a graphattn.Graph or an edge_index, got {type(graph).__name__}")


def t5_relative_position_bucket(
    relative_position: Tensor,
    *,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> Tensor:
    """T5's bucket of a relative position ``key - query`` (Raffel et al., 2020; the function
    ``_relative_position_bucket`` of the T5 code): exact buckets for small distances,
    logarithmically wider ones up to ``max_distance``, and with ``bidirectional`` separate
    buckets for keys after the query (``relative_position > 0``).

    Shapes:
        - relative_position: any shape, integer; returns the same shape, int64 in
          ``[0, num_buckets)``.
    """
    rel = relative_position.long()
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets
        rel = rel.abs()
    else:
        rel = -rel.clamp(max=0)
    max_exact = num_buckets // 2
    is_small = rel < max_exact
    large = (
        max_exact
        + (
            torch.log(rel.float().clamp(min=1) / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).long()
    )
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, rel, large)


class RelativePositionBias1D(nn.Module):
    """T5's learned relative position bias, one scalar per head and distance bucket, as a
    per-edge score bias. An edge ``j -> i`` has relative position ``pos[j] - pos[i]``
    (source minus target, T5's ``memory - query``).

    Args:
        num_heads: ``H``.
        num_buckets: number of distance buckets (T5: 32).
        max_distance: distances beyond this share the last bucket (T5: 128).
        bidirectional: separate buckets for sources after the target (encoder); ``False``
            gives every source after the target the bucket of distance 0 (decoder).

    Shapes:
        - ``forward(graph)``: ``(E, H)`` aligned with ``graph.edge_index()``.
        - ``dense(Nd, Ns)``: ``(H, Nd, Ns)`` for the complete graph.
        - dst_pos: ``(Nd,)``, src_pos: ``(Ns,)`` integer positions (default the node indices).

    Example:
        >>> from graphattn import Graph, graph_attention
        >>> rpb = RelativePositionBias1D(num_heads=4)
        >>> g = Graph.window(10, radius=2)
        >>> rpb(g).shape
        torch.Size([44, 4])
    """

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads)
        self.num_buckets = check_int("num_buckets", num_buckets)
        self.max_distance = check_int("max_distance", max_distance)
        self.bidirectional = bool(bidirectional)
        least = 4 if bidirectional else 2
        if num_buckets < least:
            raise ValueError(
                f"num_buckets must be at least {least} (bidirectional={bidirectional}), "
                f"got {num_buckets}"
            )
        exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
        if max_distance <= exact:
            raise ValueError(
                f"max_distance ({max_distance}) must exceed the exact range ({exact} buckets)"
            )
        self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal with standard deviation 0.02."""
        nn.init.normal_(self.relative_attention_bias.weight, std=0.02)

    def bucket(self, relative_position: Tensor) -> Tensor:
        """The bucket of each relative position (see :func:`t5_relative_position_bucket`)."""
        return t5_relative_position_bucket(
            relative_position,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )

    def forward(
        self,
        graph: Graph | Tensor,
        *,
        dst_pos: Tensor | None = None,
        src_pos: Tensor | None = None,
    ) -> Tensor:
        """The bias of every edge of ``graph`` ``(E, H)``, from the bucket of its relative
        position ``src - dst`` (node indices, or ``src_pos`` / ``dst_pos`` when given)."""
        src, dst = _edge_index_of(graph)  # (E,), (E,)
        ps = src if src_pos is None else src_pos.to(src.device).long()[src]
        pd = dst if dst_pos is None else dst_pos.to(dst.device).long()[dst]
        return self.relative_attention_bias(self.bucket(ps - pd))  # (E, H)

    def dense(
        self, num_dst: int, num_src: int | None = None, *, device: torch.device | str | None = None
    ) -> Tensor:
        """The bias of the complete graph ``(H, Nd, Ns)`` (what T5's ``compute_bias`` returns
        without its batch dim)."""
        num_src = num_dst if num_src is None else num_src
        device = device or self.relative_attention_bias.weight.device
        rel = (
            torch.arange(num_src, device=device)[None]
            - torch.arange(num_dst, device=device)[:, None]
        )  # (Nd, Ns): j - i
        return self.relative_attention_bias(self.bucket(rel)).permute(2, 0, 1)  # (H, Nd, Ns)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
            f"max_distance={self.max_distance}, bidirectional={self.bidirectional}"
        )


class RelativePositionBias2D(nn.Module):
    """A learned bias per head and 2-D offset between the cells of a row-major
    ``height x width`` grid (Swin Transformer, Liu et al., 2021), as a per-edge score bias.

    The table has ``(2 * height - 1) * (2 * width - 1)`` rows, laid out as Swin's
    ``relative_position_bias_table``: the offset of edge ``j -> i`` is
    ``(row_i - row_j, col_i - col_j)`` (target minus source, as in Swin), so Swin weights load
    unchanged.

    Args:
        num_heads: ``H``.
        height: grid rows.
        width: grid columns.

    Shapes:
        - ``forward(graph)``: ``(E, H)`` aligned with ``graph.edge_index()``; node ``r * width
          + c`` is cell ``(r, c)``.
        - ``dense()``: ``(H, N, N)`` with ``N = height * width``.
    """

    def __init__(self, num_heads: int, height: int, width: int) -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads)
        self.height = check_int("height", height)
        self.width = check_int("width", width)
        num_offsets = (2 * height - 1) * (2 * width - 1)
        self.relative_position_bias_table = nn.Parameter(torch.empty(num_offsets, num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated normal with standard deviation 0.02 (Swin's initialisation)."""
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _index(self, src: Tensor, dst: Tensor) -> Tensor:
        """Table row of each ``(src, dst)`` pair."""
        w = self.width
        dr = dst // w - src // w + self.height - 1  # in [0, 2h - 2]
        dc = dst % w - src % w + w - 1  # in [0, 2w - 2]
        return dr * (2 * w - 1) + dc

    def forward(self, graph: Graph | Tensor) -> Tensor:
        """The bias of every edge of ``graph`` ``(E, H)`` over the grid's cells, from the
        table row of its 2-D offset."""
        n = self.height * self.width
        if isinstance(graph, Graph) and (graph.num_dst != n or graph.num_src != n):
            raise ValueError(
                f"graph has num_dst={graph.num_dst}, num_src={graph.num_src} but the grid has "
                f"height * width = {self.height} * {self.width} = {n} cells"
            )
        src, dst = _edge_index_of(graph)  # (E,), (E,)
        if src.numel() and int(torch.maximum(src.max(), dst.max())) >= n:
            hi = int(torch.maximum(src.max(), dst.max()))
            raise IndexError(
                f"edge_index has node {hi}, out of range for the {self.height} x {self.width} "
                f"grid ({n} cells)"
            )
        return self.relative_position_bias_table[self._index(src, dst)]  # (E, H)

    def dense(self) -> Tensor:
        """The bias of the complete graph over all cells, ``(H, N, N)``."""
        n = self.height * self.width
        idx = torch.arange(n, device=self.relative_position_bias_table.device)
        table_idx = self._index(idx[None, :], idx[:, None])  # (Nd, Ns)
        return self.relative_position_bias_table[table_idx].permute(2, 0, 1)  # (H, N, N)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, height={self.height}, width={self.width}"


# ================================================================== graph encodings


def _square_edges(graph: Graph | Tensor, num_nodes: int | None) -> tuple[Tensor, Tensor, int]:
    """Sources, targets and ``N`` of a square graph, checked against ``num_nodes``."""
    if isinstance(graph, Graph):
        if graph.num_dst != graph.num_src:
            raise ValueError(
                f"graph encodings need a square graph, got num_dst={graph.num_dst}, "
                f"num_src={graph.num_src}"
            )
        if num_nodes is not None and num_nodes != graph.num_dst:
            raise ValueError(f"num_nodes={num_nodes} but the graph has {graph.num_dst} nodes")
        num_nodes = graph.num_dst
    src, dst = _edge_index_of(graph)
    if num_nodes is None:
        num_nodes = int(torch.maximum(src.max(), dst.max())) + 1 if src.numel() else 0
    check_int("num_nodes", num_nodes, minimum=0)
    if src.numel() and int(torch.maximum(src.max(), dst.max())) >= num_nodes:
        hi = int(torch.maximum(src.max(), dst.max()))
        raise IndexError(f"edge_index has node {hi}, out of range for num_nodes={num_nodes}")
    return src, dst, num_nodes


def _square_csr(rows: Tensor, cols: Tensor, values: Tensor, n: int) -> Tensor:
    """The sparse CSR ``(N, N)`` matrix with ``values`` at ``(rows, cols)``, duplicates
    summed (without torch's "sparse CSR support is in beta" warning).

    Shapes:
        - rows, cols, values: ``(E,)``; returns ``(N, N)``, ``values``' dtype
    """
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr()


def _dense_adjacency(graph: Graph | Tensor, num_nodes: int | None) -> tuple[Tensor, int]:
    """``A[i, j]`` = number of copies of edge ``i -> j`` (float64, rows = sources)."""
    src, dst, num_nodes = _square_edges(graph, num_nodes)
    adj = torch.zeros(num_nodes * num_nodes, dtype=torch.float64, device=src.device)
    adj.index_add_(
        0, src * num_nodes + dst, torch.ones(src.numel(), dtype=adj.dtype, device=adj.device)
    )
    return adj.view(num_nodes, num_nodes), num_nodes  # (N, N)


def laplacian_eigenvector_pe(
    graph: Graph | Tensor,
    num_nodes: int | None = None,
    k: int = 8,
    *,
    return_eigenvalues: bool = False,
) -> Tensor:
    """Laplacian eigenvector positional encoding (Dwivedi et al., 2020, "Benchmarking Graph
    Neural Networks"; PyG's ``AddLaplacianEigenvectorPE``).

    The graph is made undirected (``A + A^T``, self-loops dropped; duplicated edges weigh
    more), ``L = I - D^{-1/2} A D^{-1/2}`` (isolated nodes get ``L_ii = 1``), and the
    eigenvectors of the ``k`` smallest eigenvalues after the first are returned. Computed
    densely with ``torch.linalg.eigh`` in float64: meant for graphs of up to a few thousand
    nodes; for a batch of graphs call it per graph. Eigenvectors have an arbitrary sign (see
    :class:`LaplacianPE`).

    Args:
        graph: a square :class:`~graphattn.Graph` or an ``edge_index`` ``(2, E)``.
        num_nodes: ``N`` (default: the graph's, or ``max index + 1``).
        k: number of eigenvectors ``K``; when ``K >= N`` the missing columns are zeros.
        return_eigenvalues: deprecated: ``True`` returns ``(eigenvectors, eigenvalues)``,
            with a ``FutureWarning``; call :func:`laplacian_eigenpairs` instead.

    Shapes:
        - returns ``(N, K)`` float32.
    """
    pairs = laplacian_eigenpairs(graph, num_nodes, k)
    if return_eigenvalues:
        warnings.warn(
            "laplacian_eigenvector_pe(..., return_eigenvalues=True) is deprecated (one return "
            "type per function): call laplacian_eigenpairs(...), which returns both",
            FutureWarning,
            stacklevel=2,
        )
        return pairs
    return pairs.vectors


class LaplacianEigenpairs(NamedTuple):
    """What :func:`laplacian_eigenpairs` returns (unpacks as ``vectors, values``).

    Attributes:
        vectors: the eigenvectors ``(N, K)`` float32, zero columns where ``K >= N``.
        values: their eigenvalues ``(K,)`` float32, ascending, zeros for padding.
    """

    vectors: Tensor
    values: Tensor


def laplacian_eigenpairs(
    graph: Graph | Tensor, num_nodes: int | None = None, k: int = 8
) -> LaplacianEigenpairs:
    """The eigenvectors of :func:`laplacian_eigenvector_pe` with their eigenvalues (e.g. for
    SignNet-style encoders or a spectral filter).

    Args:
        graph: a square :class:`~graphattn.Graph` or an ``edge_index`` ``(2, E)``.
        num_nodes: ``N`` (default: the graph's, or ``max index + 1``).
        k: number of eigenpairs ``K`` after the first (the constant eigenvector).

    Shapes:
        - returns ``vectors`` ``(N, K)`` and ``values`` ``(K,)``, float32.
    """
    check_int("k", k)
    adj, n = _dense_adjacency(graph, num_nodes)
    adj = adj + adj.T
    adj.fill_diagonal_(0.0)
    deg = adj.sum(1)  # (N,)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-300).rsqrt(), 0.0)  # (N,)
    lap = torch.eye(n, dtype=adj.dtype, device=adj.device) - inv_sqrt[:, None] * adj * inv_sqrt
    evals, evecs = torch.linalg.eigh(lap)  # ascending: (N,), (N, N)
    take = min(k, max(n - 1, 0))
    pe = evecs.new_zeros(n, k)
    pe[:, :take] = evecs[:, 1 : 1 + take]
    vals = evals.new_zeros(k)
    vals[:take] = evals[1 : 1 + take]
    return LaplacianEigenpairs(pe.float(), vals.float())


class LaplacianPE(nn.Module):
    """Projects Laplacian eigenvectors to features, with a random sign flip per eigenvector
    (and per sample) during training, since an eigenvector's sign is arbitrary (Dwivedi et
    al., 2020).

    Args:
        k: number of eigenvectors ``K`` (see :func:`laplacian_eigenvector_pe`).
        dim: output size ``D``.

    Shapes:
        - eigvecs: ``(N, K)`` or ``(B, N, K)``; returns ``(N, D)`` or ``(B, N, D)``, to add to
          the node features.
    """

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.k = check_int("k", k)
        self.dim = check_int("dim", dim)
        self.proj = nn.Linear(k, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The projection's ``nn.Linear`` initialisation."""
        self.proj.reset_parameters()

    def forward(self, eigvecs: Tensor) -> Tensor:
        """Project ``eigvecs`` (signs flipped at random in training) to ``([B,] N, D)``."""
        if eigvecs.dim() not in (2, 3) or eigvecs.shape[-1] != self.k:
            raise ValueError(
                f"eigvecs must have shape (N, K={self.k}) or (B, N, K={self.k}), got "
                f"{tuple(eigvecs.shape)}"
            )
        if self.training:
            shape = (self.k,) if eigvecs.dim() == 2 else (eigvecs.shape[0], 1, self.k)
            flips = torch.randint(0, 2, shape, device=eigvecs.device) * 2 - 1  # ([B, 1,] K)
            eigvecs = eigvecs * flips.to(eigvecs.dtype)
        return self.proj(eigvecs)  # ([B,] N, D)

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}"


def random_walk_pe(
    graph: Graph | Tensor, num_nodes: int | None = None, k: int = 8, *, block: int | None = None
) -> Tensor:
    """Random-walk structural encoding (Dwivedi et al., 2022, "Graph Neural Networks with
    Learnable Structural and Positional Representations"; PyG's ``AddRandomWalkPE``): the
    probability that a random walk from each node is back at that node after ``1..k`` steps.

    Walks follow edges from source to target (``edge_index[0] -> edge_index[1]``), each
    out-edge taken with equal probability (a duplicated edge counts as often as it appears);
    a node without out-edges stops the walk.

    Sparse: the walk matrix is kept as a sparse ``(N, N)`` matrix and multiplied into
    ``block`` columns of the identity at a time, ``K`` products of ``O(E)`` per column, so the
    time is ``O(K E N)`` and the memory ``O(E + N block)``.

    Args:
        graph: a square :class:`~graphattn.Graph` or an ``edge_index`` ``(2, E)``.
        num_nodes: ``N`` (default: the graph's, or ``max index + 1``).
        k: number of steps ``K``.
        block: columns per product (default: as many as keep one ``(N, block)`` float64
            buffer within 128 MB; a product holds two).

    Shapes:
        - returns ``(N, K)`` float32: column ``t - 1`` is the diagonal of ``P^t``,
          ``P = D_out^{-1} A``.
    """
    check_int("k", k)
    src, dst, n = _square_edges(graph, num_nodes)
    block = max(1, (1 << 24) // max(n, 1)) if block is None else check_int("block", block)
    out = torch.zeros(n, k, dtype=torch.float64, device=src.device)  # (N, K)
    if n == 0:
        return out.float()
    out_degree = torch.bincount(src, minlength=n).clamp(min=1).double()  # (N,)
    w = 1.0 / out_degree[src]  # (E,) P[i, j]: the chance of the step i -> j
    walk = _square_csr(src, dst, w, n)  # (N, N), duplicates summed
    for start in range(0, n, block):
        cols = torch.arange(start, min(n, start + block), device=src.device)  # (B,)
        at = torch.arange(cols.numel(), device=src.device)  # (B,)
        x = torch.zeros(n, cols.numel(), dtype=torch.float64, device=src.device)  # (N, B)
        x[cols, at] = 1.0
        for step in range(k):
            x = walk @ x  # (N, B): P^(step+1)[:, cols]
            out[cols, step] = x[cols, at]
    return out.float()  # (N, K)


def degree_encoding(graph: Graph | Tensor, num_nodes: int | None = None) -> Tensor:
    """Degree encoding: each node's ``log(1 + in-degree)``, standardised over the nodes
    (zero mean, unit standard deviation). Graphormer's centrality encoding (Ying et al.,
    2021) adds a learned embedding per degree; this is its one-column, any-degree form, to
    append to the node features. Softmax attention averages a node's messages, so without
    it a node cannot tell 3 neighbours from 300.

    Counts edges into each target (``edge_index[1]``), without self-loops; a duplicated edge
    counts as often as it appears. Sparse (``O(E)``), so it suits graphs of any size. When
    every node has the same in-degree the encoding carries nothing and is all zeros.

    Args:
        graph: a square :class:`~graphattn.Graph` or an ``edge_index`` ``(2, E)``.
        num_nodes: ``N`` (default: the graph's, or ``max index + 1``).

    Shapes:
        - returns ``(N, 1)`` float32
    """
    src, dst, num_nodes = _square_edges(graph, num_nodes)
    deg = torch.bincount(dst[src != dst], minlength=num_nodes)  # (N,) in-degree, no self-loops
    log_deg = torch.log1p(deg.double())  # (N,)
    if num_nodes < 2 or bool((log_deg == log_deg[0]).all()):
        return torch.zeros(num_nodes, 1, device=dst.device)  # nothing to tell the nodes apart
    return ((log_deg - log_deg.mean()) / log_deg.std()).float()[:, None]  # (N, 1)


def clustering_encoding(
    graph: Graph | Tensor, num_nodes: int | None = None, *, block: int = 1024
) -> Tensor:
    """Clustering encoding: each node's local clustering coefficient, the fraction of pairs
    of its neighbours that are neighbours themselves (``2 T_i / (d_i (d_i - 1))`` with
    ``T_i`` the triangles through node ``i``; networkx's ``clustering``). Attention, like
    any message passing no stronger than the 1-WL test, cannot count triangles; this tells
    a node in a clique from one whose neighbours do not know each other, which neither its
    features nor :func:`degree_encoding` can.

    The graph is taken as undirected and simple: an edge in either direction joins two
    nodes, duplicates count once, self-loops are dropped. A node with fewer than two
    neighbours gets 0. Exact, computed without an ``(N, N)`` matrix: the sparse adjacency
    times ``block`` of its columns at a time, so memory is ``O(E + N * block)`` and time
    ``O(E * N)`` multiply-adds (8 s on one core for Tolokers' 11,758 nodes and 519,000
    undirected edges, 0.1 s for Cora).

    Args:
        graph: a square :class:`~graphattn.Graph` or an ``edge_index`` ``(2, E)``.
        num_nodes: ``N`` (default: the graph's, or ``max index + 1``).
        block: columns of the adjacency per step (memory ``N * block`` floats).

    Shapes:
        - returns ``(N, 1)`` float32 in ``[0, 1]``
    """
    check_int("block", block)
    src, dst, num_nodes = _square_edges(graph, num_nodes)
    keep = src != dst
    pairs = torch.cat([torch.stack([src[keep], dst[keep]]), torch.stack([dst[keep], src[keep]])], 1)
    pairs = torch.unique(pairs, dim=1)  # (2, E') both directions, once each, no self-loops
    row, col = pairs[0], pairs[1]
    n = num_nodes
    adj = torch.sparse_coo_tensor(
        pairs,
        torch.ones(row.numel(), dtype=torch.float64, device=row.device),
        (n, n),
        check_invariants=False,  # unique in-range pairs by construction
    ).coalesce()  # (N, N) symmetric 0/1, float64: exact counts up to 2^53
    deg = torch.bincount(row, minlength=n).double()  # (N,)
    closed = torch.zeros(n, dtype=torch.float64, device=row.device)  # (N,) 2 * triangles
    for start in range(0, n, block):
        stop = min(start + block, n)
        inside = (col >= start) & (col < stop)
        cols = torch.zeros(n, stop - start, dtype=torch.float64, device=row.device)
        cols[row[inside], col[inside] - start] = 1.0  # (N, b) the adjacency's columns
        paths = torch.sparse.mm(adj, cols)  # (N, b) two-step paths i -> k -> j
        closed += (paths * cols).sum(1)  # (N,) those whose ends are joined
    pairs_of_neighbours = deg * (deg - 1)  # (N,)
    coeff = torch.where(deg > 1, closed / pairs_of_neighbours.clamp(min=1), 0.0)  # (N,)
    return coeff.float()[:, None]  # (N, 1)


def _components(rows: Tensor, cols: Tensor, n: int) -> Tensor:
    """Connected-component labels of an undirected graph whose edge list holds both
    directions: each node ends with the smallest node index of its component (label
    propagation with pointer jumping, ``O(E)`` a round).

    Shapes:
        - rows, cols: ``(E,)``; returns ``(N,)`` int64
    """
    label = torch.arange(n, device=rows.device)  # (N,)
    while True:
        new = label.scatter_reduce(0, rows, label[cols], reduce="amin")  # (N,)
        new = new[new]  # a label's own label is in the same component: jump to it
        if torch.equal(new, label):
            return label
        label = new


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)


def _narrowest_int(limit: int) -> torch.dtype:
    """The narrowest signed integer dtype that holds ``limit``."""
    return next(dt for dt in _INT_DTYPES if limit <= torch.iinfo(dt).max)


def shortest_path_distance(
    graph: Graph | Tensor,
    num_nodes: int | None = None,
    *,
    directed: bool = False,
    max_distance: int | None = None,
    dtype: torch.dtype = torch.long,
) -> Tensor:
    """Hop distances between all node pairs, by breadth-first expansion from every node at
    once: one sparse ``(N, N)`` adjacency times dense ``(N, N)`` frontier product per hop,
    ``O(E N)`` time each; ``O(N^2)`` memory (the output). Undirected with ``max_distance``,
    the search stops after ``max_distance`` hops and the connected components (``O(E)`` a
    round) tell the farther pairs from the unreachable ones; otherwise it runs to the
    graph's diameter. Each hop adds the unreached pairs into a narrow hop counter (a pair
    first reached at hop ``h`` was unreached at the start of hops ``1..h``) instead of
    writing distances. Cora (2708 nodes, diameter 19, ``max_distance=5``): 0.19 s on one
    core, against 0.52 s searching to the diameter (measured in one run; an earlier
    version's dense products took 5.8 s).

    Args:
        graph: a square :class:`~graphattn.Graph` or an ``edge_index`` ``(2, E)``.
        num_nodes: ``N`` (default: the graph's, or ``max index + 1``).
        directed: follow edges from source to target only (default: ignore directions).
        max_distance: pairs farther apart than this (but connected) get
            ``max_distance + 1``; all :class:`ShortestPathBias` needs.
        dtype: a signed integer dtype for the output (``torch.int8`` takes an eighth of the
            default's memory: 8 bytes a pair for int64); a distance it cannot hold raises a
            ``ValueError``.

    Shapes:
        - returns ``(N, N)`` ``dtype`` in the attention layout: ``dist[i, j]`` is the number
          of hops from source ``j`` to target ``i``, 0 on the diagonal, -1 if unreachable.
    """
    if dtype not in _INT_DTYPES:
        raise TypeError(f"dtype must be one of {_INT_DTYPES}, got {dtype}")
    src, dst, n = _square_edges(graph, num_nodes)
    top = torch.iinfo(dtype).max
    if max_distance is not None:
        check_int("max_distance", max_distance)
        if max_distance + 1 > top:
            raise ValueError(
                f"max_distance={max_distance}: dtype={dtype} holds distances up to {top}, "
                f"and farther pairs get max_distance + 1; pass a wider dtype"
            )
    if n == 0:
        return torch.empty(0, 0, dtype=dtype, device=src.device)
    rows, cols = (dst, src) if directed else (torch.cat([dst, src]), torch.cat([src, dst]))
    ones = torch.ones(rows.numel(), device=src.device)
    step = _square_csr(rows, cols, ones, n)  # (N, N) step[i, m]: an edge m -> i
    cap = n if max_distance is None else max_distance + 1
    # A pair first reached at hop h is unreached at the start of hops 1..h: counting those
    # hops gives its distance, with one in-place add a hop into the narrowest integer that
    # holds cap, instead of a masked write of the output a hop.
    count = torch.zeros(n, n, dtype=_narrowest_int(cap), device=src.device)  # (N, N)
    unreached = ~torch.eye(n, dtype=torch.bool, device=src.device)  # (N, N) j ->* i unknown
    frontier = torch.eye(n, device=src.device)  # (N, N) pairs first reached at the last hop
    hop = 0
    while True:
        hop += 1
        if hop == cap and not directed:  # every pair left in a component is farther
            comp = _components(rows, cols, n)  # (N,)
            far = (comp[:, None] == comp[None, :]) & unreached  # (N, N)
            return count.masked_fill_(unreached, -1).masked_fill_(far, cap).to(dtype)
        new = (step @ frontier) > 0  # (N, N) reached at this hop, or before
        new &= unreached  # first reached at this hop
        if not bool(new.view(torch.uint8).max()):  # Cora: 0.1-0.4 ms; new.any(): 7-15 ms
            return count.masked_fill_(unreached, -1).to(dtype)
        if min(hop, cap) > top:
            raise ValueError(
                f"dtype={dtype} holds distances up to {top}, and the graph has pairs "
                f"{hop} hops apart; pass max_distance or a wider dtype"
            )
        if hop <= cap:  # directed pairs first reached after cap keep cap
            count += unreached
        unreached ^= new
        frontier.copy_(new)


class _BucketLookup(torch.autograd.Function):
    """``table[buckets]`` with the head moved before the pairs, ``([B,] H, Nd, Ns)``. The
    backward sums the gradient of each bucket with one ``torch.bincount`` per head: for the
    ``N^2`` lookups of a dense bias this is about 9x faster on CPU than ``nn.Embedding``'s
    backward (44 against 391 ms for N=2708, one thread)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, table: Tensor, buckets: Tensor) -> Tensor:
        ctx.save_for_backward(buckets)
        ctx.num_buckets = table.shape[0]
        return table[buckets].movedim(-1, -3)  # ([B,] H, Nd, Ns)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (buckets,) = ctx.saved_tensors
        flat = buckets.reshape(-1)  # (M,)
        per_head = [
            torch.bincount(flat, grad.select(-3, h).reshape(-1), minlength=ctx.num_buckets)
            for h in range(grad.shape[-3])
        ]  # H x (K,), summed in float64
        return torch.stack(per_head, 1).to(grad.dtype), None  # (K, H)


class ShortestPathBias(nn.Module):
    """Graphormer's spatial encoding (Ying et al., 2021): a learned bias per head and
    shortest-path distance, distances above ``max_distance`` clipped to it, and unreachable
    pairs with a bucket of their own.

    Args:
        num_heads: ``H``.
        max_distance: the largest distance with its own bias.

    Shapes:
        - distances: ``([B,] Nd, Ns)`` integers from :func:`shortest_path_distance` (-1 =
          unreachable); ``shortest_path_distance(..., max_distance=max_distance)`` suffices.
        - ``forward(distances)``: dense ``([B,] H, Nd, Ns)`` for the complete graph;
          ``forward(distances, graph)``: per edge ``([B,] E, H)`` aligned with
          ``graph.edge_index()``.
        - ``lookup(buckets)``: ``forward``'s dense bias from ``bucket(distances)``
          ``([B,] Nd, Ns)`` int64, for a caller that keeps the buckets of a fixed graph
          between steps (bucketing ``N^2`` pairs again costs a ``where`` and a ``clamp``).

    Example:
        >>> ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
        >>> spd = shortest_path_distance(ei)
        >>> ShortestPathBias(num_heads=2, max_distance=4)(spd).shape
        torch.Size([2, 4, 4])
    """

    def __init__(self, num_heads: int, max_distance: int) -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads)
        self.max_distance = check_int("max_distance", max_distance)
        self.spatial_bias = nn.Embedding(max_distance + 2, num_heads)  # + unreachable
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal with standard deviation 0.02 (Graphormer's initialisation)."""
        nn.init.normal_(self.spatial_bias.weight, std=0.02)

    def bucket(self, distances: Tensor) -> Tensor:
        """``min(d, max_distance)`` for reachable pairs, ``max_distance + 1`` otherwise."""
        d = distances.long()
        return torch.where(d < 0, self.max_distance + 1, d.clamp(max=self.max_distance))

    def lookup(self, buckets: Tensor) -> Tensor:
        """The dense bias ``([B,] H, Nd, Ns)`` of ``buckets`` ``([B,] Nd, Ns)``, the int64
        output of :meth:`bucket` (``forward(distances)`` is ``lookup(bucket(distances))``)."""
        if not isinstance(buckets, Tensor) or buckets.dim() not in (2, 3):
            raise ValueError(
                "buckets must be a tensor of shape ([B,] Nd, Ns) from bucket(), got "
                f"{tuple(getattr(buckets, 'shape', ()))}"
            )
        if buckets.dtype != torch.long:
            raise TypeError(f"buckets must be int64 (from bucket()), got {buckets.dtype}")
        table = self.spatial_bias.weight  # (D + 2, H)
        if table.device.type == "cpu":  # bincount's backward (deterministic on CPU)
            return _BucketLookup.apply(table, buckets)  # ([B,] H, Nd, Ns)
        return self.spatial_bias(buckets).movedim(-1, -3)  # ([B,] H, Nd, Ns)

    def forward(self, distances: Tensor, graph: Graph | Tensor | None = None) -> Tensor:
        """The dense bias of ``distances``, or, with ``graph``, the bias of its edges
        (shapes in the class docstring)."""
        if not isinstance(distances, Tensor) or distances.dim() not in (2, 3):
            raise ValueError(
                "distances must be a tensor of shape ([B,] Nd, Ns) from "
                f"shortest_path_distance, got {tuple(getattr(distances, 'shape', ()))}"
            )
        if distances.dtype.is_floating_point or distances.dtype == torch.bool:
            raise TypeError(f"distances must be integers, got {distances.dtype}")
        if graph is None:
            return self.lookup(self.bucket(distances))  # ([B,] H, Nd, Ns)
        nd, ns = distances.shape[-2:]
        if isinstance(graph, Graph) and (graph.num_dst, graph.num_src) != (nd, ns):
            raise ValueError(
                f"graph has num_dst={graph.num_dst}, num_src={graph.num_src} but distances "
                f"are ({nd}, {ns})"
            )
        src, dst = _edge_index_of(graph)  # (E,), (E,)
        return self.spatial_bias(self.bucket(distances[..., dst, src]))  # ([B,] E, H)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, max_distance={self.max_distance}"
