"""Transformer layers over graphs: :class:`GraphTransformerLayer` and :class:`GraphTransformer`.

A layer is ``nn.TransformerEncoderLayer`` (batch first) with its self-attention replaced by
:class:`~graphattn.GraphAttention`: attention + feed-forward, each with dropout and a residual,
LayerNorm before (``norm_first=True``, the default) or after each block. The submodules carry
the names of ``nn.TransformerEncoderLayer``'s, so its weights copy over
(:meth:`GraphTransformerLayer.from_transformer_encoder_layer`) and, on the complete graph, both
give the same numbers.

Axis legend: ``B`` batch, ``N`` nodes, ``E`` edges, ``H`` heads, ``C`` embed dim, ``F``
feed-forward dim, ``L`` layers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from ._checks import WITH_WEIGHTS, check_int, renamed, weights_flag
from ._finite import zero_padded_nodes
from .attention import GraphAttention, RotaryFn
from .decoding import (
    KVCache,
    PositionalRotary,
    check_step_input,
    layer_step,
    transformer_step,
)
from .functional import AttentionWeights, BackendName, ScoreLike
from .graph import Graph
from .scores import Score

__all__ = [
    "LayerOutput",
    "TransformerOutput",
    "GraphTransformerLayer",
    "GraphTransformer",
]

Activation = Literal["relu", "gelu"] | Callable[[Tensor], Tensor]
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


@dataclass
class LayerOutput:
    """What :meth:`GraphTransformerLayer.forward_with_weights` returns.

    Attributes:
        out: the layer output, shaped like its input ``([B,] N, C)``.
        attention: the self-attention weights (see :class:`~graphattn.AttentionWeights`).
    """

    out: Tensor
    attention: AttentionWeights


@dataclass
class TransformerOutput:
    """What :meth:`GraphTransformer.forward_with_weights` returns.

    Attributes:
        out: the final node features ``([B,] N, C)``.
        attentions: the attention weights of every layer, first layer first (``L`` entries).
    """

    out: Tensor
    attentions: list[AttentionWeights]


def _resolve_activation(activation: Activation) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(f"activation must be a string or callable, got {type(activation).__name__}")
    return activation


def _activation_name(activation: Callable[[Tensor], Tensor]) -> str:
    if isinstance(activation, nn.Module):
        return type(activation).__name__
    return getattr(activation, "__name__", type(activation).__name__)


class GraphTransformerLayer(nn.Module):
    """A transformer encoder layer whose self-attention runs over a graph.

    ``norm_first=True`` (pre-norm, the default)::

        x = x + dropout1(self_attn(norm1(x), graph))
        x = x + dropout2(linear2(dropout(activation(linear1(norm2(x))))))

    ``norm_first=False`` (post-norm, the original Transformer)::

        x = norm1(x + dropout1(self_attn(x, graph)))
        x = norm2(x + dropout2(linear2(dropout(activation(linear1(x))))))

    Reference: ``torch.nn.TransformerEncoderLayer(batch_first=True)``; on the complete graph
    this layer gives the same output with the same weights.

    Args:
        embed_dim: model width ``C``.
        num_heads: attention heads ``H`` (must divide ``C``).
        dim_feedforward: hidden size ``F`` of the feed-forward block.
        dropout: dropout on attention weights, the feed-forward hidden layer and both
            residual branches.
        activation: ``"relu"``, ``"gelu"`` or a callable (a function or module).
        norm_first: LayerNorm before each block (pre-norm) instead of after the residual.
        layer_norm_eps: LayerNorm epsilon.
        bias: biases in the linear layers and LayerNorms.
        edge_dim: size of edge features ``edge_attr`` fed to the attention (see
            :class:`~graphattn.GraphAttention`); ``None``: no edge features.
        backend: attention backend, ``"auto"`` or a registered backend.
        score: the attention's score function (see :class:`~graphattn.GraphAttention`):
            the scaled dot product by default, or e.g. a kernel score of
            :mod:`graphattn.kernels` for linear-time global attention.

    Shapes:
        - x: ``(N, C)`` or ``(B, N, C)`` (batch first); returns the same shape.

    Example:
        >>> from graphattn import Graph
        >>> layer = GraphTransformerLayer(16, 4, dim_feedforward=32)
        >>> layer(torch.randn(2, 10, 16), Graph.window(10, radius=2)).shape
        torch.Size([2, 10, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = True,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        edge_dim: int | None = None,
        backend: BackendName = "auto",
        score: ScoreLike = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        check_int("dim_feedforward", dim_feedforward)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.self_attn = GraphAttention(
            embed_dim,
            num_heads,
            dropout=dropout,
            bias=bias,
            edge_dim=edge_dim,
            backend=backend,
            score=score,
            **factory,
        )
        self.linear1 = nn.Linear(embed_dim, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, embed_dim, bias=bias, **factory)
        self.norm_first = bool(norm_first)
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _resolve_activation(activation)

    @property
    def embed_dim(self) -> int:
        return self.self_attn.embed_dim

    @property
    def num_heads(self) -> int:
        return self.self_attn.num_heads

    def reset_parameters(self) -> None:
        """Re-initialise as a fresh layer (``nn.TransformerEncoderLayer``'s initialisation)."""
        self.self_attn.reset_parameters()
        for module in (self.linear1, self.linear2, self.norm1, self.norm2):
            module.reset_parameters()

    @classmethod
    def from_transformer_encoder_layer(
        cls, layer: nn.TransformerEncoderLayer, *, backend: BackendName = "auto"
    ) -> GraphTransformerLayer:
        """A copy of ``layer`` (weights, norm placement, activation, epsilon, dropout).

        The copy always takes batch-first inputs ``(B, N, C)``; a layer built with
        ``batch_first=False`` has the same weights but expects ``(N, B, C)``.
        """
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(
                f"layer must be an nn.TransformerEncoderLayer, got {type(layer).__name__}"
            )
        ref = layer.linear1.weight
        new = cls(
            layer.self_attn.embed_dim,
            layer.self_attn.num_heads,
            dim_feedforward=layer.linear1.out_features,
            dropout=layer.dropout.p,
            activation=copy.deepcopy(layer.activation),
            norm_first=layer.norm_first,
            layer_norm_eps=layer.norm1.eps,
            bias=layer.linear1.bias is not None,
            backend=backend,
            device=ref.device,
            dtype=ref.dtype,
        )
        new.self_attn = GraphAttention.from_multihead_attention(layer.self_attn, backend=backend)
        new.self_attn.batch_first = True  # the layer passes (B, N, C) to its attention
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(new, name).load_state_dict(getattr(layer, name).state_dict())
        for name in ("dropout", "dropout1", "dropout2"):
            getattr(new, name).p = getattr(layer, name).p
        return new

    def forward(
        self,
        x: Tensor,
        graph: Graph | Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        edge_attr: Tensor | None = None,
        attn_bias: Tensor | None = None,
        rotary: RotaryFn | None = None,
        need_weights: bool = False,
        bias: Tensor | None = None,
        return_attention: bool | None = None,
    ) -> Tensor:
        """Run the layer.

        Args:
            x: node features, batch first.
            graph: a :class:`~graphattn.Graph`, an ``edge_index`` or ``None`` (complete).
            key_padding_mask: ``(B, N)`` bool, True = padded (as ``src_key_padding_mask``).
            edge_attr: edge features ``(E, edge_dim)`` (needs ``edge_dim``).
            attn_bias: additive score bias, per edge ``([B,] E, H)`` or dense
                ``(…, H, N, N)``.
            rotary: a ``(q, k) -> (q, k)`` transform such as
                :class:`~graphattn.RotaryEmbedding`.
            need_weights: deprecated: ``True`` returns a :class:`LayerOutput`, with a
                ``FutureWarning``; call :meth:`forward_with_weights` instead.
            bias: the old name of ``attn_bias`` (deprecated).
            return_attention: the old name of ``need_weights`` (deprecated).

        Shapes:
            - x: ``([B,] N, C)``; returns ``([B,] N, C)``.

        Returns:
            The output (the weights: :meth:`forward_with_weights`).
        """
        attn_bias = renamed("attn_bias", attn_bias, "bias", bias, None)
        need_weights = weights_flag(
            need_weights,
            return_attention,
            "GraphTransformerLayer.forward",
            "GraphTransformerLayer.forward_with_weights",
        )
        attend = self.self_attn.forward_with_weights if need_weights else self.self_attn
        x = zero_padded_nodes(x, key_padding_mask)  # NaN padding must not reach gradients
        kwargs = {
            "key_padding_mask": key_padding_mask,
            "edge_attr": edge_attr,
            "attn_bias": attn_bias,
            "rotary": rotary,
        }
        attention = None
        if self.norm_first:
            h = attend(self.norm1(x), graph, **kwargs)
            if need_weights:
                h, attention = h.out, h.attention
            x = x + self.dropout1(h)  # ([B,] N, C)
            x = x + self._ff_block(self.norm2(x))
        else:
            h = attend(x, graph, **kwargs)
            if need_weights:
                h, attention = h.out, h.attention
            x = self.norm1(x + self.dropout1(h))  # ([B,] N, C)
            x = self.norm2(x + self._ff_block(x))
        if need_weights:
            return LayerOutput(x, attention)
        return x

    def forward_with_weights(
        self, x: Tensor, graph: Graph | Tensor | None = None, **kwargs: Any
    ) -> LayerOutput:
        """:meth:`forward`, also returning the self-attention weights.

        Takes :meth:`forward`'s arguments (``key_padding_mask``, ``edge_attr``,
        ``attn_bias``, ``rotary``); forward hooks do not run.

        Shapes:
            - x: ``([B,] N, C)``; ``out`` ``([B,] N, C)``; ``attention`` per edge or dense
              (see :class:`~graphattn.AttentionWeights`).
        """
        return GraphTransformerLayer.forward(self, x, graph, need_weights=WITH_WEIGHTS, **kwargs)

    def decode_step(
        self, x: Tensor, cache: KVCache, *, rotary: PositionalRotary | None = None
    ) -> Tensor:
        """Run the layer on ``T`` new positions of a causal or causal-window graph, attending
        to the positions ``cache`` holds and to themselves; ``cache`` takes their keys and
        values (see :mod:`graphattn.decoding`).

        In evaluation mode, the steps of a sequence give the rows of :meth:`forward` on the
        whole sequence with the cache's graph, up to rounding.

        Args:
            x: the new positions' features, batch first.
            cache: this layer's :class:`~graphattn.decoding.KVCache`
                (``KVCache.for_graph(graph)``; the first step fixes its batch size).
            rotary: a rotary embedding with a ``rotate(x, positions)`` method (a
                :class:`~graphattn.RotaryEmbedding`), the one :meth:`forward` is given;
                ``None``: none.

        Shapes:
            - x: ``(B, T, C)``; returns ``(B, T, C)``.
        """
        check_step_input(x, self.embed_dim)
        return layer_step(self, x, cache, rotary)

    def _ff_block(self, x: Tensor) -> Tensor:
        h = self.dropout(self.activation(self.linear1(x)))  # ([B,] N, F)
        return self.dropout2(self.linear2(h))  # ([B,] N, C)

    def extra_repr(self) -> str:
        parts = [
            f"embed_dim={self.embed_dim}",
            f"num_heads={self.num_heads}",
            f"dim_feedforward={self.linear1.out_features}",
            f"norm_first={self.norm_first}",
        ]
        if not isinstance(self.activation, nn.Module):
            parts.append(f"activation={_activation_name(self.activation)}")
        return ", ".join(parts)


def _per_layer(name: str, value: Any, num_layers: int, kinds: tuple[type, ...]) -> list[Any]:
    """Broadcast one value to every layer, or check a per-layer list."""
    if isinstance(value, list | tuple):
        if len(value) != num_layers:
            raise ValueError(
                f"{name} is a list of {len(value)} entries but the model has "
                f"num_layers={num_layers}; pass one per layer or a single one"
            )
        return list(value)
    if value is not None and not isinstance(value, kinds):
        raise TypeError(
            f"{name} must be one of {[k.__name__ for k in kinds]}, None or a list of them, "
            f"got {type(value).__name__}"
        )
    return [value] * num_layers


class GraphTransformer(nn.Module):
    """A stack of :class:`GraphTransformerLayer` s with an optional final LayerNorm.

    Every layer may run on the same graph or on a graph of its own (pass a list), e.g. dense
    attention first and a sparse learned graph later.

    Reference: ``nn.TransformerEncoder(layer, num_layers, norm=...)`` with batch-first
    layers (see :meth:`from_transformer_encoder`).

    Args:
        num_layers: number of layers ``L``.
        embed_dim: model width ``C``.
        num_heads: attention heads ``H``.
        dim_feedforward: hidden size of each feed-forward block.
        dropout: dropout (see :class:`GraphTransformerLayer`).
        activation: ``"relu"``, ``"gelu"`` or a callable.
        norm_first: pre-norm layers (default) or post-norm.
        final_norm: a LayerNorm after the last layer, when ``norm_first`` (post-norm layers
            end with a norm already).
        layer_norm_eps: LayerNorm epsilon.
        bias: biases in linear layers and LayerNorms.
        edge_dim: size of edge features (``None``: none).
        backend: attention backend of every layer, or a list with one per layer.
        score: score function of every layer, or a list with one per layer (e.g. the dot
            product on local edges first, then :class:`~graphattn.kernels.FAVOR` on the
            complete graph: Polynormer's local-then-global order).
        checkpoint: in training, recompute each layer's activations in the backward pass
            (``torch.utils.checkpoint``, non-reentrant): same gradients, less memory.

    Shapes:
        - x: ``(N, C)`` or ``(B, N, C)``; returns the same shape.

    Example:
        >>> from graphattn import Graph
        >>> model = GraphTransformer(2, 16, 4, dim_feedforward=32)
        >>> x = torch.randn(2, 10, 16)
        >>> model(x, [None, Graph.window(10, radius=1)]).shape
        torch.Size([2, 10, 16])
    """

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        num_heads: int,
        *,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = True,
        final_norm: bool = True,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        edge_dim: int | None = None,
        backend: BackendName | Sequence[BackendName] = "auto",
        score: ScoreLike | Sequence[ScoreLike] = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        check_int("num_layers", num_layers)
        backends = _per_layer("backend", backend, num_layers, (str,))
        scores = _per_layer("score", score, num_layers, (Score, nn.Module, Callable))
        self.layers = nn.ModuleList(
            GraphTransformerLayer(
                embed_dim,
                num_heads,
                dim_feedforward=dim_feedforward,
                dropout=dropout,
                activation=activation,
                norm_first=norm_first,
                layer_norm_eps=layer_norm_eps,
                bias=bias,
                edge_dim=edge_dim,
                backend=layer_backend,
                score=layer_score,
            )
            for layer_backend, layer_score in zip(backends, scores, strict=True)
        )
        self.norm = (
            nn.LayerNorm(embed_dim, eps=layer_norm_eps, bias=bias)
            if final_norm and norm_first
            else None
        )
        self.checkpoint = bool(checkpoint)

    @classmethod
    def from_transformer_encoder(
        cls, encoder: nn.TransformerEncoder, *, backend: BackendName = "auto"
    ) -> GraphTransformer:
        """A copy of ``encoder``'s layers and final norm (inputs batch first)."""
        if not isinstance(encoder, nn.TransformerEncoder):
            raise TypeError(
                f"encoder must be an nn.TransformerEncoder, got {type(encoder).__name__}"
            )
        first = encoder.layers[0]
        new = cls(
            len(encoder.layers),
            first.self_attn.embed_dim,
            first.self_attn.num_heads,
            dim_feedforward=first.linear1.out_features,
            norm_first=first.norm_first,
            final_norm=False,
            backend=backend,
        )
        new.layers = nn.ModuleList(
            GraphTransformerLayer.from_transformer_encoder_layer(layer, backend=backend)
            for layer in encoder.layers
        )
        new.norm = copy.deepcopy(encoder.norm)
        return new

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def reset_parameters(self) -> None:
        """Re-initialise every layer and the final norm."""
        for layer in self.layers:
            layer.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()

    def forward(
        self,
        x: Tensor,
        graph: Graph | Tensor | Sequence[Graph | Tensor | None] | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        edge_attr: Tensor | Sequence[Tensor | None] | None = None,
        attn_bias: Tensor | Sequence[Tensor | None] | None = None,
        rotary: RotaryFn | None = None,
        need_weights: bool = False,
        bias: Tensor | Sequence[Tensor | None] | None = None,
        return_attention: bool | None = None,
    ) -> Tensor:
        """Run all layers.

        Args:
            x: node features, batch first.
            graph: one graph for every layer (a :class:`~graphattn.Graph`, an ``edge_index``
                or ``None`` for the complete graph), or a list with one per layer.
            key_padding_mask: ``(B, N)`` bool, True = padded; shared by all layers.
            edge_attr: edge features ``(E, edge_dim)``, or a list with one per layer (needed
                when the layers' graphs differ).
            attn_bias: additive score bias (see :class:`GraphTransformerLayer`), or one per
                layer.
            rotary: a ``(q, k) -> (q, k)`` transform applied in every layer.
            need_weights: deprecated: ``True`` returns a :class:`TransformerOutput`, with a
                ``FutureWarning``; call :meth:`forward_with_weights` instead.
            bias: the old name of ``attn_bias`` (deprecated).
            return_attention: the old name of ``need_weights`` (deprecated).

        Shapes:
            - x: ``([B,] N, C)``; returns ``([B,] N, C)``.

        Returns:
            The output (every layer's weights: :meth:`forward_with_weights`).
        """
        attn_bias = renamed("attn_bias", attn_bias, "bias", bias, None)
        need_weights = weights_flag(
            need_weights,
            return_attention,
            "GraphTransformer.forward",
            "GraphTransformer.forward_with_weights",
        )
        num = len(self.layers)
        graphs = _per_layer("graph", graph, num, (Graph, Tensor))
        edge_attrs = _per_layer("edge_attr", edge_attr, num, (Tensor,))
        biases = _per_layer("attn_bias", attn_bias, num, (Tensor,))
        use_checkpoint = self.checkpoint and self.training and torch.is_grad_enabled()
        attentions: list[AttentionWeights] = []
        for layer, g, ea, b in zip(self.layers, graphs, edge_attrs, biases, strict=True):
            kwargs = {
                "key_padding_mask": key_padding_mask,
                "edge_attr": ea,
                "attn_bias": b,
                "rotary": rotary,
            }
            run = layer.forward_with_weights if need_weights else layer
            if use_checkpoint:
                res = _checkpoint(run, x, g, use_reentrant=False, **kwargs)
            else:
                res = run(x, g, **kwargs)
            if need_weights:
                attentions.append(res.attention)
                res = res.out
            x = res  # ([B,] N, C)
        if self.norm is not None:
            x = self.norm(x)
        if need_weights:
            return TransformerOutput(x, attentions)
        return x

    def forward_with_weights(
        self,
        x: Tensor,
        graph: Graph | Tensor | Sequence[Graph | Tensor | None] | None = None,
        **kwargs: Any,
    ) -> TransformerOutput:
        """:meth:`forward`, also returning every layer's attention weights (first layer
        first), e.g. for :func:`~graphattn.attention_rollout` or
        :func:`~graphattn.grad_attention`.

        Takes :meth:`forward`'s arguments (``key_padding_mask``, ``edge_attr``,
        ``attn_bias``, ``rotary``); forward hooks do not run.

        Shapes:
            - x: ``([B,] N, C)``; ``out`` ``([B,] N, C)``; ``attentions``: ``L`` entries.
        """
        return GraphTransformer.forward(self, x, graph, need_weights=WITH_WEIGHTS, **kwargs)

    def init_cache(self, graph: Graph | Sequence[Graph]) -> list[KVCache]:
        """Empty key-value caches for :meth:`decode_step`, one per layer.

        Args:
            graph: the graph :meth:`forward` runs on, ``Graph.causal(n)`` or
                ``Graph.window(n, radius, causal=True)``, or a list with one per layer. A
                causal cache holds up to ``n`` positions; a window cache the last ``radius``
                positions, for any number of steps.
        """
        graphs = _per_layer("graph", graph, len(self.layers), (Graph,))
        return [KVCache.for_graph(g) for g in graphs]

    def decode_step(
        self, x: Tensor, cache: list[KVCache], *, rotary: PositionalRotary | None = None
    ) -> Tensor:
        """Run all layers on ``T`` new positions (one generated token, or a prompt), using and
        extending ``cache`` (see :mod:`graphattn.decoding`).

        In evaluation mode, the steps of a sequence give the rows of :meth:`forward` on the
        whole sequence with the caches' graphs, up to rounding. A step that would pass a
        causal cache's length is refused before any cache changes.

        Args:
            x: the new positions' features, batch first.
            cache: one :class:`~graphattn.decoding.KVCache` per layer, from
                :meth:`init_cache`.
            rotary: a rotary embedding with a ``rotate(x, positions)`` method (a
                :class:`~graphattn.RotaryEmbedding`), the one :meth:`forward` is given;
                ``None``: none.

        Shapes:
            - x: ``(B, T, C)``; returns ``(B, T, C)``.

        Example:
            >>> from graphattn import Graph, RotaryEmbedding
            >>> model = GraphTransformer(2, 16, 4, dim_feedforward=32).eval()
            >>> cache, rope = model.init_cache(Graph.causal(8)), RotaryEmbedding(4)
            >>> model.decode_step(torch.randn(3, 5, 16), cache, rotary=rope).shape  # prompt
            torch.Size([3, 5, 16])
            >>> model.decode_step(torch.randn(3, 1, 16), cache, rotary=rope).shape
            torch.Size([3, 1, 16])
            >>> cache[0].length, cache[0].keys.shape
            (6, torch.Size([3, 4, 6, 4]))
        """
        check_step_input(x, self.layers[0].embed_dim)
        return transformer_step(self, x, cache, rotary)

    def extra_repr(self) -> str:
        first = self.layers[0]
        return (
            f"num_layers={len(self.layers)}, embed_dim={first.embed_dim}, "
            f"num_heads={first.num_heads}, norm_first={first.norm_first}, "
            f"final_norm={self.norm is not None}, checkpoint={self.checkpoint}"
        )
