"""``graph_attention`` and ``segment_softmax``: both backends against an independent dense
reference, gradients, empty targets, padding, low precision, dropout, dispatch, errors."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import (
    dense_reference,
    edge_backend,
    edge_bias_as_dense,
    edge_counts,
    random_edge_index,
)
from torch.autograd import gradcheck
from torch_geometric.data import Batch, Data
from torch_geometric.utils import softmax as pyg_softmax

from graphattn import (
    AttentionWeights,
    BackendNotSupportedError,
    Graph,
    choose_backend,
    graph_attention,
    graph_attention_with_weights,
    segment_softmax,
)

BACKENDS = ["dense", "edges"]
F64 = torch.float64


def _randn(*shape, gen, dtype=F64, requires_grad=False):
    return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)


def _qkv(b, h, nd, ns, d, gen, dv=None, dtype=F64, requires_grad=False):
    lead = (h,) if b is None else (b, h)
    q = _randn(*lead, nd, d, gen=gen, dtype=dtype, requires_grad=requires_grad)
    k = _randn(*lead, ns, d, gen=gen, dtype=dtype, requires_grad=requires_grad)
    v = _randn(*lead, ns, dv or d, gen=gen, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


def _complete_pyg(n):
    idx = torch.arange(n)
    return Data(edge_index=torch.stack([idx.repeat(n), idx.repeat_interleave(n)]), num_nodes=n)


def _counts(graph: Graph) -> torch.Tensor:
    """``(Nd, Ns)`` or ``(B, 1, Nd, Ns)`` copies per edge, padding applied."""
    counts = edge_counts(graph.edge_index(), graph.num_dst, graph.num_src)
    if graph.key_padding_mask is not None:
        counts = counts[None] * (~graph.key_padding_mask)[:, None, :]  # (B, Nd, Ns)
        counts = counts[:, None]  # (B, 1, Nd, Ns)
    return counts


def _fixed_edges():
    # duplicates (0->1 twice), a self-loop (2->2, its only in-edge), targets 3 and 4 without
    # in-edges
    return Graph.from_edge_index(torch.tensor([[0, 0, 2, 4, 1, 3], [1, 1, 2, 0, 0, 1]]), 5)


GRAPHS = {
    "complete": lambda: Graph.complete(5),
    "complete_bipartite": lambda: Graph.complete(3, 6),
    "complete_no_sources": lambda: Graph.complete(3, 0),
    "causal": lambda: Graph.causal(5),
    "window": lambda: Graph.window(6, 1),
    "window_causal": lambda: Graph.window(6, 2, causal=True),
    "grid": lambda: Graph.grid(2, 3),
    "edges_dups_selfloops_isolated": _fixed_edges,
    "edges_bipartite": lambda: Graph.from_edge_index(
        torch.tensor([[0, 5, 5, 2, 3], [0, 0, 0, 2, 2]]), num_dst=4, num_src=6
    ),
    "edges_random": lambda: Graph.from_edge_index(
        random_edge_index(6, 6, 15, torch.Generator().manual_seed(3)), 6
    ),
    "edges_empty": lambda: Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 3, 4),
    "complete_as_edges": lambda: Graph.from_edge_index(
        Graph.complete(4).edge_index()[:, [*range(15, -1, -1)]]
    ),
    "pyg_batch_complete": lambda: Graph.from_pyg(
        Batch.from_data_list([_complete_pyg(2), _complete_pyg(3), _complete_pyg(1)])
    ),
}
PADDED = ["complete", "causal", "window", "edges_dups_selfloops_isolated", "pyg_batch_complete"]


def _case(name, padded):
    g = GRAPHS[name]()
    if padded:
        g = g.pad(lengths=[g.num_src - 2, g.num_src])
    return g


# ---------------------------------------------------------------------- segment_softmax


@pytest.mark.parametrize("trailing", [(), (3,), (2, 2)])
@pytest.mark.parametrize("num_segments", [1, 4, 7])
def test_segment_softmax_matches_pyg(trailing, num_segments, gen):
    e = 20
    src = _randn(e, *trailing, gen=gen) * 5
    index = torch.randint(0, num_segments, (e,), generator=gen)
    ours = segment_softmax(src, index, num_segments)
    ref = pyg_softmax(src, index, num_nodes=num_segments, dim=0)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    sums = torch.zeros(num_segments, *trailing, dtype=F64).index_add_(0, index, ours)
    present = torch.bincount(index, minlength=num_segments) > 0
    torch.testing.assert_close(sums[present], torch.ones_like(sums[present]))


def test_segment_softmax_large_scores_and_all_minus_inf():
    src = torch.tensor([1e4, 1e4 - 1.0, -torch.inf, -torch.inf, 3.0])
    out = segment_softmax(src, torch.tensor([0, 0, 1, 1, 2]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[2:], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(out[:2].sum(), torch.tensor(1.0))


def test_segment_softmax_gradient_matches_pyg(gen):
    src = _randn(12, 2, gen=gen, requires_grad=True)
    index = torch.randint(0, 4, (12,), generator=gen)
    w = _randn(12, 2, gen=gen)
    (g1,) = torch.autograd.grad((segment_softmax(src, index, 4) * w).sum(), src)
    (g2,) = torch.autograd.grad((pyg_softmax(src, index, num_nodes=4) * w).sum(), src)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize(
    ("index", "exc", "match"),
    [
        (torch.tensor([0, 1]), ValueError, r"index.*\(3,\).*\(2,\)"),
        (torch.tensor([0.0, 1.0, 1.0]), TypeError, r"index.*float"),
    ],
)
def test_segment_softmax_errors(index, exc, match):
    with pytest.raises(exc, match=match):
        segment_softmax(torch.zeros(3), index)


# ---------------------------------------------------------------------- forward vs reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "padded"), [(n, False) for n in GRAPHS] + [(n, True) for n in PADDED]
)
def test_forward_matches_reference(name, padded, backend, gen):
    g = _case(name, padded)
    q, k, v = _qkv(2, 2, g.num_dst, g.num_src, 3, gen, dv=4)
    out = graph_attention(q, k, v, g, backend=backend)
    ref = dense_reference(q, k, v, _counts(g))
    assert out.shape == (2, 2, g.num_dst, 4)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias_shape", ["EH", "BEH", "1EH"])
@pytest.mark.parametrize(
    "name",
    [
        "edges_dups_selfloops_isolated",
        "edges_bipartite",
        "window",
        "complete",
        "complete_as_edges",
        "pyg_batch_complete",
    ],
)
def test_per_edge_bias_matches_reference(name, bias_shape, backend, gen):
    g = GRAPHS[name]()
    b, h, e = 2, 3, g.num_edges
    q, k, v = _qkv(b, h, g.num_dst, g.num_src, 2, gen)
    shape = {"EH": (e, h), "BEH": (b, e, h), "1EH": (1, e, h)}[bias_shape]
    bias = _randn(*shape, gen=gen)  # copies of a duplicated edge get different biases
    out = graph_attention(q, k, v, g, attn_bias=bias, backend=backend)
    dense_bias = edge_bias_as_dense(bias, g.edge_index(), g.num_dst, g.num_src)
    ref = dense_reference(q, k, v, _counts(g), bias=dense_bias)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias_shape", ["1HNN", "B1NN", "BHNN"])
@pytest.mark.parametrize(
    ("name", "padded"),
    [
        ("edges_dups_selfloops_isolated", False),
        ("causal", True),
        ("complete", False),
        ("pyg_batch_complete", False),
    ],
)
def test_dense_bias_matches_reference(name, padded, bias_shape, backend, gen):
    g = _case(name, padded)
    b, h = 2, 3
    q, k, v = _qkv(b, h, g.num_dst, g.num_src, 2, gen)
    shape = {"1HNN": (1, h), "B1NN": (b, 1), "BHNN": (b, h)}[bias_shape]
    bias = _randn(*shape, g.num_dst, g.num_src, gen=gen)
    out = graph_attention(q, k, v, g, attn_bias=bias, backend=backend)
    ref = dense_reference(q, k, v, _counts(g), bias=bias)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("name", ["complete_bipartite", "causal", "edges_dups_selfloops_isolated"])
def test_unbatched_matches_batched(name, with_bias, backend, gen):
    g = GRAPHS[name]()
    q, k, v = _qkv(None, 2, g.num_dst, g.num_src, 3, gen)
    bias = _randn(g.num_edges, 2, gen=gen) if with_bias else None
    out = graph_attention(q, k, v, g, attn_bias=bias, backend=backend)
    assert out.shape == (2, g.num_dst, 3)
    dense_bias = None
    if with_bias:
        dense_bias = edge_bias_as_dense(bias, g.edge_index(), g.num_dst, g.num_src)
    torch.testing.assert_close(
        out, dense_reference(q, k, v, _counts(g), dense_bias), atol=1e-10, rtol=0
    )
    batched = graph_attention(q[None], k[None], v[None], g, attn_bias=bias, backend=backend)
    torch.testing.assert_close(out, batched[0], rtol=0, atol=0)


def test_edge_index_tensor_equals_graph(gen):
    ei = random_edge_index(4, 5, 9, gen)
    q, k, v = _qkv(1, 2, 4, 5, 3, gen)
    for backend in BACKENDS:
        a = graph_attention(q, k, v, ei, backend=backend)
        b = graph_attention(q, k, v, Graph.from_edge_index(ei, 4, 5), backend=backend)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_graph_none_is_complete(gen):
    q, k, v = _qkv(2, 2, 3, 5, 4, gen)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for backend in BACKENDS:
        torch.testing.assert_close(graph_attention(q, k, v, backend=backend), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_scale(backend, gen):
    g = _fixed_edges()
    q, k, v = _qkv(1, 2, 5, 5, 3, gen)
    out = graph_attention(q, k, v, g, scale=0.7, backend=backend)
    torch.testing.assert_close(
        out, dense_reference(q, k, v, _counts(g), scale=0.7), atol=1e-10, rtol=0
    )


def _edge_values_reference(q, k, v, ev, edge_index, scale):
    """Loop over targets: softmax over the in-edges, weighted ``v_j + ev_e``."""
    b, h, nd, _ = q.shape
    out = q.new_zeros(b, h, nd, v.shape[-1])
    src, dst = edge_index
    for i in range(nd):
        es = (dst == i).nonzero().flatten()
        if len(es) == 0:
            continue
        s = (q[:, :, i, None, :] * k[:, :, src[es], :]).sum(-1) * scale  # (B, H, n)
        a = torch.softmax(s, -1)
        vals = v[:, :, src[es], :] + ev[:, es].permute(0, 2, 1, 3)  # (B, H, n, Dv)
        out[:, :, i] = (a[..., None] * vals).sum(-2)
    return out


@pytest.mark.parametrize("batched_ev", [False, True])
def test_edge_values_match_loop_reference(batched_ev, gen):
    g = _fixed_edges()
    q, k, v = _qkv(2, 2, 5, 5, 3, gen, dv=4)
    ev = _randn(2 if batched_ev else 1, g.num_edges, 2, 4, gen=gen)
    out = graph_attention(q, k, v, g, edge_values=ev if batched_ev else ev[0], backend="auto")
    ref = _edge_values_reference(q, k, v, ev.expand(2, -1, -1, -1), g.edge_index(), 3**-0.5)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------- weights


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(
    ("name", "padded"),
    [
        ("complete", False),
        ("complete_bipartite", True),
        ("causal", True),
        ("causal", False),
        ("window", False),
        ("grid", False),
        ("complete_as_edges", False),
        ("pyg_batch_complete", True),
        ("edges_dups_selfloops_isolated", True),
        ("edges_bipartite", False),
        ("pyg_batch_complete", False),
        ("edges_empty", False),
    ],
)
def test_weights(name, padded, with_bias, backend, gen):
    g = _case(name, padded)
    b, h, nd, ns = 2, 2, g.num_dst, g.num_src
    q, k, v = _qkv(b, h, nd, ns, 3, gen)
    bias = _randn(g.num_edges, h, gen=gen) if with_bias else None
    res = graph_attention_with_weights(q, k, v, g, attn_bias=bias, backend=backend)
    assert res.backend == backend
    torch.testing.assert_close(
        res.out, graph_attention(q, k, v, g, attn_bias=bias, backend=backend), rtol=0, atol=1e-12
    )
    w = res.attention
    if g.kind in ("complete", "causal"):
        assert w.layout == "dense" and w.values.shape == (b, h, nd, ns)
    else:
        assert w.layout == "edges" and w.values.shape == (b, g.num_edges, h)
    dense = w.to_dense()  # (B, H, Nd, Ns)
    assert dense.shape == (b, h, nd, ns)
    assert ((dense >= 0) & (dense <= 1)).all()
    assert ((w.values >= 0) & (w.values <= 1 + 1e-12)).all()
    counts = _counts(g)
    live = (counts.expand(b, 1, nd, ns) > 0).any(-1).expand(b, h, nd)  # targets with a message
    torch.testing.assert_close(dense.sum(-1), live.to(F64), rtol=0, atol=1e-12)
    # against the reference: weights are the output for v = identity
    eye = torch.eye(ns, dtype=F64).expand(b, h, ns, ns)
    dense_bias = None if bias is None else edge_bias_as_dense(bias, g.edge_index(), nd, ns)
    torch.testing.assert_close(
        dense, dense_reference(q, k, eye, counts, dense_bias), rtol=0, atol=1e-10
    )
    # absent and padded edges weigh 0
    assert (dense[(counts.expand(b, h, nd, ns) == 0)] == 0).all()


@pytest.mark.parametrize("name", list(GRAPHS))
def test_weights_round_trip(name, gen):
    g = GRAPHS[name]()
    q, k, v = _qkv(2, 2, g.num_dst, g.num_src, 3, gen)
    w = graph_attention_with_weights(q, k, v, g, backend="edges").attention
    per_edge = w.to_edges()  # (B, E, H)
    dense = w.to_dense()
    back = AttentionWeights(dense, g, "dense").to_edges()
    torch.testing.assert_close(back, per_edge, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        AttentionWeights(per_edge, g, "edges").to_dense(), dense, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("name", ["edges_dups_selfloops_isolated", "edges_random"])
def test_per_edge_weights_agree_across_backends(name, with_bias, gen):
    """Each copy of a duplicated edge has its own weight, the same on both backends."""
    g = GRAPHS[name]()
    q, k, v = _qkv(2, 2, g.num_dst, g.num_src, 3, gen)
    bias = _randn(2, g.num_edges, 2, gen=gen) if with_bias else None
    wd = graph_attention_with_weights(q, k, v, g, attn_bias=bias, backend="dense").attention
    we = graph_attention_with_weights(q, k, v, g, attn_bias=bias, backend="edges").attention
    torch.testing.assert_close(wd.to_edges(), we.to_edges(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["complete", "edges_dups_selfloops_isolated"])
def test_unbatched_weights(name, backend, gen):
    g = GRAPHS[name]()
    q, k, v = _qkv(None, 2, g.num_dst, g.num_src, 3, gen)
    w = graph_attention_with_weights(q, k, v, g, backend=backend).attention
    assert not w.batched
    assert w.to_dense().shape == (2, g.num_dst, g.num_src)
    assert w.to_edges().shape == (g.num_edges, 2)
    batched = graph_attention_with_weights(q[None], k[None], v[None], g, backend=backend)
    torch.testing.assert_close(w.to_dense(), batched.attention.to_dense()[0], rtol=0, atol=0)


# ---------------------------------------------------------------------- gradients


def _gradcheck_case(gen):
    g = _fixed_edges().pad(lengths=[5, 3])  # duplicates, self-loop, isolated target, padding
    q, k, v = _qkv(2, 2, 5, 5, 2, gen, dv=3, requires_grad=True)
    return g, q, k, v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias_kind", [None, "edges", "dense"])
def test_gradcheck(backend, bias_kind, gen):
    g, q, k, v = _gradcheck_case(gen)
    inputs = [q, k, v]
    if bias_kind == "edges":
        inputs.append(_randn(2, g.num_edges, 2, gen=gen, requires_grad=True))
    elif bias_kind == "dense":
        inputs.append(_randn(1, 2, 5, 5, gen=gen, requires_grad=True))

    def fn(q, k, v, bias=None):
        return graph_attention(q, k, v, g, attn_bias=bias, backend=backend)

    assert gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["complete_bipartite", "causal", "pyg_batch_complete"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_structured(name, backend, gen):
    g = GRAPHS[name]()
    q, k, v = _qkv(1, 2, g.num_dst, g.num_src, 2, gen, requires_grad=True)
    assert gradcheck(lambda q, k, v: graph_attention(q, k, v, g, backend=backend), (q, k, v))


def test_gradcheck_edge_values_and_bias(gen):
    g, q, k, v = _gradcheck_case(gen)
    bias = _randn(g.num_edges, 2, gen=gen, requires_grad=True)
    ev = _randn(2, g.num_edges, 2, 3, gen=gen, requires_grad=True)

    def fn(q, k, v, bias, ev):
        return graph_attention(q, k, v, g, attn_bias=bias, edge_values=ev, backend="edges")

    assert gradcheck(fn, (q, k, v, bias, ev), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("with_bias", [False, True])
def test_backward_backends_agree(with_bias, gen):
    g, q, k, v = _gradcheck_case(gen)
    bias = _randn(2, g.num_edges, 2, gen=gen, requires_grad=True) if with_bias else None
    grad_out = _randn(2, 2, 5, 3, gen=gen)
    grads = []
    for backend in BACKENDS:
        out = graph_attention(q, k, v, g, attn_bias=bias, backend=backend)
        inputs = (q, k, v) + ((bias,) if with_bias else ())
        grads.append(torch.autograd.grad(out, inputs, grad_out))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------- empty targets, padding


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
def test_target_without_in_edges_gets_exact_zero(backend, with_bias, gen):
    g = _fixed_edges()  # targets 3 and 4 have no in-edge
    assert torch.equal(g.in_degree(), torch.tensor([2, 3, 1, 0, 0]))
    q, k, v = _qkv(2, 2, 5, 5, 3, gen, requires_grad=True)
    bias = _randn(g.num_edges, 2, gen=gen, requires_grad=True) if with_bias else None
    out = graph_attention(q, k, v, g, attn_bias=bias, backend=backend)
    assert torch.isfinite(out).all()
    assert (out[:, :, 3:] == 0).all()
    out.pow(2).sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    assert torch.isfinite(v.grad).all()
    assert (q.grad[:, :, 3:] == 0).all()
    assert (q.grad[:, :, :2] != 0).any(-1).all()  # targets with several in-edges
    # nothing of targets 3, 4 leaks into k/v: the grads do not depend on their queries
    q2 = q.detach().clone()
    q2[:, :, 3:] = 1e3
    k2, v2 = k.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    graph_attention(q2, k2, v2, g, attn_bias=bias, backend=backend).pow(2).sum().backward()
    torch.testing.assert_close(k2.grad, k.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(v2.grad, v.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name",
    [
        "complete",
        "causal",
        "window",
        "edges_dups_selfloops_isolated",
        "pyg_batch_complete",
        "complete_bipartite",
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_fully_padded_sample_is_zero(name, backend, with_bias, gen):
    g = GRAPHS[name]()
    g = g.pad(lengths=[g.num_src, 0])
    q, k, v = _qkv(2, 2, g.num_dst, g.num_src, 3, gen, requires_grad=True)
    bias = _randn(g.num_edges, 2, gen=gen, requires_grad=True) if with_bias else None
    out = graph_attention(q, k, v, g, attn_bias=bias, backend=backend)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    torch.testing.assert_close(
        out[0],
        graph_attention(q[:1], k[:1], v[:1], g.unpadded(), attn_bias=bias, backend=backend)[0],
    )
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
        assert (t.grad[1] == 0).all()
    if with_bias:
        assert torch.isfinite(bias.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["complete", "causal", "edges_dups_selfloops_isolated"])
def test_bf16_large_logits_stay_finite(name, backend, gen):
    g = GRAPHS[name]()
    q, k, v = _qkv(2, 2, g.num_dst, g.num_src, 4, gen, dtype=torch.float32)
    q, k = q * 100, k * 100  # scores ~ 1e4
    scores = (q @ k.transpose(-2, -1)) / 2
    assert scores.abs().max() > 5e3
    qb, kb, vb = (t.to(torch.bfloat16).requires_grad_() for t in (q, k, v))
    out = graph_attention(qb, kb, vb, g, backend=backend)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    # each output is a convex combination of values
    assert out.float().abs().max() <= vb.float().abs().max() * 1.01
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (qb, kb, vb))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_close_to_float32(backend, gen):
    g = _fixed_edges()
    q, k, v = _qkv(2, 2, 5, 5, 4, gen, dtype=torch.float32)
    ref = graph_attention(q, k, v, g, backend=backend)
    low = graph_attention(*(t.bfloat16() for t in (q, k, v)), g, backend=backend)
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------- dropout


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["complete", "edges_dups_selfloops_isolated"])
def test_dropout(name, backend, gen):
    g = GRAPHS[name]()
    q, k, v = _qkv(2, 2, g.num_dst, g.num_src, 3, gen, requires_grad=True)
    plain = graph_attention(q, k, v, g, backend=backend)
    torch.manual_seed(0)
    a = graph_attention(q, k, v, g, dropout_p=0.5, backend=backend)
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, plain)  # dropout did something
    a.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    if backend == "edges":
        torch.manual_seed(0)
        b = graph_attention(q, k, v, g, dropout_p=0.5, backend=backend)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dropout_edges_gradcheck_with_fixed_seed(gen):
    g = _fixed_edges()
    q, k, v = _qkv(1, 1, 5, 5, 2, gen, requires_grad=True)

    def fn(q, k, v):
        torch.manual_seed(1)
        return graph_attention(q, k, v, g, dropout_p=0.3, backend="edges")

    assert gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_unbiased(backend, gen):
    g = Graph.complete(3)
    q, k, v = _qkv(1, 1, 3, 3, 2, gen)
    plain = graph_attention(q, k, v, g, backend=backend)
    torch.manual_seed(0)
    q4, k4, v4 = (t.expand(4000, -1, -1, -1) for t in (q, k, v))
    mean = graph_attention(q4, k4, v4, g, dropout_p=0.25, backend=backend).mean(0, keepdim=True)
    torch.testing.assert_close(mean, plain, rtol=0, atol=0.1)


# ---------------------------------------------------------------------- dispatch


def _sparse_graph(n=2000, deg=4):
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, n, (n * deg,), generator=g)
    dst = torch.arange(n).repeat_interleave(deg)
    return Graph.from_edge_index(torch.stack([src, dst]), n)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Graph.complete(6), "dense"),
        (lambda: Graph.complete(3, 5), "dense"),
        (lambda: Graph.causal(6), "dense"),
        (lambda: Graph.complete(6).pad(lengths=[3, 6]), "dense"),
        (GRAPHS["complete_as_edges"], "dense"),
        (GRAPHS["pyg_batch_complete"], "blocks"),
        (_sparse_graph, "edges"),
    ],
    ids=["complete", "bipartite", "causal", "padded", "complete_as_edges", "pyg_batch", "sparse"],
)
def test_auto_backend(make, expected, gen):
    g = make()
    assert choose_backend(g) == (edge_backend() if expected == "edges" else expected)
    b = 1 if g.key_padding_mask is None else len(g.key_padding_mask)
    q, k, v = _qkv(b, 1, g.num_dst, g.num_src, 2, gen, dtype=torch.float32)
    res = graph_attention_with_weights(q, k, v, g)
    assert res.backend == expected
    other = "edges" if expected == "dense" else "dense"
    if g.num_dst <= 10:
        torch.testing.assert_close(res.out, graph_attention(q, k, v, g, backend=other))


def test_auto_backend_with_edge_values_is_the_edge_list(gen):
    g = Graph.complete(3)
    assert choose_backend(g, has_edge_values=True) == edge_backend()
    q, k, v = _qkv(1, 1, 3, 3, 2, gen)
    ev = _randn(9, 1, 2, gen=gen)
    assert graph_attention_with_weights(q, k, v, g, edge_values=ev).backend == "edges"  # weights
    torch.testing.assert_close(
        graph_attention(q, k, v, g, edge_values=ev),
        graph_attention(q, k, v, g, edge_values=ev, backend="edges"),
    )


def test_dense_backend_refuses_edge_values(gen):
    q, k, v = _qkv(1, 1, 3, 3, 2, gen)
    ev = _randn(9, 1, 2, gen=gen)
    with pytest.raises(BackendNotSupportedError, match=r"'dense'.*edge"):
        graph_attention(q, k, v, Graph.complete(3), edge_values=ev, backend="dense")


# ---------------------------------------------------------------------- errors


def _err(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


def test_error_wrong_rank(gen):
    q, k, v = _qkv(1, 1, 3, 3, 2, gen)
    _err(ValueError, r"q must .*\(3, 2\)", lambda: graph_attention(q[0, 0], k, v))
    _err(ValueError, r"k must .*\(1, 1, 1, 1, 3, 2\)", lambda: graph_attention(q, k[None, None], v))
    _err(ValueError, r"same number of dims.*\(1, 3, 2\)", lambda: graph_attention(q, k[0], v))


def test_error_feature_and_size_mismatch(gen):
    q, k, v = _qkv(2, 2, 3, 4, 2, gen)
    _err(
        ValueError,
        r"q and k head dims.*2 vs 3",
        lambda: graph_attention(q, torch.randn(2, 2, 4, 3, dtype=F64), v),
    )
    _err(
        ValueError,
        r"k and v .*4 vs 5",
        lambda: graph_attention(q, k, torch.randn(2, 2, 5, 2, dtype=F64)),
    )
    _err(
        ValueError,
        r"batch and heads.*\(2, 3, 4, 2\)",
        lambda: graph_attention(q, torch.randn(2, 3, 4, 2, dtype=F64), v),
    )


def test_error_mixed_dtypes(gen):
    q, k, v = _qkv(1, 1, 3, 3, 2, gen)
    _err(
        TypeError,
        r"q, k, v .*dtype.*float64.*float32.*float64",
        lambda: graph_attention(q, k.float(), v),
    )
    _err(TypeError, r"v must be .*floating.*int64", lambda: graph_attention(q, k, v.long()))


def test_error_edge_index(gen):
    q, k, v = _qkv(1, 1, 3, 4, 2, gen)
    _err(
        TypeError,
        r"edge_index.*dtype.*float32",
        lambda: graph_attention(q, k, v, torch.zeros(2, 3)),
    )
    _err(
        ValueError,
        r"edge_index.*\(2, E\).*\(6,\)",
        lambda: graph_attention(q, k, v, torch.zeros(6, dtype=torch.long)),
    )
    _err(
        IndexError,
        r"edge_index\[0\].*index 4.*num_src=4",
        lambda: graph_attention(q, k, v, torch.tensor([[4], [0]])),
    )
    _err(
        IndexError,
        r"edge_index\[1\].*index 3.*num_dst=3",
        lambda: graph_attention(q, k, v, torch.tensor([[0], [3]])),
    )
    _err(
        IndexError,
        r"negative index -1",
        lambda: graph_attention(q, k, v, torch.tensor([[-1], [0]])),
    )


@pytest.mark.parametrize(
    "shape",
    [(5, 2), (7, 3), (2, 6, 3), (3, 6, 2), (3, 4), (2, 3, 3, 4), (1, 1, 1, 3, 4), (2, 2, 4)],
)
def test_error_bias_shape(shape, gen):
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 3, 0, 1], [0, 0, 1, 1, 2, 2]]), 3, 4)
    q, k, v = _qkv(2, 2, 3, 4, 2, gen)
    bias = torch.zeros(shape, dtype=F64)
    pattern = re.escape(f"got {shape}")
    for backend in BACKENDS:
        _err(
            ValueError,
            rf"bias.*{pattern}",
            lambda b=backend: graph_attention(q, k, v, g, attn_bias=bias, backend=b),
        )


def test_error_graph_size_mismatch(gen):
    q, k, v = _qkv(1, 1, 3, 4, 2, gen)
    _err(
        ValueError,
        r"num_dst=5, num_src=4.*3 target and 4 source",
        lambda: graph_attention(q, k, v, Graph.complete(5, 4)),
    )
    _err(
        ValueError,
        r"num_dst=3, num_src=3.*3 target and 4 source",
        lambda: graph_attention(q, k, v, Graph.causal(3)),
    )


def test_error_misc(gen):
    q, k, v = _qkv(2, 1, 3, 3, 2, gen)
    _err(ValueError, r"backend.*'sparse'", lambda: graph_attention(q, k, v, backend="sparse"))
    _err(ValueError, r"dropout_p.*1\.5", lambda: graph_attention(q, k, v, dropout_p=1.5))
    _err(
        ValueError,
        r"key_padding_mask has 3 rows.*B=2",
        lambda: graph_attention(q, k, v, Graph.complete(3).pad(lengths=[1, 2, 3])),
    )
    _err(  # a list holds one edge_index tensor per sample
        TypeError,
        r"graph\[0\] must be a torch.Tensor.*per sample\), got list",
        lambda: graph_attention(q, k, v, [[0], [1]]),
    )
    _err(
        ValueError,
        r"edge_values.*E=9.*\(9, 2, 2\)",
        lambda: graph_attention(q, k, v, edge_values=torch.zeros(9, 2, 2, dtype=F64)),
    )
    _err(
        TypeError,
        r"bias.*floating.*int64",
        lambda: graph_attention(q, k, v, attn_bias=torch.zeros(9, 1, dtype=torch.long)),
    )


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf")])
def test_error_non_finite_scale(scale, gen):
    q, k, v = _qkv(1, 1, 3, 3, 2, gen)
    _err(
        ValueError,
        rf"scale must be a finite number, got {scale}",
        lambda: graph_attention(q, k, v, scale=scale),
    )
