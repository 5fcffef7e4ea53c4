"""Explanations: what the attention of a model did, and whether it mattered.

- :func:`attention_rollout` composes the attention of successive layers (Abnar & Zuidema,
  2020), with the identity standing in for the residual connection.
- :func:`grad_attention` weights attention by its gradient and propagates relevance through
  self- and cross-attention layers (Chefer, Gur & Wolf, 2021).
- :func:`head_statistics` measures every head: entropy, mean attended distance, peak weight.
- :func:`perturbation_check` deletes the most-attended nodes and random nodes and compares
  how much the output moves: attention weights alone are not an explanation.
- :func:`summarize_by_modality` turns attention into a modality-by-modality table.

All functions take :class:`~graphattn.AttentionWeights` in either layout (per edge or dense)
or dense tensors ``([B,] H, Nd, Ns)``; a 2-D tensor is one head ``(Nd, Ns)``.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``N`` nodes,
``E`` edges, ``M`` modalities, ``K`` deleted nodes, ``R`` random draws.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_int
from .attention import GraphAttention
from .functional import AttentionWeights

__all__ = [
    "attention_rollout",
    "grad_attention",
    "grad_attention_by_role",
    "force_dense_backend",
    "HeadStatistics",
    "head_statistics",
    "PerturbationResult",
    "perturbation_check",
    "summarize_by_modality",
]

AttentionLike = AttentionWeights | Tensor
HeadReduce = Literal["mean", "max", "min"]


# ---------------------------------------------------------------------- layouts


def _as_dense(weights: AttentionLike) -> tuple[Tensor, bool]:
    """Dense weights ``(B, H, Nd, Ns)`` and whether the input had a batch dimension."""
    if isinstance(weights, AttentionWeights):
        dense = weights.to_dense()
        return (dense if weights.batched else dense[None]), weights.batched
    if not isinstance(weights, Tensor):
        raise TypeError(
            f"attention must be AttentionWeights or a tensor, got {type(weights).__name__}"
        )
    if weights.dim() == 2:
        return weights[None, None], False  # (1, 1, Nd, Ns)
    if weights.dim() == 3:
        return weights[None], False  # (1, H, Nd, Ns)
    if weights.dim() == 4:
        return weights, True
    raise ValueError(
        f"a dense attention tensor must be (Nd, Ns), (H, Nd, Ns) or (B, H, Nd, Ns), got "
        f"{tuple(weights.shape)}"
    )


@dataclass
class _EdgeForm:
    """Weights as a per-edge list (dense inputs: every pair is an edge)."""

    src: Tensor  # (E,)
    dst: Tensor  # (E,)
    values: Tensor  # (B, E, H)
    num_dst: int
    num_src: int
    padding: Tensor | None  # (B, Ns) True = padded source, or None
    batched: bool


def _edge_form(weights: AttentionLike) -> _EdgeForm:
    if isinstance(weights, AttentionWeights) and weights.layout == "edges":
        g = weights.graph
        src, dst = g.edge_index()
        vals = weights.values if weights.batched else weights.values[None]  # (B, E, H)
        return _EdgeForm(src, dst, vals, g.num_dst, g.num_src, g.key_padding_mask, True)
    dense, batched = _as_dense(weights)  # (B, H, Nd, Ns)
    b, h, nd, ns = dense.shape
    dev = dense.device
    src = torch.arange(ns, device=dev).repeat(nd)  # (Nd * Ns,) dst-major pairs
    dst = torch.arange(nd, device=dev).repeat_interleave(ns)
    vals = dense.permute(0, 2, 3, 1).reshape(b, nd * ns, h)  # (B, E, H)
    pad = weights.graph.key_padding_mask if isinstance(weights, AttentionWeights) else None
    return _EdgeForm(src, dst, vals, nd, ns, pad, batched)


def _valid_targets(form: _EdgeForm, target_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Row sums ``(B, Nd, H)`` and which targets count ``(B, Nd, H)``: those with weight,
    minus masked targets (default: in self-attention, nodes padded as sources)."""
    b, _, h = form.values.shape
    rowsum = form.values.new_zeros(b, form.num_dst, h).index_add_(1, form.dst, form.values)
    valid = rowsum > 0
    if target_mask is None and form.padding is not None and form.num_dst == form.num_src:
        target_mask = ~form.padding
    if target_mask is not None:
        tm = target_mask if target_mask.dim() == 2 else target_mask[None]
        if tm.shape[-1] != form.num_dst:
            raise ValueError(
                f"target_mask must be (B, Nd={form.num_dst}) or (Nd,), got "
                f"{tuple(target_mask.shape)}"
            )
        valid = valid & tm.to(torch.bool)[:, :, None]
    return rowsum, valid


def _reduce_heads(dense: Tensor, how: HeadReduce) -> Tensor:
    """``(B, H, Nd, Ns) -> (B, Nd, Ns)``."""
    if how == "mean":
        return dense.mean(1)
    if how == "max":
        return dense.amax(1)
    if how == "min":
        return dense.amin(1)
    raise ValueError(f"head_reduce must be 'mean', 'max' or 'min', got {how!r}")


def _normalize_rows(a: Tensor) -> Tensor:
    """Divide every row by its sum; rows summing to 0 stay 0."""
    s = a.sum(-1, keepdim=True)
    return torch.where(s > 0, a / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(a))


# ---------------------------------------------------------------------- rollout


def attention_rollout(
    attentions: Sequence[AttentionLike],
    *,
    residual: bool = True,
    head_reduce: HeadReduce = "mean",
) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in
    Transformers"): how much each output node draws, through all layers, on each input node.

    Per layer ``l`` the heads are reduced (``head_reduce``), the residual connection is
    modelled as ``A_hat = 0.5 * A + 0.5 * I`` (``residual=True``), rows are renormalised to
    sum to 1, and the layers are multiplied, last layer on the left:
    ``R = A_hat_L @ ... @ A_hat_1``. Per-edge weights are converted with ``to_dense()``, so
    the result is dense ``N x N`` whatever the graph.

    Args:
        attentions: one attention per layer, first layer first (e.g.
            ``GraphTransformer.forward_with_weights(x, graph).attentions``).
        residual: add the identity for the residual connection (needs self-attention).
        head_reduce: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads.

    Shapes:
        - each attention: ``([B,] H, N, N)`` dense, or per edge; without ``residual``,
          consecutive layers need only chain: ``Ns`` of layer ``l+1`` = ``Nd`` of layer ``l``.
        - returns ``(B, Nd_L, Ns_1)``, without ``B`` when the weights had no batch dim.

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> attention_rollout([a, a])
        tensor([[1.0000, 0.0000],
                [0.4375, 0.5625]])
    """
    if len(attentions) == 0:
        raise ValueError("attention_rollout needs the attention of at least one layer")
    result: Tensor | None = None
    any_batched = False
    for layer, weights in enumerate(attentions):
        dense, batched = _as_dense(weights)
        any_batched |= batched
        a = _reduce_heads(dense, head_reduce)  # (B, Nd, Ns)
        nd, ns = a.shape[-2:]
        if residual:
            if nd != ns:
                raise ValueError(
                    f"layer {layer} is cross-attention ({nd} targets x {ns} sources); the "
                    "residual identity needs self-attention: use residual=False"
                )
            eye = torch.eye(nd, dtype=a.dtype, device=a.device)
            a = 0.5 * a + 0.5 * eye
        a = _normalize_rows(a)
        if result is None:
            result = a
            continue
        if result.shape[-2] != ns:
            raise ValueError(
                f"layer {layer} has {ns} sources but layer {layer - 1} has "
                f"{result.shape[-2]} targets: the layers do not chain"
            )
        result = a @ result  # (B, Nd_l, Ns_1)
    assert result is not None
    return result if any_batched else result[0]


# ---------------------------------------------------------------------- gradient x attention


@contextlib.contextmanager
def force_dense_backend(module: nn.Module) -> Iterator[nn.Module]:
    """Run every :class:`~graphattn.GraphAttention` inside ``module`` on the dense backend
    for the duration of the ``with`` block (then restore each one's backend).

    Every backend returns weights the output is computed from, so :func:`grad_attention`
    works without this; it remains useful to compare backends, or to get the dense layout
    of the weights of complete graphs given as edge lists.
    """
    saved = [(m, m.backend) for m in module.modules() if isinstance(m, GraphAttention)]
    try:
        for m, _ in saved:
            m.backend = "dense"
        yield module
    finally:
        for m, backend in saved:
            m.backend = backend


_NOT_DIFFERENTIABLE = (
    "the attention weights of layer {layer} are not part of the autograd graph that "
    "computed the score ({why}). Gradient x attention needs the weights returned by the "
    "same forward pass that computed the score (forward_with_weights), not under "
    "torch.no_grad() and not detached."
)


def _differentiable(values: Tensor) -> tuple[Tensor, Tensor | None]:
    """The tensor to differentiate for ``values``: itself, or the contiguous base it is a
    view of (``GraphAttention`` returns ``weights[0]`` for unbatched inputs)."""
    base = values._base
    if base is not None and base.requires_grad and base.is_contiguous():
        return base, base
    return values, None


def _grad_of_view(grad_base: Tensor, values: Tensor, base: Tensor) -> Tensor:
    offset = values.storage_offset() - base.storage_offset()
    return grad_base.as_strided(values.shape, values.stride(), offset)


def _residual_normalize(r: Tensor) -> Tensor:
    """Chefer et al. eqs. (8)-(9): ``R_bar = rownorm(R - I) + I`` for a self-relevance."""
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    return _normalize_rows(r - eye) + eye


def grad_attention(
    score: Tensor,
    attentions: Sequence[AttentionLike],
    *,
    roles: Sequence[tuple[str, str]] | None = None,
    retain_graph: bool = False,
) -> Tensor:
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, 2021, "Generic
    Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
    Transformers", rules 5-11).

    Per layer, ``A_bar = mean_heads(clamp(dscore/dA * A, min=0))`` (rule 5). Relevance
    starts at ``R = I``; then, layer by layer (first layer first), ``R += A_bar @ R``
    (rule 6). Row ``i`` of ``R`` is the relevance of every node for output node ``i`` (e.g.
    the row of a CLS node). For several node sets and cross-attention, see
    :func:`grad_attention_by_role`.

    The weights must be part of the autograd graph that computed ``score`` (every backend
    returns weights the output is computed from, dense or per edge); a clear error says so
    otherwise. ``score`` may be a vector over the batch: its sum is differentiated,
    which gives per-sample gradients when the samples do not interact.

    Args:
        score: the output to explain (e.g. the logit of a class), any shape.
        attentions: the self-attention of every layer over one node set, first layer
            first, as ``forward_with_weights`` returns it (dense ``([B,] H, N, N)`` or per
            edge).
        roles: deprecated: call :func:`grad_attention_by_role` (with roles, this returns
            its dict, with a ``FutureWarning``).
        retain_graph: keep the autograd graph (to explain another score from the same pass).

    Shapes:
        - returns ``R`` ``(B, N, N)`` (no ``B`` for unbatched weights).

    Raises:
        ValueError: the weights are not differentiable, or a layer is not square (a
            cross-attention: use :func:`grad_attention_by_role`).
    """
    if roles is not None:
        warnings.warn(
            "grad_attention(..., roles=...) is deprecated (one return type per function): "
            "call grad_attention_by_role(score, attentions, roles), which returns the dict",
            FutureWarning,
            stacklevel=2,
        )
        return grad_attention_by_role(score, attentions, roles, retain_graph=retain_graph)
    cams = _relevance_maps(score, attentions, retain_graph, "grad_attention")
    batched = any(b for _, b in cams)
    n = cams[0][0].shape[-1]
    for layer, (a, _) in enumerate(cams):
        if a.shape[-2:] != (n, n):
            raise ValueError(
                f"layer {layer} has shape {tuple(a.shape[-2:])}, not ({n}, {n}): use "
                "grad_attention_by_role for cross-attention"
            )
    bsz = max(a.shape[0] for a, _ in cams)
    r = torch.eye(n, dtype=cams[0][0].dtype, device=cams[0][0].device).repeat(bsz, 1, 1)
    for a, _ in cams:
        r = r + a @ r  # rule 6
    return r if batched else r[0]


def grad_attention_by_role(
    score: Tensor,
    attentions: Sequence[AttentionLike],
    roles: Sequence[tuple[str, str]],
    *,
    retain_graph: bool = False,
) -> dict[tuple[str, str], Tensor]:
    """Gradient-weighted attention relevance over several node sets (Chefer, Gur & Wolf,
    2021, rules 5-11), for models that mix self- and cross-attention (e.g. image and text).

    Per layer, ``A_bar`` is as in :func:`grad_attention`. Relevance starts at ``R_xx = I``
    for every node set ``x`` and ``R_xy = 0`` for ``x != y``; then, layer by layer (first
    layer first):

    - self-attention within ``x``: ``R_xy += A_bar @ R_xy`` for every set ``y`` (rules 6-7);
    - ``x`` attends to ``y`` (cross-attention, ``A_bar`` is ``(N_x, N_y)``):
      ``R_xy += R_bar_xx^T @ A_bar @ R_bar_yy`` and ``R_xx += A_bar @ R_yx`` (rules 10-11),
      where ``R_bar = rownorm(R - I) + I`` (eqs. 8-9).

    Row ``i`` of ``R_xy`` is the relevance of every node of ``y`` for output node ``i`` of
    ``x`` (e.g. the row of a CLS node).

    Args:
        score: the output to explain (e.g. the logit of a class), any shape.
        attentions: the attention of every layer, first layer first (dense
            ``([B,] H, Nd, Ns)`` or per edge), part of the autograd graph of ``score``.
        roles: ``(target set, source set)`` names per layer, e.g. ``[("img", "img"),
            ("txt", "txt"), ("txt", "img")]``.
        retain_graph: keep the autograd graph (to explain another score from the same pass).

    Shapes:
        - returns ``{(x, y): R_xy}`` with ``R_xy`` ``(B, N_x, N_y)`` (no ``B`` for unbatched
          weights).

    Raises:
        ValueError: the weights are not differentiable, or the shapes do not fit the roles.
    """
    if len(roles) != len(attentions):
        raise ValueError(f"got {len(attentions)} attentions but {len(roles)} roles")
    cams = _relevance_maps(score, attentions, retain_graph, "grad_attention_by_role")
    batched = any(b for _, b in cams)
    return _propagate_roles([a for a, _ in cams], list(roles), batched)


def _relevance_maps(
    score: Tensor, attentions: Sequence[AttentionLike], retain_graph: bool, caller: str
) -> list[tuple[Tensor, bool]]:
    """Rule 5 per layer: ``(mean_heads(clamp(dscore/dA * A, min=0)) (B, Nd, Ns), batched)``."""
    if len(attentions) == 0:
        raise ValueError(f"{caller} needs the attention of at least one layer")
    if not isinstance(score, Tensor) or not score.requires_grad:
        raise ValueError(
            "score must be a tensor that requires grad (computed from the inputs outside "
            "torch.no_grad())"
        )
    tensors, bases = [], []
    for layer, w in enumerate(attentions):
        values = w.values if isinstance(w, AttentionWeights) else w
        if not isinstance(values, Tensor):
            raise TypeError(f"attention {layer} is a {type(w).__name__}, not attention weights")
        if not values.requires_grad:
            raise ValueError(
                _NOT_DIFFERENTIABLE.format(layer=layer, why="they do not require grad")
            )
        t, base = _differentiable(values)
        tensors.append(t)
        bases.append(base)
    grads = torch.autograd.grad(score.sum(), tensors, retain_graph=retain_graph, allow_unused=True)
    cams = []
    for layer, (w, g, base) in enumerate(zip(attentions, grads, bases, strict=True)):
        if g is None:
            raise ValueError(
                _NOT_DIFFERENTIABLE.format(layer=layer, why="the score does not depend on them")
            )
        values = w.values if isinstance(w, AttentionWeights) else w
        if base is not None:
            g = _grad_of_view(g, values, base)
        cam = (values * g).detach()  # rule 5, before the clamp; same layout as the weights
        if isinstance(w, AttentionWeights):
            cam = AttentionWeights(cam, w.graph, w.layout, w.batched)
        dense, batched = _as_dense(cam)  # (B, H, Nd, Ns); duplicated edges summed
        cams.append((dense.clamp(min=0).mean(1), batched))  # (B, Nd, Ns)
    return cams


def _propagate_roles(
    cams: list[Tensor], roles: list[tuple[str, str]], batched: bool
) -> dict[tuple[str, str], Tensor]:
    sizes: dict[str, int] = {}
    for layer, (a, (x, y)) in enumerate(zip(cams, roles, strict=True)):
        for name, n in ((x, a.shape[-2]), (y, a.shape[-1])):
            if sizes.setdefault(name, n) != n:
                raise ValueError(
                    f"layer {layer} gives node set {name!r} {n} nodes, an earlier layer "
                    f"{sizes[name]}"
                )
    bsz = max(a.shape[0] for a in cams)
    ref = cams[0]
    rel: dict[tuple[str, str], Tensor] = {}
    for x, nx in sizes.items():
        for y, ny in sizes.items():
            if x == y:
                rel[x, y] = torch.eye(nx, dtype=ref.dtype, device=ref.device).repeat(bsz, 1, 1)
            else:
                rel[x, y] = ref.new_zeros(bsz, nx, ny)
    for a, (x, y) in zip(cams, roles, strict=True):
        if x == y:  # rules 6-7: self-attention updates every relevance row of x
            for z in sizes:
                rel[x, z] = rel[x, z] + a @ rel[x, z]
        else:  # rules 10-11: x attends to y
            r_xx_bar = _residual_normalize(rel[x, x])
            r_yy_bar = _residual_normalize(rel[y, y])
            new_xy = rel[x, y] + r_xx_bar.transpose(-1, -2) @ a @ r_yy_bar
            new_xx = rel[x, x] + a @ rel[y, x]
            rel[x, y], rel[x, x] = new_xy, new_xx
    return rel if batched else {key: r[0] for key, r in rel.items()}


# ---------------------------------------------------------------------- head statistics


@dataclass
class HeadStatistics:
    """Per-head summaries of one attention layer, averaged over targets (with in-edges, not
    padded) and samples.

    Attributes:
        entropy: mean entropy of a target's weights in nats, ``(H,)``; ``log(d)`` for
            uniform attention over ``d`` sources, 0 for attention on one source.
        uniform_entropy: mean ``log(number of sources with nonzero weight)``, ``(H,)``: the
            entropy uniform attention would have (the upper bound).
        max_weight: mean of a target's largest weight, ``(H,)``.
        mean_distance: mean attended distance ``sum_j a_ij * |pos_i - pos_j|``, ``(H,)``, or
            ``None`` when positions are unknown (cross-attention without ``positions``).
    """

    entropy: Tensor
    uniform_entropy: Tensor
    max_weight: Tensor
    mean_distance: Tensor | None

    @property
    def num_heads(self) -> int:
        return self.entropy.shape[0]


def _positions(
    positions: Tensor | tuple[Tensor, Tensor] | None, nd: int, ns: int, device: torch.device
) -> tuple[Tensor, Tensor] | None:
    if positions is None:
        if nd != ns:
            return None
        pos = torch.arange(nd, device=device, dtype=torch.float32)
        return pos, pos
    pd, ps = positions if isinstance(positions, tuple) else (positions, positions)
    if pd.shape[0] != nd or ps.shape[0] != ns or pd.dim() not in (1, 2) or pd.dim() != ps.dim():
        raise ValueError(
            f"positions must be (N,) or (N, P) for the {nd} targets and {ns} sources (a "
            f"(targets, sources) pair for cross-attention), got {tuple(pd.shape)} and "
            f"{tuple(ps.shape)}"
        )
    return pd.to(device=device, dtype=torch.float32), ps.to(device=device, dtype=torch.float32)


def head_statistics(
    weights: AttentionLike,
    *,
    positions: Tensor | tuple[Tensor, Tensor] | None = None,
    target_mask: Tensor | None = None,
) -> HeadStatistics:
    """Entropy, mean attended distance and peak weight of every head.

    Works per edge, in ``O(E * H)`` memory, on per-edge and dense weights alike.

    Args:
        weights: one layer's attention (:class:`~graphattn.AttentionWeights` or dense).
        positions: node positions for the distance: ``(N,)`` 1-D (token index, time) or
            ``(N, P)`` coordinates (e.g. ``(row, col)`` of grid cells, Euclidean distance);
            a ``(targets, sources)`` pair for cross-attention. Default: the node index when
            ``Nd == Ns``.
        target_mask: ``(B, Nd)`` or ``(Nd,)`` bool, ``True`` = count this target. Default:
            in self-attention, the nodes that the graph's key padding marks as padded are
            left out.

    Shapes:
        - returns a :class:`HeadStatistics` of ``(H,)`` tensors.

    Example:
        >>> import math, torch
        >>> stats = head_statistics(torch.full((2, 5, 5), 0.2))  # uniform, 2 heads
        >>> torch.allclose(stats.entropy, torch.full((2,), math.log(5)))
        True
    """
    form = _edge_form(weights)
    vals = form.values.detach()  # (B, E, H)
    if vals.dtype in (torch.float16, torch.bfloat16):
        vals = vals.float()
    form = dataclasses.replace(form, values=vals)
    b, _, h = vals.shape
    _, valid = _valid_targets(form, target_mask)  # (B, Nd, H)
    count = valid.sum((0, 1)).clamp_min(1)  # (H,)

    def per_target(edge_terms: Tensor, reduce: str = "sum") -> Tensor:  # (B, E, H) -> (H,)
        out = vals.new_zeros(b, form.num_dst, h)
        if reduce == "sum":
            out.index_add_(1, form.dst, edge_terms)
        else:
            idx = form.dst[None, :, None].expand_as(edge_terms)
            out.scatter_reduce_(1, idx, edge_terms, "amax", include_self=True)
        return (out * valid).sum((0, 1)) / count

    entropy = per_target(-torch.special.xlogy(vals, vals))
    support = vals.new_zeros(b, form.num_dst, h)  # (B, Nd, H) sources with nonzero weight
    support.index_add_(1, form.dst, (vals > 0).to(vals.dtype))
    uniform = (support.clamp_min(1).log() * valid).sum((0, 1)) / count
    max_weight = per_target(vals, reduce="amax")
    pos = _positions(positions, form.num_dst, form.num_src, vals.device)
    mean_distance = None
    if pos is not None:
        pd, ps = pos
        diff = pd[form.dst] - ps[form.src]  # (E,) or (E, P)
        dist = diff.abs() if diff.dim() == 1 else diff.norm(dim=-1)  # (E,)
        mean_distance = per_target(vals * dist[None, :, None])
    return HeadStatistics(entropy, uniform, max_weight, mean_distance)


# ---------------------------------------------------------------------- perturbation


@dataclass
class PerturbationResult:
    """How much the output moved when nodes were deleted.

    Attributes:
        top_delta: change of the output (L2 norm over everything but the batch) after
            deleting the ``k`` most-attended nodes, ``(B,)``.
        random_delta: the same for ``k`` random nodes, one row per draw, ``(R, B)``.
        top_nodes: the deleted most-attended nodes, ``(B, K)``.
    """

    top_delta: Tensor
    random_delta: Tensor
    top_nodes: Tensor

    @property
    def random_mean(self) -> Tensor:
        """Mean change over the random draws, ``(B,)``."""
        return self.random_delta.mean(0)

    @property
    def ratio(self) -> float:
        """``mean(top_delta) / mean(random_delta)``: above 1 when the attended nodes matter
        more than random ones."""
        return float(self.top_delta.mean() / self.random_delta.mean().clamp_min(1e-30))


def _importance(
    attention: AttentionLike | Sequence[AttentionLike], target: int | None, n: int
) -> Tensor:
    """Node importance ``(B, N)`` or ``(N,)`` from attention (see perturbation_check)."""
    if isinstance(attention, Tensor) and attention.dim() in (1, 2):
        return attention
    if isinstance(attention, AttentionWeights) or isinstance(attention, Tensor):
        form = _edge_form(attention)
        vals = form.values.mean(-1)  # (B, E)
        if target is not None:
            vals = vals * (form.dst == target)[None]
        received = vals.new_zeros(vals.shape[0], form.num_src).index_add_(1, form.src, vals)
        return received if target is not None else received / form.num_dst
    rollout = attention_rollout(list(attention))  # ([B,] N, N)
    if rollout.dim() == 2:
        rollout = rollout[None]
    return rollout[:, target] if target is not None else rollout.mean(1)


def perturbation_check(
    model_fn: Callable[[Tensor, Tensor | None], Tensor],
    x: Tensor,
    attention: AttentionLike | Sequence[AttentionLike],
    *,
    k: int,
    num_random: int = 8,
    generator: torch.Generator | None = None,
    mode: Literal["mask", "zero"] = "mask",
    target: int | None = None,
    node_mask: Tensor | None = None,
) -> PerturbationResult:
    """Delete the ``k`` most-attended nodes, then ``k`` random nodes, and compare how much
    the output changes (a deletion test in the spirit of Serrano & Smith, 2019, "Is
    Attention Interpretable?"). If attention explained the output, deleting the attended
    nodes should change it more than deleting random ones.

    Importance of a node:

    - a tensor ``(B, N)`` or ``(N,)``: used as given (e.g. a row of :func:`grad_attention`);
    - one layer's attention: the weight it receives, averaged over heads and over all
      targets, or from target ``target`` only;
    - a list of layers' attention: the same on their :func:`attention_rollout`.

    Put the model in evaluation mode first: with dropout on, the deltas are random.

    Args:
        model_fn: ``model_fn(x, key_padding_mask) -> output`` (batch first). It is called
            with ``None`` for the unperturbed output; in ``"mask"`` mode with a ``(B, N)``
            bool mask, ``True`` = deleted (pass it on as key padding), in ``"zero"`` mode
            with ``None`` and the deleted nodes' features zeroed.
        x: node features ``(B, N, D)``.
        attention: the importance source, see above.
        k: number of nodes to delete.
        num_random: number of random draws.
        generator: random generator for the draws (CPU), for reproducibility.
        mode: ``"mask"`` (key padding) or ``"zero"`` (zero the features).
        target: explain this target node's attention rather than all targets'.
        node_mask: ``(B, N)`` bool, ``True`` = real node that may be deleted (padding
            excluded from both the top-k and the random draws).

    Shapes:
        - returns a :class:`PerturbationResult`: ``top_delta (B,)``, ``random_delta (R, B)``,
          ``top_nodes (B, K)``.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, N, D), got {tuple(x.shape)}")
    if mode not in ("mask", "zero"):
        raise ValueError(f"mode must be 'mask' or 'zero', got {mode!r}")
    b, n, _ = x.shape
    check_int("k", k, maximum=n)
    if num_random < 1:
        raise ValueError(f"num_random must be >= 1, got {num_random}")
    allowed = torch.ones(b, n, dtype=torch.bool, device=x.device)
    if node_mask is not None:
        allowed = node_mask.to(device=x.device, dtype=torch.bool).expand(b, n)
    if int(allowed.sum(1).min()) < k:
        raise ValueError(f"a sample has fewer than k={k} nodes that may be deleted")
    with torch.no_grad():
        imp = _importance(attention, target, n).detach().to(x.device).float()
        imp = imp.expand(b, n) if imp.dim() == 1 else imp
        if imp.shape != (b, n):
            raise ValueError(f"node importance has shape {tuple(imp.shape)}, expected ({b}, {n})")
        imp = imp.masked_fill(~allowed, -math.inf)
        top = torch.topk(imp, k, dim=1).indices  # (B, K)

        def run(deleted: Tensor | None) -> Tensor:
            if deleted is None:
                out = model_fn(x, None)
            elif mode == "mask":
                out = model_fn(x, deleted)
            else:
                out = model_fn(x.masked_fill(deleted[..., None], 0.0), None)
            return out.float().reshape(b, -1)  # (B, *)

        def as_mask(idx: Tensor) -> Tensor:  # (B, K) -> (B, N) bool
            return torch.zeros(b, n, dtype=torch.bool, device=x.device).scatter_(1, idx, True)

        base = run(None)
        top_delta = (run(as_mask(top)) - base).norm(dim=1)  # (B,)
        random_delta = []
        for _ in range(num_random):
            noise = torch.rand(b, n, generator=generator).to(x.device)
            noise = noise.masked_fill(~allowed, -1.0)
            idx = torch.topk(noise, k, dim=1).indices  # (B, K) uniformly random allowed nodes
            random_delta.append((run(as_mask(idx)) - base).norm(dim=1))
    return PerturbationResult(top_delta, torch.stack(random_delta), top)


# ---------------------------------------------------------------------- modalities


def summarize_by_modality(
    weights: AttentionLike,
    modality_labels: Tensor | tuple[Tensor, Tensor],
    names: Sequence[str] | None = None,
    *,
    num_modalities: int | None = None,
    target_mask: Tensor | None = None,
) -> Tensor:
    """Attention mass between modalities: entry ``[a, b]`` is the mean, over target nodes of
    modality ``a`` (with in-edges, not padded) and over samples and heads, of the total
    weight they give to sources of modality ``b``. Rows sum to 1 for row-normalised
    attention (a modality without targets gets a zero row).

    Works per edge (``O(E * H)``) on per-edge and dense weights.

    Args:
        weights: one layer's attention.
        modality_labels: modality index of every node ``(N,)``, or a ``(targets, sources)``
            pair ``((Nd,), (Ns,))`` for cross-attention.
        names: modality names; their number fixes ``M`` (also used by the plots).
        num_modalities: ``M`` when ``names`` is not given (default: largest label + 1).
        target_mask: ``(B, Nd)`` or ``(Nd,)`` bool, ``True`` = count this target (default:
            in self-attention, nodes padded as sources are left out).

    Shapes:
        - returns ``(M, M)``: rows = target modality, columns = source modality.

    Example:
        >>> import torch
        >>> w = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [0.0, 0.0, 1.0]])
        >>> summarize_by_modality(w, torch.tensor([0, 0, 1]), ["text", "image"])
        tensor([[0.7000, 0.3000],
                [0.0000, 1.0000]])
    """
    form = _edge_form(weights)
    ld, ls = modality_labels if isinstance(modality_labels, tuple) else (modality_labels,) * 2
    ld, ls = ld.to(form.dst.device).long(), ls.to(form.dst.device).long()
    if ld.shape != (form.num_dst,) or ls.shape != (form.num_src,):
        raise ValueError(
            f"modality_labels must be (N,) per node ({form.num_dst} targets, {form.num_src} "
            f"sources), got {tuple(ld.shape)} and {tuple(ls.shape)}"
        )
    if names is not None:
        m = len(names)
    elif num_modalities is not None:
        m = num_modalities
    else:
        m = int(max(ld.max(), ls.max())) + 1 if len(ld) and len(ls) else 0
    bad = any(len(t) and (int(t.min()) < 0 or int(t.max()) >= m) for t in (ld, ls))
    if bad:
        raise ValueError(f"modality labels must lie in [0, M={m})")
    vals = form.values.detach()  # (B, E, H)
    _, valid = _valid_targets(form, target_mask)  # (B, Nd, H)
    counted = vals * valid[:, form.dst].to(vals.dtype)  # (B, E, H)
    key = ld[form.dst] * m + ls[form.src]  # (E,)
    mass = vals.new_zeros(m * m).index_add_(0, key, counted.sum((0, 2)))  # (M * M,)
    per_target = valid.sum((0, 2)).to(vals.dtype)  # (Nd,) counted (sample, head) pairs
    count = vals.new_zeros(m).index_add_(0, ld, per_target)  # (M,)
    mass = mass.view(m, m)
    return torch.where(count[:, None] > 0, mass / count.clamp_min(1)[:, None], 0.0)
