"""Plots: every function writes a non-blank file from dense and per-edge inputs, and leaves
pyplot's state alone."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("matplotlib")

import matplotlib.image as mpimg  # noqa: E402

from graphattn import Graph, GraphAttention  # noqa: E402
from graphattn.explain import head_statistics  # noqa: E402
from graphattn.plot import (  # noqa: E402
    plot_attention_graph,
    plot_attention_heatmap,
    plot_head_statistics,
    plot_image_attention,
)


def assert_not_blank(path):
    assert path.exists() and path.stat().st_size > 0
    img = mpimg.imread(path)  # (H, W, 4) floats in [0, 1]
    assert img.std() > 0
    rgb = img[..., :3]
    non_white = (rgb < 0.98).any(-1).mean()
    assert non_white > 0.01, f"only {non_white:.4f} of the pixels are not white"


@pytest.fixture
def attention(gen):
    attn = GraphAttention(16, 4)
    x = torch.randn(2, 12, 16, generator=gen)
    return attn.forward_with_weights(x, Graph.window(12, 2)).attention  # per edge


def test_heatmap(tmp_path, attention, gen):
    tokens = list("hello world!")
    out = plot_attention_heatmap(attention, tmp_path / "a" / "heat.png", tokens=tokens)
    assert out == tmp_path / "a" / "heat.png"
    assert_not_blank(out)
    dense = torch.softmax(torch.randn(3, 5, 7, generator=gen), -1)  # (H, Nd, Ns) cross
    out = plot_attention_heatmap(
        dense, tmp_path / "cross.png", tokens="abcde", source_tokens=list(range(7)), head=1
    )
    assert_not_blank(out)
    with pytest.raises(ValueError, match="tokens"):
        plot_attention_heatmap(dense, tmp_path / "bad.png", tokens="ab")


@pytest.mark.parametrize("shape", [(8, 8), (3, 32, 48), (1, 16, 16)])
def test_image_attention(tmp_path, shape, gen):
    image = torch.rand(*shape, generator=gen)
    h, w = shape[-2] // 4, shape[-1] // 4
    att = torch.softmax(torch.randn(h * w, generator=gen), 0)
    out = plot_image_attention(image, att, tmp_path / "img.png", grid=(h, w), smooth=h > 2)
    assert_not_blank(out)


def test_image_attention_rejects_bad_grid(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_image_attention(torch.rand(8, 8), torch.rand(6), tmp_path / "x.png")


def test_attention_graph(tmp_path, attention, gen):
    labels = list("hello world!")
    modality = [0] * 6 + [1] * 6
    out = plot_attention_graph(
        attention,
        tmp_path / "graph.png",
        node_labels=labels,
        modality=modality,
        modality_names=["text", "image"],
        top_edges=20,
    )
    assert_not_blank(out)
    # dense tensor at given positions, per-edge tensor with edge_index, cross-attention
    pos = torch.stack([torch.arange(9) % 3, -(torch.arange(9) // 3)], 1).float()
    dense = torch.softmax(torch.randn(2, 9, 9, generator=gen), -1)
    assert_not_blank(plot_attention_graph(dense, tmp_path / "pos.png", positions=pos, head=0))
    ei = torch.tensor([[0, 1, 2, 3, 3], [1, 2, 3, 0, 3]])
    assert_not_blank(
        plot_attention_graph(torch.rand(5, generator=gen), tmp_path / "ei.png", edge_index=ei)
    )
    cross = torch.softmax(torch.randn(4, 6, generator=gen), -1)
    svg = plot_attention_graph(cross, tmp_path / "cross.svg")
    assert "<svg" in svg.read_text()
    modality = [0] * 6 + [1] * 4  # sources, then targets
    assert_not_blank(plot_attention_graph(cross, tmp_path / "cross.png", modality=modality))


def test_head_statistics_plot(tmp_path, attention):
    stats = head_statistics(attention)
    assert_not_blank(plot_head_statistics(stats, tmp_path / "one.png"))
    out = plot_head_statistics([stats, stats], tmp_path / "two.png", layer_names=["l0", "l1"])
    assert_not_blank(out)


def test_plots_leave_pyplot_alone(tmp_path, attention):
    import matplotlib
    import matplotlib.pyplot as plt

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    plot_attention_heatmap(attention, tmp_path / "h.png")
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures
