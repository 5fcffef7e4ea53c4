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

Axis legend: ``B`` batch, ``N`` nodes (all modalities), ``L`` latents, ``M`` modalities,
``E`` edges, ``H`` heads, ``D`` feature size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from graphattn import AttentionWeights, Graph

from ._common import (
    arg_error,
    check_bool,
    check_choice,
    check_int,
    check_sequence,
    check_str,
    check_tensor,
)
from .nodes import NodeSet

__all__ = ["FusedGraph", "FusionMode", "fuse", "ModalityFusion", "LATENT"]

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
