"""Incremental decoding: a key-value cache for causal and causal sliding-window graphs.

On a causal graph (:meth:`~graphattn.Graph.causal`) position ``i`` attends to sources
``0..i``; on a causal window (:meth:`~graphattn.Graph.window` with ``causal=True``) to
``i - radius..i``, itself included. The keys and values of earlier positions never change, so
a model that generates one position at a time keeps them, one :class:`KVCache` per attention
layer, and computes only the new positions: a step of ``T`` new positions attends from ``T``
targets to the ``S`` kept positions and itself, a small graph of its own
(:meth:`KVCache.step_graph`). A causal cache keeps every position, up to the graph's
``num_nodes``; a window cache keeps only the last ``radius`` positions, so its memory is
bounded and decoding may continue past ``num_nodes`` (the output is then that of a longer
window graph of the same radius).

Keys are cached after the rotary transform, each at its own position, so a step needs the
positions of its new nodes: ``rotary`` must have a ``rotate(x, positions)`` method, as
:class:`~graphattn.RotaryEmbedding` has. Decoding is for inference: run it under
``torch.no_grad()`` (a causal cache writes each step into the buffer of the previous ones).
In training mode dropout applies as in :meth:`~graphattn.GraphTransformer.forward`.

Reference: the ``past_key_values`` of Hugging Face transformers and ``layer_past`` of
GPT-2; the sliding-window cache of Mistral (a rolling buffer of ``W`` positions).

Axis legend: ``B`` batch, ``T`` new positions in a step, ``S`` cached positions, ``H`` heads,
``Dh`` head dim, ``C`` embed dim.

Example:
    >>> import torch
    >>> from graphattn import Graph, GraphTransformer, RotaryEmbedding
    >>> model = GraphTransformer(2, 16, 4, dim_feedforward=32, dropout=0.0).eval()
    >>> rope, x = RotaryEmbedding(4), torch.randn(2, 6, 16)
    >>> cache = model.init_cache(Graph.window(6, radius=2, causal=True))
    >>> steps = [model.decode_step(x[:, :4], cache, rotary=rope)]  # a prompt of 4
    >>> steps += [model.decode_step(x[:, i : i + 1], cache, rotary=rope) for i in (4, 5)]
    >>> full = model(x, Graph.window(6, radius=2, causal=True), rotary=rope)
    >>> torch.allclose(torch.cat(steps, 1), full, atol=1e-5), cache[0].keys.shape
    (True, torch.Size([2, 4, 2, 4]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from .functional import graph_attention
from .graph import CausalGraph, Graph, WindowGraph

if TYPE_CHECKING:  # annotations only: layers imports this module
    from .attention import GraphAttention
    from .layers import GraphTransformer, GraphTransformerLayer

__all__ = ["KVCache", "PositionalRotary"]


class PositionalRotary(Protocol):
    """What decoding needs of a rotary transform: rotate ``x`` ``(..., N, Dh)`` at explicit
    ``positions`` ``(N,)`` (:meth:`graphattn.RotaryEmbedding.rotate`)."""

    def rotate(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """``x`` ``(..., N, Dh)`` rotated at ``positions`` ``(N,)``."""
        ...


@dataclass
class KVCache:
    """The keys and values one attention layer keeps between decoding steps.

    Build it with :meth:`for_graph` (or :meth:`graphattn.GraphTransformer.init_cache`); the
    first step fixes its batch size, dtype and device.

    Attributes:
        radius: ``None`` for a causal graph (every earlier position is kept), else the radius
            ``r`` of a causal window (the last ``r`` positions are kept).
        max_length: the most positions a step may reach (a causal graph's ``num_nodes``), or
            ``None`` (a window: unbounded).
        length: positions decoded so far, i.e. the position of the next one.

    Shapes:
        - keys, values: ``(B, H, S, Dh)`` of the kept positions, oldest first (keys after the
          rotary transform); ``S = length`` (causal) or ``min(length, radius)`` (window).
    """

    radius: int | None
    max_length: int | None
    length: int = 0
    # storage: causal (B, H, max_length, Dh), filled up to `length`; window (B, H, S, Dh)
    _keys: Tensor | None = field(default=None, init=False, repr=False)
    _values: Tensor | None = field(default=None, init=False, repr=False)

    @classmethod
    def for_graph(cls, graph: Graph) -> KVCache:
        """An empty cache for ``graph``: a :class:`~graphattn.CausalGraph` or a causal
        :class:`~graphattn.WindowGraph`, without padding.

        Raises:
            TypeError: ``graph`` is not a :class:`~graphattn.Graph`.
            ValueError: ``graph`` is of another kind (complete, grid, edge list, a symmetric
                window) or padded: its targets see later sources, which no cache can hold.
        """
        if not isinstance(graph, Graph):
            raise TypeError(
                f"graph must be a graphattn.Graph (Graph.causal or Graph.window(..., "
                f"causal=True)), got {type(graph).__name__}"
            )
        if graph.key_padding_mask is not None:
            raise ValueError(
                f"graph must not be padded for decoding (every sample of a step has the same "
                f"positions), got {graph!r}"
            )
        if isinstance(graph, CausalGraph):
            return cls(radius=None, max_length=graph.num_dst)
        if isinstance(graph, WindowGraph) and graph.causal:
            return cls(radius=graph.radius, max_length=None)
        raise ValueError(
            "graph must be causal to decode with a cache, Graph.causal(n) or "
            f"Graph.window(n, radius, causal=True), got {graph!r}: its targets attend to "
            "later positions, which do not exist yet when a position is generated"
        )

    @property
    def cached(self) -> int:
        """``S``, the number of positions kept."""
        if self.radius is None:
            return self.length
        return min(self.length, self.radius)

    @property
    def keys(self) -> Tensor | None:
        """The kept keys ``(B, H, S, Dh)`` (after the rotary transform), ``None`` before the
        first step."""
        return None if self._keys is None else self._keys[:, :, : self._stored()]

    @property
    def values(self) -> Tensor | None:
        """The kept values ``(B, H, S, Dh)``, ``None`` before the first step."""
        return None if self._values is None else self._values[:, :, : self._stored()]

    def _stored(self) -> int:
        return self.length if self.radius is None else self._keys.shape[2]

    def reset(self) -> None:
        """Forget every position; the next step may start a new batch."""
        self.length = 0
        self._keys = self._values = None

    def check_room(self, new: int) -> None:
        """Raise ``ValueError`` when ``new`` more positions would pass ``max_length``."""
        if self.max_length is not None and self.length + new > self.max_length:
            raise ValueError(
                f"x adds {new} position(s) to a cache that holds {self.length} of its causal "
                f"graph's max_length={self.max_length}: build the cache from a longer "
                f"Graph.causal(n), or reset() it and feed the last positions again"
            )

    def step_graph(self, new: int, device: torch.device | str | None = None) -> Graph:
        """The graph of a step of ``new`` positions: targets are the new positions, sources
        the ``S`` kept positions followed by the new ones (``num_src = S + new``).

        One new position attends to every source (the complete ``1 x (S + 1)`` graph); an
        empty cache is the causal or window graph of the new positions; otherwise target
        ``a`` reaches source ``s`` when ``0 <= a + S - s`` (``<= radius`` for a window).
        ``device``: the graph's (default: the cache's, else the CPU).
        """
        s = self.cached
        if device is None and self._keys is not None:
            device = self._keys.device
        if new == 1:
            return Graph.complete(1, s + 1, device=device)
        if s == 0:
            if self.radius is None:
                return Graph.causal(new, device=device)
            return Graph.window(new, self.radius, causal=True, device=device)
        a = torch.arange(new, device=device)[:, None]  # (T, 1) new targets
        src = torch.arange(s + new, device=device)[None, :]  # (1, S + T) sources
        offset = a + s - src  # (T, S + T): target position - source position
        mask = offset >= 0
        if self.radius is not None:
            mask &= offset <= self.radius
        dst, src_ids = mask.nonzero().unbind(1)  # (E,), (E,) by target, then source
        return Graph.from_edge_index(torch.stack([src_ids, dst]), new, s + new)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the keys and values of the new positions; return those a step attends to, the
        kept ones followed by the new ones, and advance :attr:`length`.

        Shapes:
            - k, v: ``(B, H, T, Dh)``; returns two ``(B, H, S + T, Dh)``.
        """
        t = k.shape[2]
        self.check_room(t)
        self._check_like(k)
        if self.radius is None:
            if self._keys is None:
                b, h, _, dh = k.shape
                self._keys = k.new_empty(b, h, self.max_length, dh)  # (B, H, max_length, Dh)
                self._values = v.new_empty(b, h, self.max_length, v.shape[-1])
            end = self.length + t
            self._keys[:, :, self.length : end] = k
            self._values[:, :, self.length : end] = v
            self.length = end
            return self._keys[:, :, :end], self._values[:, :, :end]  # (B, H, S + T, Dh)
        if self._keys is None:
            k_all, v_all = k, v
        else:
            k_all = torch.cat([self._keys, k], dim=2)  # (B, H, S + T, Dh)
            v_all = torch.cat([self._values, v], dim=2)
        keep = k_all.shape[2] - min(self.radius, k_all.shape[2])  # first kept position
        self._keys, self._values = k_all[:, :, keep:], v_all[:, :, keep:]  # (B, H, <=r, Dh)
        self.length += t
        return k_all, v_all

    def _check_like(self, k: Tensor) -> None:
        """The new keys match the cached ones in batch size, heads, dtype and device."""
        if self._keys is None:
            return
        b, h, _, dh = self._keys.shape
        if k.shape[0] != b:
            raise ValueError(
                f"x has batch size {k.shape[0]} but the cache was filled with batch size {b}: "
                f"reset() it to start a new batch"
            )
        if (k.shape[1], k.shape[3]) != (h, dh):
            raise ValueError(
                f"the cache holds {h} heads of size {dh} but this layer gives {k.shape[1]} of "
                f"size {k.shape[3]}: pass the caches in the order of the layers"
            )
        if k.dtype != self._keys.dtype or k.device != self._keys.device:
            raise ValueError(
                f"x gives keys of {k.dtype} on {k.device} but the cache holds {self._keys.dtype} "
                f"on {self._keys.device}: reset() it after moving or casting the model"
            )


def _positions(rotary: PositionalRotary | None, cache: KVCache, t: int, device) -> Tensor | None:
    if rotary is None:
        return None
    if not callable(getattr(rotary, "rotate", None)):
        raise TypeError(
            f"rotary must have a rotate(x, positions) method, such as graphattn.RotaryEmbedding, "
            f"got {type(rotary).__name__}: a step rotates its new positions at their own "
            f"indices ({cache.length}..{cache.length + t - 1})"
        )
    return torch.arange(cache.length, cache.length + t, device=device)  # (T,)


def attention_step(
    attn: GraphAttention, x: Tensor, cache: KVCache, rotary: PositionalRotary | None = None
) -> Tensor:
    """Self-attention of ``T`` new positions over ``cache`` and themselves; ``cache`` takes
    their keys and values.

    Equal to the new positions' rows of ``attn(x_all, graph, rotary=rotary)`` on all
    positions so far (up to rounding), in evaluation mode.

    Shapes:
        - x: ``(B, T, C)``; returns ``(B, T, C)``.
    """
    if attn.lin_edge is not None:
        raise ValueError(
            "this attention has edge_dim (edge features per edge), which cached decoding does "
            "not take: build the layers with edge_dim=None"
        )
    b, t, _ = x.shape
    h, dh = attn.num_heads, attn.head_dim
    pos = _positions(rotary, cache, t, x.device)
    cache.check_room(t)
    q, k, v = attn._project(x, None)  # 3 x (B, T, C)
    q = q.view(b, t, h, dh).transpose(1, 2)  # (B, H, T, Dh)
    k = k.view(b, t, h, dh).transpose(1, 2)  # (B, H, T, Dh)
    v = v.view(b, t, h, dh).transpose(1, 2)  # (B, H, T, Dh)
    if pos is not None:
        q, k = rotary.rotate(q, pos), rotary.rotate(k, pos)
    graph = cache.step_graph(t, x.device)  # T targets, S + T sources
    k_all, v_all = cache.append(k, v)  # (B, H, S + T, Dh)
    out = graph_attention(
        q,
        k_all,
        v_all,
        graph,
        dropout_p=attn.dropout if attn.training else 0.0,
        score=attn.score,
    )  # (B, H, T, Dh)
    out = out.transpose(1, 2).reshape(b, t, attn.embed_dim)  # (B, T, C)
    return attn.out_proj(out)


def layer_step(
    layer: GraphTransformerLayer,
    x: Tensor,
    cache: KVCache,
    rotary: PositionalRotary | None = None,
) -> Tensor:
    """:class:`~graphattn.GraphTransformerLayer` on ``T`` new positions (see
    :meth:`~graphattn.GraphTransformerLayer.decode_step`).

    Shapes:
        - x: ``(B, T, C)``; returns ``(B, T, C)``.
    """
    if layer.norm_first:
        x = x + layer.dropout1(attention_step(layer.self_attn, layer.norm1(x), cache, rotary))
        return x + layer._ff_block(layer.norm2(x))  # (B, T, C)
    x = layer.norm1(x + layer.dropout1(attention_step(layer.self_attn, x, cache, rotary)))
    return layer.norm2(x + layer._ff_block(x))  # (B, T, C)


def check_step_input(x: Tensor, width: int) -> None:
    """``x`` is ``(B, T, C)`` with ``T >= 1`` and ``C == width``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[1] == 0 or x.shape[2] != width:
        raise ValueError(
            f"x must have shape (B, T, C={width}) with T >= 1 new positions, got {tuple(x.shape)}"
        )


def transformer_step(
    model: GraphTransformer,
    x: Tensor,
    cache: Sequence[KVCache],
    rotary: PositionalRotary | None = None,
) -> Tensor:
    """:class:`~graphattn.GraphTransformer` on ``T`` new positions (see
    :meth:`~graphattn.GraphTransformer.decode_step`).

    Shapes:
        - x: ``(B, T, C)``; returns ``(B, T, C)``.
    """
    if not isinstance(cache, list | tuple) or len(cache) != len(model.layers):
        got = f"{len(cache)} entries" if isinstance(cache, list | tuple) else type(cache).__name__
        raise ValueError(
            f"cache must be a list of one KVCache per layer (num_layers={len(model.layers)}), "
            f"got {got}: build it with model.init_cache(graph)"
        )
    for i, c in enumerate(cache):
        if not isinstance(c, KVCache):
            raise TypeError(f"cache[{i}] must be a KVCache, got {type(c).__name__}")
        c.check_room(x.shape[1])  # before any layer changes its cache
    for layer, c in zip(model.layers, cache, strict=True):
        x = layer_step(layer, x, c, rotary)  # (B, T, C)
    if model.norm is not None:
        x = model.norm(x)
    return x
