"""Fuse node sets of several modalities into one graph.

Three structures over the concatenated (padded) layout ``[set_0 | set_1 | ... | latents]``:

=================  ==============================================================
mode               in-edges
=================  ==============================================================
``complete``       every node attends to every node (early fusion)
``intra+cross``    each modality inside itself, plus the chosen cross-modal links
                   (bipartite complete between two modalities)
``bottleneck``     each modality inside itself; ``L`` latent nodes attend to and are
                   attended by every node, so cross-modal information flows only
                   through them (Nagrani et al., "Attention Bottlenecks for
                   Multimodal Fusion", 2021; Perceiver-style latents)
=================  ==============================================================

A batch shares one structure, so the graph is built over the padded layout and padding is
attached as the graph's key padding mask (padded nodes send nothing). Node modality ids
travel with the graph in :class:`FusedGraph`, whose :meth:`FusedGraph.modality_summary`
turns attention weights into a modality-by-modality table.

:class:`ModalityTransformer` (layers :class:`ModalityTransformerLayer`, attention
:class:`ModalityAttention`) runs a transformer on a fused graph with one query, key, value
and output projection per modality, HGT-style (:class:`graphattn.TypedLinear`); with every
modality's weights equal it is :class:`graphattn.GraphTransformer`.

Axis legend: ``B`` batch, ``N`` nodes (all modalities), ``L`` latents, ``M`` modalities,
``E`` edges, ``H`` heads, ``D`` feature size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn import (
    AttentionOutput,
    AttentionWeights,
    Graph,
    GraphAttention,
    GraphTransformer,
    GraphTransformerLayer,
    LayerOutput,
    TransformerOutput,
    TypedLinear,
    graph_attention,
    graph_attention_with_weights,
    zero_padded_nodes,  # the padding rule of GraphAttention
)

from ._common import (
    arg_error,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_sequence,
    check_str,
    check_tensor,
)
from .nodes import NodeSet

__all__ = [
    "FusedGraph",
    "FusionMode",
    "fuse",
    "ModalityFusion",
    "LATENT",
    "ModalityAttention",
    "ModalityTransformerLayer",
    "ModalityTransformer",
]

#: How :func:`fuse` links the modalities (the table in the module docstring).
FusionMode = Literal["complete", "intra+cross", "bottleneck"]
_MODES = ("complete", "intra+cross", "bottleneck")
#: modality name of the latent nodes in bottleneck mode.
LATENT = "latent"


@dataclass
class FusedGraph:
    """Node sets of several modalities joined into one graph.

    Attributes:
        nodes: the concatenated nodes (latents last in bottleneck mode).
        graph: the structure over ``N`` nodes, with key padding when any node is padded.
        modality_ids: index into ``modality_names`` of every node, ``(N,)``.
        modality_names: one name per input node set (then ``"latent"``).
        slices: ``name -> (start, stop)`` node range of each modality.
        mode: the fusion mode.
    """

    nodes: NodeSet
    graph: Graph
    modality_ids: Tensor
    modality_names: tuple[str, ...]
    slices: dict[str, tuple[int, int]]
    mode: str

    def pair_mask(self, dst: str, src: str) -> Tensor:
        """``(N, N)`` bool: ``True`` where the target is of modality ``dst`` and the source
        of modality ``src`` (structure and padding not applied)."""
        ids = self.modality_ids
        a, b = self._index("dst", dst), self._index("src", src)
        return (ids == a)[:, None] & (ids == b)[None, :]

    def _index(self, arg: str, name: str) -> int:
        check_str(arg, name)
        if name not in self.modality_names:
            raise ValueError(
                f"{arg} names unknown modality {name!r}; this graph has {self.modality_names}"
            )
        return self.modality_names.index(name)

    def modality_summary(self, attention: Tensor | AttentionWeights) -> Tensor:
        """Attention mass between modalities: entry ``[a, b]`` is the mean, over the real
        target nodes of modality ``a`` (and over samples and heads), of the total weight
        they give to sources of modality ``b``. Each row sums to 1 (for targets with
        in-edges). Rows of padded targets and columns of padded sources are left out with
        :func:`torch.where`, so NaN or inf there changes nothing.

        Args:
            attention: weights on this graph: :class:`graphattn.AttentionWeights`, or dense
                ``(B, H, N, N)``, ``(B, N, N)`` or ``(N, N)``.

        Shapes:
            - returns ``(M, M)``, rows = target modality, columns = source modality.
        """
        if not isinstance(attention, AttentionWeights):
            check_tensor("attention", attention, "AttentionWeights or a tensor (B, H, N, N)")
        w = attention.to_dense() if isinstance(attention, AttentionWeights) else attention
        n = self.nodes.num_nodes
        if w.shape[-2:] != (n, n) or w.dim() not in (2, 3, 4):
            raise ValueError(
                f"attention must be (N, N), (B, N, N) or (B, H, N, N) with N={n}, got "
                f"{tuple(w.shape)}"
            )
        if w.dim() == 4:
            w = w.mean(dim=1)  # (B, N, N): mean over heads
        b = self.nodes.batch_size
        if w.dim() == 2:
            w = w[None].expand(b, n, n)  # one map for every sample
        if w.shape[0] != b:
            raise ValueError(f"attention has batch {w.shape[0]} but the nodes have B={b}")
        m = len(self.modality_names)
        real = self.nodes.mask  # (B, N)
        # where, not a product: a NaN in a padded row or column must not reach the sums
        w = torch.where(real[:, :, None] & real[:, None, :], w, w.new_zeros(()))  # (B, N, N)
        onehot = nn.functional.one_hot(self.modality_ids, m).to(w.dtype)  # (N, M)
        mass = w @ onehot  # (B, N, M): weight of target i on each source modality
        per_dst = torch.einsum("bn,na,bnm->am", real.to(w.dtype), onehot, mass)  # (M, M)
        count = torch.einsum("bn,na->a", real.to(w.dtype), onehot).clamp_min(1.0)  # (M,)
        return per_dst / count[:, None]


def _block(dst: tuple[int, int], src: tuple[int, int], device: torch.device) -> Tensor:
    """All edges ``src range -> dst range``, ``(2, E)``."""
    d = torch.arange(*dst, device=device).repeat_interleave(src[1] - src[0])
    s = torch.arange(*src, device=device).repeat(dst[1] - dst[0])
    return torch.stack([s, d])


def fuse(
    nodesets: Sequence[NodeSet],
    *,
    mode: FusionMode = "complete",
    cross_links: Sequence[tuple[str, str]] | None = None,
    symmetric: bool = True,
    intra: Literal["complete", "own"] = "complete",
    num_latents: int | None = None,
    latents: Tensor | None = None,
) -> FusedGraph:
    """Join single-modality node sets into one node set and one graph.

    Args:
        nodesets: one :class:`NodeSet` per modality, same batch size and feature size,
            distinct ``modality`` labels (relabel two images as ``"image0"``, ``"image1"``).
        mode: ``"complete"``, ``"intra+cross"`` or ``"bottleneck"`` (module docstring).
        cross_links: ``intra+cross`` only: pairs of modality names to link. ``None``: no
            cross-modal edges (each modality on its own).
        symmetric: a pair ``(a, b)`` links both ways; with ``False`` it means that the
            nodes of ``a`` attend to the nodes of ``b`` (edges ``b -> a``) only.
        intra: ``"complete"`` links every pair of nodes inside a modality; ``"own"`` uses
            each node set's own default structure (``nodes.graph()``: causal text, grid
            images).
        num_latents: ``bottleneck`` only: number of latent nodes (zero features) when
            ``latents`` is not given.
        latents: ``bottleneck`` only: latent node features, ``(L, D)`` or ``(B, L, D)``.

    Returns:
        A :class:`FusedGraph`.

    Example:
        >>> import torch
        >>> ones = lambda n: torch.ones(1, n, dtype=torch.bool)
        >>> t = NodeSet(torch.randn(1, 2, 4), ones(2), modality="text")
        >>> i = NodeSet(torch.randn(1, 3, 4), ones(3), modality="image")
        >>> fused = fuse([t, i], mode="intra+cross", cross_links=[("text", "image")],
        ...              symmetric=False)
        >>> fused.graph.num_edges  # 2*2 + 3*3 + 2*3 (text attends to image)
        19
    """
    check_choice("mode", mode, _MODES)
    check_choice("intra", intra, ("complete", "own"))
    symmetric = check_bool("symmetric", symmetric)
    nodesets = _check_nodesets(nodesets)
    if cross_links is not None:
        cross_links = check_sequence("cross_links", cross_links, "pairs of modality names")
    num_latents = check_int("num_latents", num_latents, optional=True)
    if latents is not None:
        check_tensor("latents", latents, "a tensor of shape (L, D) or (B, L, D)")
    names: list[str] = []
    for i, ns in enumerate(nodesets):
        if len(ns.modality_names) != 1:
            raise ValueError(
                f"nodesets[{i}] mixes modalities {ns.modality_names}; pass one NodeSet per modality"
            )
        if ns.modality in names:
            raise ValueError(
                f"modality {ns.modality!r} appears twice; give each NodeSet its own label"
            )
        names.append(ns.modality)
    if mode != "intra+cross" and cross_links is not None:
        raise ValueError(f"cross_links applies to mode='intra+cross' only, got mode={mode!r}")
    if mode != "bottleneck" and (num_latents is not None or latents is not None):
        raise ValueError(
            f"num_latents and latents apply to mode='bottleneck' only, got mode={mode!r}"
        )
    first = nodesets[0]
    parts = list(nodesets)
    if mode == "bottleneck":
        if LATENT in names:
            raise ValueError(f"modality name {LATENT!r} is reserved for the latent nodes")
        parts.append(_latent_nodes(first, num_latents, latents))
        names.append(LATENT)
    nodes = NodeSet.concat(*parts)
    device, n = nodes.device, nodes.num_nodes
    slices: dict[str, tuple[int, int]] = {}
    start = 0
    for name, ns in zip(names, parts, strict=True):
        slices[name] = (start, start + ns.num_nodes)
        start += ns.num_nodes

    if mode == "complete":
        graph: Graph = Graph.complete(n, device=device)
    else:
        blocks = []
        for name, ns in zip(names, parts, strict=True):
            lo, hi = slices[name]
            if intra == "own" and name != LATENT:
                blocks.append(ns.graph().edge_index().to(device) + lo)
            else:
                blocks.append(_block((lo, hi), (lo, hi), device))
        for dst, src in _linked_pairs(names, mode, cross_links, symmetric):
            blocks.append(_block(slices[dst], slices[src], device))
        edge_index = torch.cat(blocks, dim=1)  # (2, E)
        order = torch.argsort(edge_index[1] * n + edge_index[0])  # by target, then source
        graph = Graph.from_edge_index(edge_index[:, order].contiguous(), n, n)
    if not bool(nodes.mask.all()):
        graph = graph.pad(key_padding_mask=nodes.key_padding_mask)
    return FusedGraph(
        nodes=nodes,
        graph=graph,
        modality_ids=nodes.modality_ids,
        modality_names=nodes.modality_names,
        slices=slices,
        mode=mode,
    )


def _check_nodesets(nodesets: Sequence[NodeSet]) -> list[NodeSet]:
    """``nodesets`` as a non-empty list of :class:`NodeSet`."""
    nodesets = check_sequence("nodesets", nodesets, "NodeSet")
    if not nodesets:
        raise ValueError("nodesets must hold at least one NodeSet, got none")
    for i, ns in enumerate(nodesets):
        if not isinstance(ns, NodeSet):
            raise arg_error(TypeError, f"nodesets[{i}]", "a NodeSet", ns)
    return nodesets


def _latent_nodes(first: NodeSet, num_latents: int | None, latents: Tensor | None) -> NodeSet:
    b, d = first.batch_size, first.dim
    if latents is None:
        if num_latents is None:
            raise ValueError("mode='bottleneck' needs num_latents or latents, got neither")
        feats = first.features.new_zeros(b, num_latents, d)  # (B, L, D)
    else:
        if latents.dim() == 2:
            latents = latents[None].expand(b, -1, -1)  # (B, L, D)
        if latents.dim() != 3 or latents.shape[0] != b or latents.shape[2] != d:
            raise ValueError(
                f"latents must have shape (L, D={d}) or (B={b}, L, D={d}), got "
                f"{tuple(latents.shape)}"
            )
        if num_latents is not None and num_latents != latents.shape[1]:
            raise ValueError(f"num_latents={num_latents} but latents has {latents.shape[1]} nodes")
        if latents.shape[1] == 0:
            raise ValueError("latents must hold at least one node, got L=0")
        feats = latents.to(first.features.dtype)
    mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
    return NodeSet(feats, mask, modality=LATENT)


def _linked_pairs(
    names: list[str],
    mode: str,
    cross_links: Sequence[tuple[str, str]] | None,
    symmetric: bool,
) -> list[tuple[str, str]]:
    """``(dst, src)`` modality pairs linked by a bipartite complete block."""
    pairs: list[tuple[str, str]] = []
    if mode == "bottleneck":
        for name in names[:-1]:
            pairs += [(LATENT, name), (name, LATENT)]
        return pairs
    for i, link in enumerate(cross_links or []):
        if not isinstance(link, tuple | list):
            raise arg_error(TypeError, f"cross_links[{i}]", "a pair of modality names", link)
        if len(link) != 2:
            raise arg_error(ValueError, f"cross_links[{i}]", "a pair of modality names", link)
        a, b = link
        for name in (a, b):
            if name not in names:
                raise ValueError(
                    f"cross link {tuple(link)} names unknown modality {name!r}; "
                    f"the node sets are {names}"
                )
        if a == b:
            raise ValueError(
                f"cross link {tuple(link)} links {a!r} to itself; intra edges are always present"
            )
        for pair in [(a, b), (b, a)] if symmetric else [(a, b)]:
            if pair not in pairs:
                pairs.append(pair)
    return pairs


class ModalityFusion(nn.Module):
    """Learned modality embeddings (and latent nodes) + :func:`fuse`.

    Every node gets the embedding of its modality added to its features; with
    ``num_latents > 0`` the module owns ``L`` learned latent nodes for the bottleneck mode.

    Args:
        dim: node feature size ``D``.
        modality_names: the modalities this module knows, e.g. ``("text", "image")``.
        num_latents: learned latent nodes (``0``: none; bottleneck mode unavailable).

    Shapes:
        - input: node sets ``(B, N_m, D)``
        - output: :class:`FusedGraph` with nodes ``(B, sum N_m [+ L], D)``

    Example:
        >>> fusion = ModalityFusion(8, ("text", "image"), num_latents=2)
        >>> t = NodeSet(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), modality="text")
        >>> i = NodeSet(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), modality="image")
        >>> fusion([t, i]).nodes.features.shape  # bottleneck by default when L > 0
        torch.Size([1, 9, 8])
    """

    def __init__(self, dim: int, modality_names: Sequence[str], num_latents: int = 0) -> None:
        super().__init__()
        dim = self.dim = check_int("dim", dim)
        names = tuple(check_sequence("modality_names", modality_names, "str"))
        for i, name in enumerate(names):
            check_str(f"modality_names[{i}]", name)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"modality_names must be distinct strings, got {names!r}")
        if LATENT in names:
            raise ValueError(f"modality name {LATENT!r} is reserved for the latent nodes")
        num_latents = check_int("num_latents", num_latents, minimum=0)
        self.modality_names = names
        self.num_latents = num_latents
        self.modality_embedding = nn.Parameter(torch.empty(len(names), dim))
        if num_latents:
            self.latents = nn.Parameter(torch.empty(num_latents, dim))
        else:
            self.register_parameter("latents", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) embeddings and latents (as ViT's position embedding)."""
        nn.init.trunc_normal_(self.modality_embedding, std=0.02)
        if self.latents is not None:
            nn.init.trunc_normal_(self.latents, std=0.02)

    def forward(
        self,
        nodesets: Sequence[NodeSet],
        *,
        mode: FusionMode | None = None,
        cross_links: Sequence[tuple[str, str]] | None = None,
        symmetric: bool = True,
        intra: Literal["complete", "own"] = "complete",
    ) -> FusedGraph:
        """Add modality embeddings and fuse (see :func:`fuse`).

        Args:
            nodesets: one node set per modality; each ``modality`` must be one of
                ``modality_names``.
            mode: default ``"bottleneck"`` when the module has latents, else ``"complete"``.
            cross_links: as in :func:`fuse`.
            symmetric: as in :func:`fuse`.
            intra: as in :func:`fuse`.
        """
        if mode is None:
            mode = "bottleneck" if self.num_latents else "complete"
        check_choice("mode", mode, _MODES)
        if mode == "bottleneck" and not self.num_latents:
            raise ValueError("mode='bottleneck' needs latents: build with num_latents > 0")
        embedded = []
        for i, ns in enumerate(_check_nodesets(nodesets)):
            if ns.modality not in self.modality_names:
                raise ValueError(
                    f"nodesets[{i}] has modality {ns.modality!r}, not one of {self.modality_names}"
                )
            if ns.dim != self.dim:
                raise ValueError(f"nodesets[{i}] has feature size {ns.dim} but dim={self.dim}")
            emb = self.modality_embedding[self.modality_names.index(ns.modality)]  # (D,)
            embedded.append(ns.with_features(ns.features + emb))
        return fuse(
            embedded,
            mode=mode,
            cross_links=cross_links,
            symmetric=symmetric,
            intra=intra,
            latents=self.latents if mode == "bottleneck" else None,
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, modality_names={self.modality_names}, num_latents={self.num_latents}"
        )


# ----------------------------------------------------------------------------- per-modality
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


def _check_types(node_type: Any, n: int, num_types: int) -> Tensor:
    """``node_type`` as integer ids ``(N,)`` in ``[0, num_types)``."""
    check_tensor("node_type", node_type, "integer ids (N,)")
    if node_type.dim() != 1 or node_type.shape[0] != n or node_type.is_floating_point():
        raise ValueError(
            f"node_type must be integer ids of shape (N={n},), got "
            f"{tuple(node_type.shape)} ({node_type.dtype})"
        )
    if n and (int(node_type.min()) < 0 or int(node_type.max()) >= num_types):
        raise ValueError(
            f"node_type must lie in [0, num_types={num_types}), got ids from "
            f"{int(node_type.min())} to {int(node_type.max())}"
        )
    return node_type


class ModalityAttention(nn.Module):
    """Multi-head self-attention over a graph with one query, key, value and output
    projection per node type (modality): HGT's per-type projections (Hu et al.,
    "Heterogeneous Graph Transformer", 2020) around :func:`graphattn.graph_attention`.

    For a target ``i`` of type ``t`` and its in-edges from sources ``j`` of type ``s``::

        q_i = Q_t x_i,   k_j = K_s x_j,   v_j = V_s x_j                 (per head)
        out_i = O_t (sum_j softmax_j(<q_i, k_j> / sqrt(Dh)) v_j)         (heads concatenated)

    The projections are :class:`graphattn.TypedLinear` maps; the attention itself is the
    shared operator on the whole graph (one softmax over every in-edge, any backend). With
    every type's weights equal it is :class:`graphattn.GraphAttention` (see
    :meth:`from_graph_attention`). Unlike :class:`graphattn.HGTConv` it has no per-relation
    matrices or priors: one projection per modality, not per modality pair.

    Args:
        embed_dim: model width ``C``.
        num_heads: attention heads ``H`` (must divide ``C``).
        num_types: node types ``T`` (modalities).
        dropout: dropout on the attention weights during training.
        bias: biases in the projections.
        backend: attention backend, ``"auto"`` or a registered backend.

    Attributes:
        in_proj: :class:`graphattn.TypedLinear` ``C -> 3C`` (query, key, value stacked).
        out_proj: :class:`graphattn.TypedLinear` ``C -> C``.

    Shapes:
        - x: ``(B, N, C)``; node_type: ``(N,)`` ids in ``[0, T)``; returns ``(B, N, C)``.

    Example:
        >>> from graphattn import Graph
        >>> attn = ModalityAttention(8, 2, num_types=2)
        >>> attn(torch.randn(3, 5, 8), Graph.complete(5), torch.tensor([0, 0, 1, 1, 1])).shape
        torch.Size([3, 5, 8])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_types: int,
        *,
        dropout: float = 0.0,
        bias: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.embed_dim = check_int("embed_dim", embed_dim)
        self.num_heads = check_int("num_heads", num_heads)
        self.num_types = check_int("num_types", num_types)
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        dropout = check_float("dropout", dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.backend = check_str("backend", backend)
        self.in_proj = TypedLinear(embed_dim, 3 * embed_dim, num_types, bias=bias)
        self.out_proj = TypedLinear(embed_dim, embed_dim, num_types, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every type as a fresh :class:`graphattn.GraphAttention` (``nn.MultiheadAttention``'s
        initialisation): Xavier-uniform ``(3C, C)`` input projection, ``nn.Linear`` output
        projection, zero biases."""
        for t in range(self.num_types):
            nn.init.xavier_uniform_(self.in_proj.weight[t])  # (3C, C), fans as MHA's
        self.out_proj.reset_parameters()
        for lin in (self.in_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    @classmethod
    def from_graph_attention(cls, attn: GraphAttention, num_types: int) -> ModalityAttention:
        """Every type a copy of ``attn``'s projections: the same outputs as ``attn`` until
        training moves the types apart.

        Raises:
            ValueError: ``attn`` has what this module lacks (separate key/value widths, edge
                features, a score other than the dot product) or is not batch first.
        """
        if not isinstance(attn, GraphAttention):
            raise TypeError(f"attn must be a GraphAttention, got {type(attn).__name__}")
        w = attn.in_proj_weight
        if w is None or w.shape != (3 * attn.embed_dim, attn.embed_dim):
            raise ValueError(
                "attn must project queries, keys and values from one embed_dim-wide input "
                f"(a packed in_proj_weight (3C, C)), got in_proj_weight "
                f"{None if w is None else tuple(w.shape)}"
            )
        if attn.lin_edge is not None or attn.score is not None or not attn.batch_first:
            raise ValueError(
                "attn must have no edge features, the default score and batch_first=True, got "
                f"edge_dim={attn.edge_dim}, score={attn.score!r}, batch_first={attn.batch_first}"
            )
        new = cls(
            attn.embed_dim,
            attn.num_heads,
            num_types,
            dropout=attn.dropout,
            bias=attn.in_proj_bias is not None,
            backend=attn.backend,
        ).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(w.expand_as(new.in_proj.weight))
            new.out_proj.weight.copy_(attn.out_proj.weight.expand_as(new.out_proj.weight))
            if new.in_proj.bias is not None:
                new.in_proj.bias.copy_(attn.in_proj_bias.expand_as(new.in_proj.bias))
                new.out_proj.bias.copy_(attn.out_proj.bias.expand_as(new.out_proj.bias))
        return new

    def _attend(
        self, x: Tensor, graph: Graph, node_type: Tensor, with_weights: bool
    ) -> Tensor | AttentionOutput:
        check_tensor("x", x, "a tensor (B, N, C)")
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must be (B, N, C={self.embed_dim}), got {tuple(x.shape)}")
        if not isinstance(graph, Graph):
            raise arg_error(TypeError, "graph", "a graphattn.Graph", graph)
        bsz, n, c = x.shape
        node_type = _check_types(node_type, n, self.num_types).to(x.device)
        x = zero_padded_nodes(x, graph.key_padding_mask)  # NaN padding must not spread
        h, dh = self.num_heads, self.head_dim
        q, k, v = self.in_proj(x, node_type).chunk(3, dim=-1)  # 3 x (B, N, C)
        q = q.view(bsz, n, h, dh).transpose(1, 2)  # (B, H, N, Dh)
        k = k.view(bsz, n, h, dh).transpose(1, 2)  # (B, H, N, Dh)
        v = v.view(bsz, n, h, dh).transpose(1, 2)  # (B, H, N, Dh)
        p = self.dropout if self.training else 0.0
        attend = graph_attention_with_weights if with_weights else graph_attention
        res = attend(q, k, v, graph, dropout_p=p, backend=self.backend)
        out = res.out if with_weights else res  # (B, H, N, Dh)
        out = out.transpose(1, 2).reshape(bsz, n, c)  # (B, N, C)
        out = self.out_proj(out, node_type)  # (B, N, C)
        return AttentionOutput(out, res.attention, res.backend) if with_weights else out

    def forward(self, x: Tensor, graph: Graph, node_type: Tensor) -> Tensor:
        """Attend over ``graph`` with every node projected by its type's weights.

        Args:
            x: node features (batch first).
            graph: the structure over the ``N`` nodes; its key padding mask, if any, marks
                padded nodes (as :func:`fuse` attaches it).
            node_type: the type id of every node.

        Shapes:
            - x: ``(B, N, C)``; node_type: ``(N,)``; returns ``(B, N, C)``.
        """
        return self._attend(x, graph, node_type, with_weights=False)

    def forward_with_weights(self, x: Tensor, graph: Graph, node_type: Tensor) -> AttentionOutput:
        """:meth:`forward`, also returning the attention weights (forward hooks do not run).

        Shapes:
            - ``out`` ``(B, N, C)``; ``attention`` per edge or dense (see
              :class:`graphattn.AttentionWeights`).
        """
        return self._attend(x, graph, node_type, with_weights=True)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_types={self.num_types}, dropout={self.dropout}"
        )


class ModalityTransformerLayer(nn.Module):
    """:class:`graphattn.GraphTransformerLayer` with :class:`ModalityAttention` as its
    self-attention: per-modality attention projections, one feed-forward block and one pair
    of norms for all nodes. The sub-modules carry the reference layer's names (``self_attn``,
    ``linear1``, ``linear2``, ``norm1``, ``norm2``).

    Args:
        embed_dim: model width ``C``.
        num_heads: attention heads ``H``.
        num_types: node types ``T`` (modalities).
        dim_feedforward: hidden size of the feed-forward block.
        dropout: dropout on attention weights, the feed-forward hidden layer and both
            residual branches.
        activation: ``"relu"``, ``"gelu"`` or a callable.
        norm_first: pre-norm (default) or post-norm, as in the reference layer.
        layer_norm_eps: LayerNorm epsilon.
        backend: attention backend.

    Shapes:
        - x: ``(B, N, C)``; node_type: ``(N,)``; returns ``(B, N, C)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_types: int,
        *,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Literal["relu", "gelu"] | Callable[[Tensor], Tensor] = "relu",
        norm_first: bool = True,
        layer_norm_eps: float = 1e-5,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_int("dim_feedforward", dim_feedforward)
        if isinstance(activation, str):
            activation = _ACTIVATIONS[check_choice("activation", activation, tuple(_ACTIVATIONS))]
        elif not callable(activation):
            raise arg_error(TypeError, "activation", "'relu', 'gelu' or a callable", activation)
        self.self_attn = ModalityAttention(
            embed_dim, num_heads, num_types, dropout=dropout, backend=backend
        )
        self.linear1 = nn.Linear(embed_dim, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, embed_dim)
        self.norm_first = check_bool("norm_first", norm_first)
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation

    @classmethod
    def from_graph_transformer_layer(
        cls, layer: GraphTransformerLayer, num_types: int
    ) -> ModalityTransformerLayer:
        """A copy of ``layer`` whose attention projections are copied to every type (same
        outputs until training moves the types apart)."""
        if not isinstance(layer, GraphTransformerLayer):
            raise TypeError(f"layer must be a GraphTransformerLayer, got {type(layer).__name__}")
        if layer.linear1.bias is None or layer.norm1.bias is None:
            raise ValueError("layer must have biases (built with bias=True), got bias=False")
        new = cls(
            layer.embed_dim,
            layer.num_heads,
            num_types,
            dim_feedforward=layer.linear1.out_features,
            dropout=layer.dropout.p,
            activation=layer.activation,
            norm_first=layer.norm_first,
            layer_norm_eps=layer.norm1.eps,
        )
        new.self_attn = ModalityAttention.from_graph_attention(layer.self_attn, num_types)
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(new, name).load_state_dict(getattr(layer, name).state_dict())
        for name in ("dropout1", "dropout2"):
            getattr(new, name).p = getattr(layer, name).p
        return new.to(layer.linear1.weight.device)

    def reset_parameters(self) -> None:
        """Re-initialise as a fresh layer."""
        self.self_attn.reset_parameters()
        for module in (self.linear1, self.linear2, self.norm1, self.norm2):
            module.reset_parameters()

    def _run(
        self, x: Tensor, graph: Graph, node_type: Tensor, with_weights: bool
    ) -> Tensor | LayerOutput:
        if isinstance(graph, Graph):  # NaN in padded nodes must not reach the gradients
            x = zero_padded_nodes(x, graph.key_padding_mask)
        attend = self.self_attn.forward_with_weights if with_weights else self.self_attn
        res = attend(self.norm1(x) if self.norm_first else x, graph, node_type)
        h, attention = (res.out, res.attention) if with_weights else (res, None)
        if self.norm_first:
            x = x + self.dropout1(h)  # (B, N, C)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self.dropout1(h))  # (B, N, C)
            x = self.norm2(x + self._ff_block(x))
        return LayerOutput(x, attention) if with_weights else x

    def _ff_block(self, x: Tensor) -> Tensor:
        h = self.dropout(self.activation(self.linear1(x)))  # (B, N, F)
        return self.dropout2(self.linear2(h))  # (B, N, C)

    def forward(self, x: Tensor, graph: Graph, node_type: Tensor) -> Tensor:
        """Run the layer (see :class:`ModalityAttention` for the arguments).

        Shapes:
            - x: ``(B, N, C)``; node_type: ``(N,)``; returns ``(B, N, C)``.
        """
        return self._run(x, graph, node_type, with_weights=False)

    def forward_with_weights(self, x: Tensor, graph: Graph, node_type: Tensor) -> LayerOutput:
        """:meth:`forward`, also returning the self-attention weights.

        Shapes:
            - ``out`` ``(B, N, C)``; ``attention`` per edge or dense.
        """
        return self._run(x, graph, node_type, with_weights=True)

    def extra_repr(self) -> str:
        return f"dim_feedforward={self.linear1.out_features}, norm_first={self.norm_first}"


class ModalityTransformer(nn.Module):
    """A stack of :class:`ModalityTransformerLayer` s over a :class:`FusedGraph`: the
    :class:`graphattn.GraphTransformer` of a fusion block with one query, key, value and
    output projection per modality in every layer (HGT-style), the rest shared.

    Each node's modality comes from the fused graph by name, so the node sets may be fused in
    any order and any subset of ``modality_names`` (include ``"latent"`` for the bottleneck
    mode's latent nodes).

    Args:
        num_layers: number of layers ``L``.
        embed_dim: model width ``C``.
        num_heads: attention heads ``H``.
        modality_names: the modalities, one projection each.
        dim_feedforward: hidden size of each feed-forward block.
        dropout: dropout (see :class:`ModalityTransformerLayer`).
        activation: ``"relu"``, ``"gelu"`` or a callable.
        norm_first: pre-norm layers (default) or post-norm.
        final_norm: a LayerNorm after the last layer, when ``norm_first``.
        layer_norm_eps: LayerNorm epsilon.
        backend: attention backend.

    Shapes:
        - x: ``(B, N, C)``, the fused graph's ``N`` nodes; returns ``(B, N, C)``.

    Example:
        >>> ones = lambda n: torch.ones(2, n, dtype=torch.bool)
        >>> t = NodeSet(torch.randn(2, 3, 8), ones(3), modality="text")
        >>> i = NodeSet(torch.randn(2, 4, 8), ones(4), modality="image")
        >>> fused = fuse([t, i])
        >>> model = ModalityTransformer(1, 8, 2, ("image", "text"), dim_feedforward=16)
        >>> model(fused.nodes.features, fused).shape
        torch.Size([2, 7, 8])
        >>> model.node_types(fused).tolist()  # by name: "text" is type 1 of the model
        [1, 1, 1, 0, 0, 0, 0]
    """

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        num_heads: int,
        modality_names: Sequence[str],
        *,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Literal["relu", "gelu"] | Callable[[Tensor], Tensor] = "relu",
        norm_first: bool = True,
        final_norm: bool = True,
        layer_norm_eps: float = 1e-5,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_int("num_layers", num_layers)
        names = tuple(check_sequence("modality_names", modality_names, "str"))
        for i, name in enumerate(names):
            check_str(f"modality_names[{i}]", name)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"modality_names must be distinct strings, got {names!r}")
        self.modality_names = names
        self.layers = nn.ModuleList(
            ModalityTransformerLayer(
                embed_dim,
                num_heads,
                len(names),
                dim_feedforward=dim_feedforward,
                dropout=dropout,
                activation=activation,
                norm_first=norm_first,
                layer_norm_eps=layer_norm_eps,
                backend=backend,
            )
            for _ in range(num_layers)
        )
        final = check_bool("final_norm", final_norm) and check_bool("norm_first", norm_first)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps) if final else None

    @classmethod
    def from_graph_transformer(
        cls, model: GraphTransformer, modality_names: Sequence[str]
    ) -> ModalityTransformer:
        """A copy of ``model`` with every layer's attention projections copied to every
        modality: the same outputs as ``model`` on the fused graph until training moves the
        modalities apart."""
        if not isinstance(model, GraphTransformer):
            raise TypeError(f"model must be a GraphTransformer, got {type(model).__name__}")
        first = model.layers[0]
        new = cls(
            model.num_layers,
            first.embed_dim,
            first.num_heads,
            modality_names,
            dim_feedforward=first.linear1.out_features,
            final_norm=False,
        )
        new.layers = nn.ModuleList(
            ModalityTransformerLayer.from_graph_transformer_layer(layer, len(new.modality_names))
            for layer in model.layers
        )
        new.norm = None if model.norm is None else copy.deepcopy(model.norm)
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

    def node_types(self, fused: FusedGraph) -> Tensor:
        """Every node's type id in this model (its modality's index in ``modality_names``).

        Raises:
            ValueError: the fused graph has a modality this model has no projection for.

        Shapes:
            - returns ``(N,)`` long.
        """
        if not isinstance(fused, FusedGraph):
            raise arg_error(TypeError, "fused", "a FusedGraph (from fuse or ModalityFusion)", fused)
        unknown = [m for m in fused.modality_names if m not in self.modality_names]
        if unknown:
            raise ValueError(
                f"fused has modalities {unknown} that this ModalityTransformer has no "
                f"projections for; its modality_names are {self.modality_names}"
            )
        lookup = [self.modality_names.index(m) for m in fused.modality_names]  # (M,)
        lookup_t = torch.tensor(lookup, dtype=torch.long, device=fused.modality_ids.device)
        return lookup_t[fused.modality_ids]  # (N,)

    def _run(self, x: Tensor, fused: FusedGraph, with_weights: bool) -> Tensor | TransformerOutput:
        node_type = self.node_types(fused)  # (N,)
        n = fused.nodes.num_nodes
        check_tensor("x", x, "a tensor (B, N, C)")
        if x.dim() != 3 or x.shape[1] != n:
            raise ValueError(f"x must be (B, N={n}, C) like the fused nodes, got {tuple(x.shape)}")
        attentions: list[AttentionWeights] = []
        for layer in self.layers:
            if with_weights:
                res = layer.forward_with_weights(x, fused.graph, node_type)
                x = res.out  # (B, N, C)
                attentions.append(res.attention)
            else:
                x = layer(x, fused.graph, node_type)  # (B, N, C)
        if self.norm is not None:
            x = self.norm(x)
        return TransformerOutput(x, attentions) if with_weights else x

    def forward(self, x: Tensor, fused: FusedGraph) -> Tensor:
        """Run all layers on the fused graph.

        Args:
            x: node features of the fused layout (``fused.nodes.features`` or what earlier
                layers made of them).
            fused: the graph, its padding and every node's modality.

        Shapes:
            - x: ``(B, N, C)``; returns ``(B, N, C)``.
        """
        return self._run(x, fused, with_weights=False)

    def forward_with_weights(self, x: Tensor, fused: FusedGraph) -> TransformerOutput:
        """:meth:`forward`, also returning every layer's attention weights (first layer
        first), e.g. for :meth:`FusedGraph.modality_summary`.

        Shapes:
            - x: ``(B, N, C)``; ``out`` ``(B, N, C)``; ``attentions``: ``L`` entries.
        """
        return self._run(x, fused, with_weights=True)

    def extra_repr(self) -> str:
        first = self.layers[0]
        return (
            f"num_layers={len(self.layers)}, embed_dim={first.self_attn.embed_dim}, "
            f"num_heads={first.self_attn.num_heads}, modality_names={self.modality_names}, "
            f"final_norm={self.norm is not None}"
        )
