"""Per-sample graphs in dense batches: one graph per sample of a padded batch ``(B, N, C)``
gives what running the samples one by one gives, forward and backward, on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from graphattn import (
    GATConv,
    Graph,
    GraphAttention,
    PerSampleGraph,
    choose_backend,
    graph_attention,
)
from graphattn.graph import as_graph

B, N, H, D = 3, 5, 2, 4
BACKENDS = ["dense", "edges", "auto"]
PAD = torch.tensor(  # (B, N): sample 0 pads node 4, sample 1 nodes 3 and 4, sample 2 3..4
    [
        [False, False, False, False, True],
        [False, False, False, True, True],
        [False, False, True, True, True],
    ]
)


def _edge_lists() -> list[Tensor]:
    """Different edge counts, a duplicated edge (1 -> 0 twice) and an empty sample; with
    ``PAD``, target 3 of sample 0 keeps one real in-edge and target 1 of sample 1 loses its
    only one."""
    return [
        torch.tensor([[1, 1, 2, 0, 4, 3], [0, 0, 0, 3, 3, 4]]),
        torch.tensor([[0, 4, 2], [4, 1, 2]]),
        torch.zeros(2, 0, dtype=torch.long),
    ]


def _padded(edges: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The padded form ``(B, 2, E)`` and its mask ``(B, E)``: sample ``b``'s edges in every
    other column (starting at ``b % 2``), junk that is out of range in between."""
    e = 2 * max(ei.shape[1] for ei in edges) + 1
    edge_index = torch.full((len(edges), 2, e), 99)
    edge_index[:, 0, 1::2] = -1
    mask = torch.zeros(len(edges), e, dtype=torch.bool)
    for b, ei in enumerate(edges):
        cols = torch.arange(ei.shape[1]) * 2 + b % 2
        edge_index[b][:, cols] = ei
        mask[b, cols] = True
    return edge_index, mask


def _per_sample(form: str, edges: list[Tensor]) -> list[Tensor] | PerSampleGraph:
    """The graph argument in ``form``: the list itself, or the padded form built with
    ``Graph.per_sample``."""
    if form == "list":
        return edges
    edge_index, mask = _padded(edges)
    return Graph.per_sample(edge_index, N, edge_mask=mask)


def _qkv(gen: torch.Generator, b: int = B, dtype: torch.dtype = torch.float64) -> list[Tensor]:
    return [torch.randn(b, H, N, D, generator=gen, dtype=dtype) for _ in range(3)]


def _forward_backward(fn: Callable[..., Tensor], inputs: list[Tensor], weight: Tensor):
    """``fn(*inputs)`` and the gradients of ``(out * weight).sum()`` for the inputs."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    (out * weight).sum().backward()
    return out, [t.grad for t in inputs]


def _one_by_one(q, k, v, edges, backend, pad=None, bias=None, bias_per_edge=False) -> Tensor:
    """Each sample alone, on its own ``(2, E_b)`` graph."""
    outs, start = [], 0
    for b, ei in enumerate(edges):
        g = Graph.from_edge_index(ei, N)
        if pad is not None:
            g = g.pad(key_padding_mask=pad[b : b + 1])
        attn_bias = None
        if bias is not None and bias_per_edge:
            attn_bias = bias[start : start + ei.shape[1]]  # (E_b, H)
        elif bias is not None:
            attn_bias = bias.expand(len(edges), -1, -1, -1)[b : b + 1]  # (1, H or 1, N, N)
        start += ei.shape[1]
        s = slice(b, b + 1)
        outs.append(graph_attention(q[s], k[s], v[s], g, attn_bias=attn_bias, backend=backend))
    return torch.cat(outs)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "key_padding"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["list", "padded"])
def test_graph_attention_equals_samples_one_by_one(form, backend, padded, gen):
    edges = _edge_lists()
    graph = _per_sample(form, edges)
    pad = PAD if padded else None
    if padded:
        graph = Graph.per_sample(edges, N) if form == "list" else graph
        graph = graph.pad(key_padding_mask=PAD)
    q, k, v = _qkv(gen)
    weight = torch.randn(B, H, N, D, generator=gen, dtype=torch.float64)

    out, grads = _forward_backward(
        lambda q, k, v: graph_attention(q, k, v, graph, backend=backend), [q, k, v], weight
    )
    ref, ref_grads = _forward_backward(
        lambda q, k, v: _one_by_one(q, k, v, edges, backend, pad), [q, k, v], weight
    )
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r)
    assert torch.equal(out[2], torch.zeros(H, N, D, dtype=out.dtype))  # the empty sample
    assert all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["list", "padded"])
def test_module_equals_samples_one_by_one(form, backend, gen):
    """``GraphAttention`` takes the list directly, with ``key_padding_mask=``; outputs and
    the gradients of inputs and parameters match the samples run one at a time."""
    torch.manual_seed(0)
    attn = GraphAttention(8, H, backend=backend)
    edges = _edge_lists()
    x = torch.randn(B, N, 8, generator=gen)
    weight = torch.randn(B, N, 8, generator=gen)

    def grads() -> list[Tensor]:
        out = [p.grad.clone() for p in attn.parameters()]
        attn.zero_grad()
        return out

    out, (gx,) = _forward_backward(
        lambda x: attn(x, _per_sample(form, edges), key_padding_mask=PAD), [x], weight
    )
    param_grads = grads()

    def one_by_one(x: Tensor) -> Tensor:
        return torch.cat(
            [attn(x[b : b + 1], ei, key_padding_mask=PAD[b : b + 1]) for b, ei in enumerate(edges)]
        )

    ref, (ref_gx,) = _forward_backward(one_by_one, [x], weight)
    assert_close(out, ref)
    assert_close(gx, ref_gx)
    for g, r in zip(param_grads, grads(), strict=True):
        assert_close(g, r)


@pytest.mark.parametrize("backend", ["edges", "auto"])
def test_module_edge_attr_and_weights_follow_the_samples_edge_order(backend, gen):
    """``edge_attr`` ``(E, edge_dim)`` and the weights ``(E, H)`` cover the edges of all
    samples, sample 0's first, each in its given order."""
    torch.manual_seed(0)
    attn = GraphAttention(8, H, edge_dim=3, backend=backend)
    edges = _edge_lists()
    counts = [ei.shape[1] for ei in edges]
    x = torch.randn(B, N, 8, generator=gen)
    edge_attr = torch.randn(sum(counts), 3, generator=gen)
    res = attn.forward_with_weights(x, edges, edge_attr=edge_attr, key_padding_mask=PAD)
    assert res.attention.values.shape == (sum(counts), H)
    assert res.attention.graph.num_dst == B * N  # the flat graph
    refs = [
        attn.forward_with_weights(x[b : b + 1], ei, edge_attr=ea, key_padding_mask=PAD[b : b + 1])
        for b, (ei, ea) in enumerate(zip(edges, edge_attr.split(counts), strict=True))
    ]
    assert_close(res.out, torch.cat([r.out for r in refs]))
    assert_close(res.attention.values, torch.cat([r.attention.values[0] for r in refs]))


@pytest.mark.parametrize("backend", ["dense", "edges"])
@pytest.mark.parametrize("layout", ["edges", "dense", "dense_shared"])
def test_bias_equals_samples_one_by_one(layout, backend, gen):
    """A per-edge bias ``(E, H)`` over all samples' edges, or a dense ``(B, H, N, N)`` one
    read inside each sample (``(1, 1, N, N)``: the same for every sample and head)."""
    edges = _edge_lists()
    e = sum(ei.shape[1] for ei in edges)
    shape = {"edges": (e, H), "dense": (B, H, N, N), "dense_shared": (1, 1, N, N)}[layout]
    bias = torch.randn(*shape, generator=gen, dtype=torch.float64)
    q, k, v = _qkv(gen)
    weight = torch.randn(B, H, N, D, generator=gen, dtype=torch.float64)

    def per_sample(q, k, v, bias):
        return graph_attention(q, k, v, edges, attn_bias=bias, backend=backend)

    def one_by_one(q, k, v, bias):
        return _one_by_one(q, k, v, edges, backend, bias=bias, bias_per_edge=layout == "edges")

    out, grads = _forward_backward(per_sample, [q, k, v, bias], weight)
    ref, ref_grads = _forward_backward(one_by_one, [q, k, v, bias], weight)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r)


def test_unmasked_padded_tensor_equals_list(gen):
    """A ``(B, 2, E)`` tensor whose columns are all real edges is taken as it is."""
    edges = [torch.tensor([[0, 1, 4], [1, 1, 2]]), torch.tensor([[3, 3, 3], [0, 0, 4]])]
    q, k, v = _qkv(gen, b=2)
    out = graph_attention(q, k, v, torch.stack(edges), backend="edges")
    assert_close(out, graph_attention(q, k, v, edges, backend="edges"))
    assert_close(out, _one_by_one(q, k, v, edges, "edges"))


@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_cross_attention_per_sample(backend, gen):
    """Per-sample bipartite graphs: 3 targets and 5 sources in each sample."""
    edges = [torch.tensor([[0, 4, 4, 2], [0, 0, 2, 1]]), torch.tensor([[1], [2]])]
    q = torch.randn(2, H, 3, D, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, H, 5, D, generator=gen, dtype=torch.float64) for _ in range(2))
    graph = Graph.per_sample(edges, 3, 5)
    out = graph_attention(q, k, v, graph, backend=backend)
    ref = [
        graph_attention(q[b], k[b], v[b], Graph.from_edge_index(ei, 3, 5), backend=backend)
        for b, ei in enumerate(edges)
    ]
    assert_close(out, torch.stack(ref))


def test_unbatched_inputs_take_one_sample(gen):
    q, k, v = (t[0] for t in _qkv(gen, b=1))  # (H, N, D)
    ei = _edge_lists()[0]
    out = graph_attention(q, k, v, [ei], backend="edges")
    assert out.shape == (H, N, D)
    assert_close(out, graph_attention(q, k, v, ei, backend="edges"))


def test_lengths_pad_the_graph_and_refuse_edges_from_padding(gen):
    edges = [torch.tensor([[0, 1, 1], [1, 0, 4]]), torch.tensor([[2, 0], [0, 2]])]
    graph = Graph.per_sample(edges, N, lengths=[2, 3])
    assert torch.equal(
        graph.key_padding_mask, Graph.per_sample(edges, N).pad([2, 3]).key_padding_mask
    )
    q, k, v = _qkv(gen, b=2)
    pad = graph.key_padding_mask
    assert_close(graph_attention(q, k, v, graph), _one_by_one(q, k, v, edges, "auto", pad))
    with pytest.raises(
        ValueError,
        match=r"edge_index\[0\]\[0, 1\] = 1 is a padded source .*"
        r"lengths\[0\]=1",
    ):
        Graph.per_sample(edges, N, lengths=[1, 3])


def test_graph_views_are_per_sample():
    edges = _edge_lists()
    graph = Graph.per_sample(edges, N).pad(key_padding_mask=PAD)
    assert graph.num_dst == graph.num_src == N and graph.batch_size == B
    assert graph.num_edges == 9 and graph.kind == "per_sample"
    assert torch.equal(graph.edge_index(), torch.cat(edges, dim=1))
    assert torch.equal(graph.edge_batch, torch.tensor([0] * 6 + [1] * 3))
    singles = [
        Graph.from_edge_index(ei, N).pad(key_padding_mask=PAD[b : b + 1])
        for b, ei in enumerate(edges)
    ]
    assert torch.equal(graph.materialize(), torch.cat([g.materialize() for g in singles]))
    counts = graph.edge_counts()
    assert counts.shape == (B, N, N) and int(counts[0, 0, 1]) == 2 and int(counts.sum()) == 9
    assert torch.equal(graph.in_degree(), torch.stack([g.in_degree() for g in singles]))
    flat = graph.flat()
    assert (flat.num_dst, flat.num_edges) == (B * N, 9)
    assert torch.equal(flat.edge_index(), graph.edge_index() + graph.edge_batch * N)
    assert torch.equal(flat.key_padding_mask, PAD.reshape(1, -1))
    assert graph.to("cpu") is graph
    assert "batch_size=3" in repr(graph)
    assert choose_backend(graph) in ("dense", "edges", "fused")
    with pytest.raises(TypeError, match="graph.flat"):
        graph.edge_structure()


# ---------------------------------------------------------------------------- errors
def test_list_length_must_match_the_batch(gen):
    q, k, v = _qkv(gen)
    edges = _edge_lists()[:2]
    with pytest.raises(ValueError, match=r"graph is a list of 2 edge lists.*B=3"):
        graph_attention(q, k, v, edges)
    with pytest.raises(ValueError, match=r"graph is a list of 2 edge lists.*B=3"):
        GraphAttention(8, 2)(torch.randn(B, N, 8), edges)
    with pytest.raises(ValueError, match=r"graph has 2 samples but the batch has B=3"):
        graph_attention(q, k, v, Graph.per_sample(edges, N))
    padded, _ = _padded(edges)
    with pytest.raises(ValueError, match=r"shape \(2, 2, 13\), one per sample.*B=3"):
        graph_attention(q, k, v, padded)


def test_node_ids_must_be_local_to_their_sample(gen):
    q, k, v = _qkv(gen)
    edges = _edge_lists()
    edges[1] = torch.tensor([[0, 4, 5], [4, 1, 2]])
    with pytest.raises(
        IndexError,
        match=r"graph\[1\]\[0, 2\] = 5 \(a source of sample 1\) .*"
        r"num_src=5.*0\.\.4",
    ):
        graph_attention(q, k, v, edges)
    edge_index, mask = _padded(_edge_lists())
    edge_index[2, :, 0], mask[2, 0] = torch.tensor([1, 7]), True  # edge 1 -> 7
    with pytest.raises(IndexError, match=r"edge_index\[2\]\[1, 0\] = 7 \(a target of sample 2"):
        Graph.per_sample(edge_index, N, edge_mask=mask)
    with pytest.raises(IndexError, match=r"graph\[0\]\[1, 0\] = -1"):
        graph_attention(q, k, v, [torch.tensor([[0], [-1]]), *_edge_lists()[1:]])


def test_edge_mask_is_checked():
    edge_index, mask = _padded(_edge_lists())
    with pytest.raises(ValueError, match=r"edge_mask must have shape \(B=3, E=13\).*got \(3, 12\)"):
        Graph.per_sample(edge_index, N, edge_mask=mask[:, :-1])
    with pytest.raises(TypeError, match="edge_mask must be a bool tensor.*torch.int64"):
        Graph.per_sample(edge_index, N, edge_mask=mask.long())
    with pytest.raises(ValueError, match="edge_mask is for a padded"):
        Graph.per_sample(_edge_lists(), N, edge_mask=mask)


def test_other_misuse_is_refused(gen):
    q, k, v = _qkv(gen)
    edges = _edge_lists()
    with pytest.raises(ValueError, match=r"one \(2, E\) edge_index shared by all samples"):
        Graph.per_sample(edges[0], N)
    with pytest.raises(TypeError, match=r"edge_index\[1\] must have an integer dtype"):
        Graph.per_sample([edges[0], edges[1].float()], N)
    with pytest.raises(ValueError, match=r"attn_bias has a batch dimension of 3.*\(E=9"):
        graph_attention(q, k, v, edges, attn_bias=torch.zeros(B, 9, H, dtype=q.dtype))
    with pytest.raises(ValueError, match=r"key_padding_mask has 2 rows.*B=3 samples"):
        Graph.per_sample(edges, N).pad(key_padding_mask=PAD[:2])
    with pytest.raises(ValueError, match=r"edge_index is a per-sample graph.*flat\(\)"):
        GATConv(8, 4)(torch.randn(B * N, 8), edges)
    with pytest.raises(ValueError, match=r"graph is a per-sample graph"):
        as_graph(edges, N, N)
