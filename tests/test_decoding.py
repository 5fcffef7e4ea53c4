"""Incremental decoding with a key-value cache (graphattn/decoding.py): every step equals the
full recomputation of the sequence so far, on causal and causal-window graphs."""

from __future__ import annotations

import functools

import pytest
import torch

from graphattn import Graph, GraphTransformer, GraphTransformerLayer, KVCache, RotaryEmbedding

B, C, H, L = 2, 16, 4, 3  # batch, width, heads, layers
RADIUS = 3


def _graph(kind: str, n: int) -> Graph:
    if kind == "causal":
        return Graph.causal(n)
    return Graph.window(n, RADIUS, causal=True)


def _model(norm_first: bool = True, **kwargs) -> GraphTransformer:
    torch.manual_seed(0)
    return (
        GraphTransformer(L, C, H, dim_feedforward=32, dropout=0.1, norm_first=norm_first, **kwargs)
        .double()
        .eval()
    )


# chunks of new positions per step: a prompt of 4 (longer than the radius), single steps,
# chunks of 3 and 5 over a full window cache, single steps again (22 positions: past the
# window graph's 12 nodes)
CHUNKS = [4, 1, 1, 3, 1, 2, 5, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("kind", ["causal", "window"])
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("rotary", [True, False])
def test_cached_steps_equal_full_recomputation(kind: str, norm_first: bool, rotary: bool) -> None:
    model = _model(norm_first)
    rope = RotaryEmbedding(C // H) if rotary else None
    n_total = sum(CHUNKS)
    x = torch.randn(B, n_total, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # the causal cache needs room for every position; the window's holds `radius` of them and
    # runs past its graph's 12 nodes
    cache = model.init_cache(_graph(kind, n_total if kind == "causal" else 12))
    start = 0
    for t in CHUNKS:
        end = start + t
        with torch.no_grad():
            step = model.decode_step(x[:, start:end], cache, rotary=rope)  # (B, T, C)
            full = model(x[:, :end], _graph(kind, end), rotary=rope)  # (B, end, C)
        torch.testing.assert_close(step, full[:, start:end], rtol=1e-10, atol=1e-10)
        for c in cache:
            assert c.length == end
            kept = end if kind == "causal" else min(end, RADIUS)
            assert c.keys.shape == (B, H, kept, C // H) == c.values.shape
        start = end


def test_per_layer_graphs_and_single_layer() -> None:
    model = _model()
    rope = RotaryEmbedding(C // H)
    x = torch.randn(B, 9, C, dtype=torch.float64)
    graphs = [Graph.causal(9), Graph.window(9, 1, causal=True), Graph.window(9, 4, causal=True)]
    cache = model.init_cache(graphs)
    layer = model.layers[0]
    layer_cache = KVCache.for_graph(Graph.window(9, 2, causal=True))
    with torch.no_grad():
        steps = [model.decode_step(x[:, :3], cache, rotary=rope)]
        steps += [model.decode_step(x[:, i : i + 1], cache, rotary=rope) for i in range(3, 9)]
        full = model(x, graphs, rotary=rope)
        one = torch.cat([layer.decode_step(x[:, i : i + 1], layer_cache) for i in range(9)], 1)
        one_full = layer(x, Graph.window(9, 2, causal=True))
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(one, one_full, rtol=1e-10, atol=1e-10)
    assert [c.keys.shape[2] for c in cache] == [9, 1, 4]


def test_float32_steps_close() -> None:
    model = _model().float()
    rope = RotaryEmbedding(C // H)
    x = torch.randn(B, 10, C)
    cache = model.init_cache(Graph.causal(10))
    with torch.no_grad():
        steps = torch.cat(
            [model.decode_step(x[:, i : i + 1], cache, rotary=rope) for i in range(10)], 1
        )
        full = model(x, Graph.causal(10), rotary=rope)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "graph",
    [
        Graph.window(8, 2),
        Graph.complete(8),
        Graph.grid(2, 4),
        Graph.from_edge_index(torch.tensor([[0, 0], [0, 1]]), 2),
    ],
    ids=["symmetric-window", "complete", "grid", "edges"],
)
def test_non_causal_graph_is_refused(graph: Graph) -> None:
    with pytest.raises(ValueError, match="graph must be causal"):
        _model().init_cache(graph)


def test_other_misuse_is_refused() -> None:
    model = _model()
    x = torch.randn(B, 1, C, dtype=torch.float64)
    with pytest.raises(ValueError, match="must not be padded"):
        model.init_cache(Graph.causal(4).pad([4, 3]))
    with pytest.raises(TypeError, match="graph must be a graphattn.Graph"):
        KVCache.for_graph(torch.tensor([[0], [0]]))
    with pytest.raises(ValueError, match="graph is a list of 2 entries"):
        model.init_cache([Graph.causal(4)] * 2)
    cache = model.init_cache(Graph.causal(4))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, C=16\)"):
        model.decode_step(x[0], cache)
    with pytest.raises(ValueError, match=r"got \(2, 0, 16\)"):
        model.decode_step(x[:, :0], cache)
    with pytest.raises(ValueError, match="one KVCache per layer"):
        model.decode_step(x, cache[:2])
    partial = functools.partial(RotaryEmbedding(4), q_pos=torch.arange(1))
    with pytest.raises(TypeError, match="rotary must have a rotate"):
        model.decode_step(x, cache, rotary=partial)
    with torch.no_grad():
        model.decode_step(torch.randn(B, 4, C, dtype=torch.float64), cache)
        with pytest.raises(ValueError, match="max_length=4"):
            model.decode_step(x, cache)
    assert [c.length for c in cache] == [4] * L  # the refused step changed no cache
    for c in cache:
        c.reset()
    with torch.no_grad():
        model.decode_step(x, cache)
        with pytest.raises(ValueError, match="x has batch size 3 but the cache"):
            model.decode_step(torch.randn(3, 1, C, dtype=torch.float64), cache)
        with pytest.raises(ValueError, match="reset"):
            model.float().decode_step(torch.randn(B, 1, C), cache)


def test_edge_features_are_refused() -> None:
    layer = GraphTransformerLayer(C, H, dim_feedforward=32, edge_dim=3)
    with pytest.raises(ValueError, match="edge_dim"):
        layer.decode_step(torch.randn(1, 1, C), KVCache.for_graph(Graph.causal(4)))
