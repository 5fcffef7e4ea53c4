"""Pictures of attention, written to files (no screen needed).

- :func:`plot_attention_heatmap`: a target x source map, with token labels.
- :func:`plot_image_attention`: attention (or rollout, or relevance) over the cells of an
  image grid, overlaid on the image.
- :func:`plot_attention_graph`: the strongest edges of an attention graph, nodes coloured by
  modality, edge width and colour by weight, arrows from source to target.
- :func:`plot_head_statistics`: entropy, attended distance and peak weight per head (and per
  layer).

Every function takes the output ``path`` (the format follows its suffix, e.g. ``.png``,
``.svg``, ``.pdf``), creates missing folders, and returns the path. Figures are built with
``matplotlib.figure.Figure`` and the Agg canvas, never with ``pyplot``: nothing opens a
window, and the caller's matplotlib backend and global state are left alone. matplotlib is
an optional dependency (the ``plot`` extra: ``pip install -e ".[plot]"``).

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``E`` edges,
``L`` layers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .explain import HeadStatistics
from .functional import AttentionWeights

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_attention_heatmap",
    "plot_image_attention",
    "plot_attention_graph",
    "plot_head_statistics",
]

PathLike = str | os.PathLike


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "graphattn.plot needs matplotlib: pip install matplotlib (the plot extra of graphattn)"
        ) from err
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike, dpi: int) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def _numpy(t: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def _dense_map(weights: AttentionWeights | Tensor, head: int | None, sample: int) -> np.ndarray:
    """One ``(Nd, Ns)`` map: sample ``sample``, head ``head`` or the mean over heads."""
    if isinstance(weights, AttentionWeights):
        dense = weights.to_dense()
        dense = dense if weights.batched else dense[None]  # (B, H, Nd, Ns)
    else:
        dense = torch.as_tensor(weights)
        if dense.dim() not in (2, 3, 4):
            raise ValueError(
                f"weights must be (Nd, Ns), (H, Nd, Ns) or (B, H, Nd, Ns), got {tuple(dense.shape)}"
            )
        dense = dense.reshape((1,) * (4 - dense.dim()) + tuple(dense.shape))
    dense = dense[sample]  # (H, Nd, Ns)
    return _numpy(dense.mean(0) if head is None else dense[head])


def _tick_labels(ax: Any, axis: str, labels: Sequence[str], max_labels: int = 64) -> None:
    n = len(labels)
    step = max(1, math.ceil(n / max_labels))
    idx = list(range(0, n, step))
    if axis == "x":
        ax.set_xticks(idx, [labels[i] for i in idx], rotation=90 if n > 12 else 0)
    else:
        ax.set_yticks(idx, [labels[i] for i in idx])


def _token_text(tokens: Sequence[Any]) -> list[str]:
    out = []
    for t in tokens:
        s = t if isinstance(t, str) else str(t)
        out.append({" ": "␣", "\n": "⏎", "\t": "⇥"}.get(s, s))
    return out


def plot_attention_heatmap(
    weights: AttentionWeights | Tensor,
    path: PathLike,
    *,
    tokens: Sequence[Any] | None = None,
    source_tokens: Sequence[Any] | None = None,
    head: int | None = None,
    sample: int = 0,
    title: str | None = None,
    cmap: str = "viridis",
    dpi: int = 100,
) -> Path:
    """Heatmap of one attention map: rows are targets (queries), columns sources (keys).

    Args:
        weights: :class:`~graphattn.AttentionWeights` (either layout) or a dense tensor
            ``(Nd, Ns)``, ``(H, Nd, Ns)`` or ``(B, H, Nd, Ns)``; also any ``(M, M)`` table
            such as :func:`~graphattn.explain.summarize_by_modality`.
        path: output file.
        tokens: labels of the targets (and of the sources unless ``source_tokens``);
            spaces and newlines are drawn as visible symbols.
        source_tokens: labels of the sources for cross-attention.
        head: draw this head (default: the mean over heads).
        sample: which sample of a batch.
        title: figure title (default: describes the map).
        cmap: matplotlib colour map.
        dpi: resolution of raster formats.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    a = _dense_map(weights, head, sample)  # (Nd, Ns)
    nd, ns = a.shape
    side = min(10.0, 3.0 + 0.22 * max(nd, ns))
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(a, cmap=cmap, vmin=0.0, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax, label="attention weight", shrink=0.8)
    ax.set_xlabel("source (key) node")
    ax.set_ylabel("target (query) node")
    if tokens is not None:
        labels = _token_text(tokens)
        if len(labels) != nd:
            raise ValueError(f"got {len(labels)} tokens for {nd} target nodes")
        _tick_labels(ax, "y", labels)
        src_labels = labels if source_tokens is None else _token_text(source_tokens)
        if len(src_labels) != ns:
            raise ValueError(f"got {len(src_labels)} source tokens for {ns} source nodes")
        _tick_labels(ax, "x", src_labels)
    which = "mean over heads" if head is None else f"head {head}"
    ax.set_title(title if title is not None else f"Attention ({which})")
    return _save(fig, path, dpi)


def _image_hw(image: Tensor | np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3|4)`` float image in ``[0, 1]`` for ``imshow``."""
    img = _numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)  # (C, H, W) -> (H, W, C); torch's layout wins ties
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W), (C, H, W) or (H, W, C), got {img.shape}")
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def plot_image_attention(
    image: Tensor | np.ndarray,
    attention: Tensor | np.ndarray,
    path: PathLike,
    *,
    grid: tuple[int, int] | None = None,
    alpha: float = 0.55,
    smooth: bool = False,
    label: str = "attention",
    title: str | None = None,
    cmap: str = "inferno",
    dpi: int = 100,
) -> Path:
    """An image next to the same image overlaid with attention over its grid cells.

    Args:
        image: ``(H, W)`` grey, ``(C, H, W)`` or ``(H, W, C)`` (any range; rescaled).
        attention: one value per grid cell, ``(h * w,)`` in row-major order (e.g. the row of
            a CLS node in :func:`~graphattn.explain.attention_rollout`, without the CLS
            column), or ``(h, w)``.
        path: output file.
        grid: ``(h, w)`` cells; default the square root of the number of cells.
        alpha: opacity of the attention layer.
        smooth: bilinear interpolation of the attention (default: one flat colour per cell,
            which shows what the model saw).
        label: what the map is (colour bar and panel title), e.g. ``"relevance"``.
        title: figure title.
        cmap: colour map of the attention.
        dpi: resolution of raster formats.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    img = _image_hw(image)
    att = _numpy(attention)
    if att.ndim == 1:
        if grid is None:
            side = math.isqrt(att.size)
            if side * side != att.size:
                raise ValueError(f"{att.size} cells are not a square grid: pass grid=(h, w)")
            grid = (side, side)
        if grid[0] * grid[1] != att.size:
            raise ValueError(f"grid {grid} has {grid[0] * grid[1]} cells, attention {att.size}")
        att = att.reshape(grid)
    elif att.ndim != 2:
        raise ValueError(f"attention must be (h * w,) or (h, w), got {att.shape}")
    height, width = img.shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    grey = "gray" if img.ndim == 2 else None
    fig = _figure(8.0, 4.2)
    ax_img, ax_att = fig.subplots(1, 2)
    ax_img.imshow(img, cmap=grey, extent=extent)
    ax_img.set_title("input")
    ax_att.imshow(img, cmap=grey, extent=extent)
    im = ax_att.imshow(
        att,
        cmap=cmap,
        alpha=alpha,
        extent=extent,
        interpolation="bilinear" if smooth else "nearest",
        vmin=0.0 if float(att.min()) >= 0 else None,
    )
    ax_att.set_title(f"{label} over {att.shape[0]} x {att.shape[1]} cells")
    fig.colorbar(im, ax=ax_att, label=label, shrink=0.85)
    for ax in (ax_img, ax_att):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title if title is not None else "Attention on the image")
    return _save(fig, path, dpi)


def _edge_list(
    weights: AttentionWeights | Tensor,
    edge_index: Tensor | None,
    head: int | None,
    sample: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``src, dst, weight`` per edge (sample ``sample`` or the mean over samples; head
    ``head`` or the mean over heads)."""
    if isinstance(weights, AttentionWeights):
        g = weights.graph
        per_edge = weights.to_edges()
        per_edge = per_edge if weights.batched else per_edge[None]  # (B, E, H)
        per_edge = per_edge.mean(0) if sample is None else per_edge[sample]  # (E, H)
        src, dst = g.edge_index()
        nd, ns = g.num_dst, g.num_src
    elif edge_index is not None:
        per_edge = torch.as_tensor(weights)
        if per_edge.dim() == 1:
            per_edge = per_edge[:, None]
        if per_edge.dim() != 2 or per_edge.shape[0] != edge_index.shape[1]:
            raise ValueError(
                f"with edge_index (2, E={edge_index.shape[1]}), weights must be (E,) or "
                f"(E, H), got {tuple(torch.as_tensor(weights).shape)}"
            )
        src, dst = edge_index[0], edge_index[1]
        n = int(edge_index.max()) + 1 if edge_index.numel() else 0
        nd = ns = n
    else:
        dense = torch.as_tensor(weights)
        if dense.dim() not in (2, 3, 4):
            raise ValueError(
                "weights must be AttentionWeights, dense (Nd, Ns) / (H, Nd, Ns) / "
                f"(B, H, Nd, Ns), or per edge with edge_index; got {tuple(dense.shape)}"
            )
        if dense.dim() == 4:
            dense = dense.mean(0) if sample is None else dense[sample]  # (H, Nd, Ns)
        elif dense.dim() == 2:
            dense = dense[None]  # (1, Nd, Ns)
        nd, ns = dense.shape[-2:]
        dst, src = torch.meshgrid(torch.arange(nd), torch.arange(ns), indexing="ij")
        src, dst = src.reshape(-1), dst.reshape(-1)
        per_edge = dense.reshape(dense.shape[0], -1).t()  # (E, H)
    w = per_edge.mean(1) if head is None else per_edge[:, head]
    return _numpy(src).astype(int), _numpy(dst).astype(int), _numpy(w), nd, ns


def plot_attention_graph(
    weights: AttentionWeights | Tensor,
    path: PathLike,
    *,
    edge_index: Tensor | None = None,
    node_labels: Sequence[Any] | None = None,
    modality: Tensor | Sequence[int] | None = None,
    modality_names: Sequence[str] | None = None,
    positions: Tensor | np.ndarray | None = None,
    top_edges: int = 50,
    head: int | None = None,
    sample: int | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    dpi: int = 100,
) -> Path:
    """Draw the strongest edges of an attention graph.

    Nodes sit on a circle (or at ``positions``), coloured by modality; each of the
    ``top_edges`` heaviest edges is an arrow from source to target whose width and colour
    grow with its weight; a self-loop is a ring around its node. For cross-attention
    (``Nd != Ns``) sources are drawn on the left and targets on the right.

    Args:
        weights: :class:`~graphattn.AttentionWeights`; a dense tensor ``(Nd, Ns)``,
            ``(H, Nd, Ns)`` or ``(B, H, Nd, Ns)``; or per-edge weights ``(E,)`` / ``(E, H)``
            with ``edge_index``. Batches are averaged unless ``sample``, heads unless
            ``head``.
        path: output file.
        edge_index: ``(2, E)`` (row 0 sources, row 1 targets) for per-edge tensors.
        node_labels: a label per node (self-attention), or per source then per target
            (cross-attention); default the node index.
        modality: modality index per node (same order as ``node_labels``).
        modality_names: legend names of the modalities.
        positions: ``(N, 2)`` node coordinates ``(x, y)`` (self-attention), e.g. grid cells.
        top_edges: number of edges drawn (the heaviest).
        head: draw this head only.
        sample: draw this sample of a batch (default: the mean over the batch).
        title: figure title.
        cmap: colour map of the edges.
        dpi: resolution of raster formats.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyArrowPatch

    src, dst, w, nd, ns = _edge_list(weights, edge_index, head, sample)
    cross = nd != ns
    n_nodes = nd + ns if cross else nd
    # node coordinates: sources first then targets (cross), else one set
    if cross:
        ys = lambda n: np.linspace(1.0, -1.0, n) if n > 1 else np.zeros(1)  # noqa: E731
        xy = np.concatenate(
            [np.stack([np.full(ns, -1.0), ys(ns)], 1), np.stack([np.full(nd, 1.0), ys(nd)], 1)]
        )
        src_node, dst_node = src, dst + ns
    elif positions is not None:
        xy = _numpy(positions).astype(float)
        if xy.shape != (nd, 2):
            raise ValueError(f"positions must be (N={nd}, 2), got {xy.shape}")
        src_node, dst_node = src, dst
    else:
        angle = np.pi / 2 - 2 * np.pi * np.arange(nd) / max(nd, 1)
        xy = np.stack([np.cos(angle), np.sin(angle)], 1)
        src_node, dst_node = src, dst
    span = float(np.ptp(xy, axis=0).max()) if n_nodes > 1 else 1.0
    span = span if span > 0 else 1.0
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(n_nodes) * 1e9
    spacing = float(gaps.min()) if n_nodes > 1 else span  # closest pair of nodes

    keep = np.argsort(-w, kind="stable")[: max(0, int(top_edges))]
    keep = keep[w[keep] > 0]
    keep = keep[np.argsort(w[keep], kind="stable")]  # heaviest drawn last, on top
    wmax = float(w[keep].max()) if len(keep) else 1.0
    norm = Normalize(vmin=0.0, vmax=wmax)
    colors = colormaps[cmap]

    fig = _figure(7.5, 6.5)
    ax = fig.add_subplot()
    node_size = 260 if n_nodes <= 40 else 120
    ring = 0.32 * min(spacing, 0.25 * span)  # self-loop ring radius
    for e in keep:
        s, t = int(src_node[e]), int(dst_node[e])
        frac = float(w[e]) / wmax
        color = colors(norm(float(w[e])))
        if s == t and not cross:
            loop = Circle(
                xy[s], ring, fill=False, lw=0.6 + 3.0 * frac, color=color, alpha=0.9, zorder=2
            )
            ax.add_patch(loop)
            continue
        ax.add_patch(
            FancyArrowPatch(
                xy[s],
                xy[t],
                arrowstyle="-|>",
                mutation_scale=6 + 8 * frac,
                lw=0.4 + 3.6 * frac,
                color=color,
                alpha=0.35 + 0.6 * frac,
                connectionstyle="arc3,rad=0.12",
                shrinkA=7,
                shrinkB=9,
                zorder=1,
            )
        )
    mod = None if modality is None else _numpy(torch.as_tensor(modality)).astype(int)
    if mod is not None and mod.shape != (n_nodes,):
        raise ValueError(f"modality must have one entry per node ({n_nodes}), got {mod.shape}")
    palette = colormaps["tab10"]
    face = [palette(int(m) % 10) for m in mod] if mod is not None else ["#d9d9d9"] * n_nodes
    ax.scatter(xy[:, 0], xy[:, 1], s=node_size, c=face, edgecolors="black", lw=0.8, zorder=3)
    labels = (
        [str(i) for i in range(ns)] + [str(i) for i in range(nd)]
        if cross and node_labels is None
        else [str(i) for i in range(n_nodes)]
        if node_labels is None
        else _token_text(node_labels)
    )
    if len(labels) != n_nodes:
        raise ValueError(f"got {len(labels)} node labels for {n_nodes} nodes")
    font = 8 if n_nodes <= 40 else 6
    for (x, y), label in zip(xy, labels, strict=True):
        ax.text(x, y, label, ha="center", va="center", fontsize=font, zorder=4)
    if mod is not None:
        present = sorted(set(mod.tolist()))
        names = list(modality_names) if modality_names is not None else None
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                markerfacecolor=palette(m % 10),
                markeredgecolor="black",
                markersize=9,
                label=names[m] if names is not None and m < len(names) else f"modality {m}",
            )
            for m in present
        ]
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(len(handles), 4),
            frameon=False,
        )
    if cross:
        ax.text(-1.0, 1.15, "sources", ha="center", fontsize=9)
        ax.text(1.0, 1.15, "targets", ha="center", fontsize=9)
    pad = 0.12 * span
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad * (2.0 if cross else 1.0))
    ax.set_aspect("equal")
    ax.set_axis_off()
    fig.colorbar(ScalarMappable(norm=norm, cmap=colors), ax=ax, label="edge weight", shrink=0.6)
    which = "mean over heads" if head is None else f"head {head}"
    default = f"Top {len(keep)} of {len(w)} attention edges ({which})"
    fig.suptitle(title if title is not None else default)
    return _save(fig, path, dpi)


def plot_head_statistics(
    stats: HeadStatistics | Sequence[HeadStatistics],
    path: PathLike,
    *,
    layer_names: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Per-head statistics of :func:`~graphattn.explain.head_statistics`.

    One layer: bar charts per head (entropy with the uniform-attention entropy marked, mean
    attended distance, peak weight). Several layers: one ``layers x heads`` heatmap per
    statistic, with the values written in the cells.

    Args:
        stats: one :class:`~graphattn.explain.HeadStatistics` or one per layer.
        path: output file.
        layer_names: row labels of the heatmaps (default ``layer 0``, ``layer 1``, ...).
        title: figure title.
        dpi: resolution of raster formats.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    layers = [stats] if isinstance(stats, HeadStatistics) else list(stats)
    if not layers:
        raise ValueError("plot_head_statistics needs at least one HeadStatistics")
    panels = [("entropy", "entropy (nats)"), ("max_weight", "peak weight")]
    if all(s.mean_distance is not None for s in layers):
        panels.insert(1, ("mean_distance", "mean attended distance"))
    fig = _figure(4.0 * len(panels), 3.6 if len(layers) == 1 else 1.6 + 0.55 * len(layers))
    axes = fig.subplots(1, len(panels))
    if len(layers) == 1:
        s = layers[0]
        heads = np.arange(s.num_heads)
        for ax, (name, label) in zip(axes, panels, strict=True):
            vals = _numpy(getattr(s, name))
            ax.bar(heads, vals, color="#4c72b0")
            if name == "entropy":
                ax.plot(heads, _numpy(s.uniform_entropy), "k_", ms=18, mew=2, label="uniform")
                ax.legend(loc="lower right", fontsize=8)
            ax.set_xticks(heads)
            ax.set_xlabel("head")
            ax.set_title(label)
    else:
        names = list(layer_names) if layer_names is not None else None
        names = names or [f"layer {i}" for i in range(len(layers))]
        for ax, (name, label) in zip(axes, panels, strict=True):
            table = np.stack([_numpy(getattr(s, name)) for s in layers])  # (L, H)
            im = ax.imshow(table, cmap="magma", aspect="auto")
            fig.colorbar(im, ax=ax, shrink=0.9)
            mid = (float(table.max()) + float(table.min())) / 2
            for (i, j), v in np.ndenumerate(table):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if v > mid else "white",
                )
            ax.set_xticks(np.arange(table.shape[1]))
            ax.set_yticks(np.arange(len(layers)), names)
            ax.set_xlabel("head")
            ax.set_title(label)
    fig.suptitle(title if title is not None else "Attention heads")
    return _save(fig, path, dpi)
