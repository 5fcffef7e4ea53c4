"""Property tests: on random graphs (no edges, isolated targets, duplicates, self-loops,
bipartite sizes, padding, per-edge bias) the dense and edge backends agree with each other
and with the independent dense reference, forward and backward."""

from __future__ import annotations

import torch
from conftest import dense_reference, edge_bias_as_dense, edge_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphattn import Graph, graph_attention, graph_attention_with_weights

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def problems(draw):
    nd = draw(st.integers(1, 9))
    ns = draw(st.integers(1, 9))
    e = draw(st.integers(0, 24))
    src = draw(st.lists(st.integers(0, ns - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, nd - 1), min_size=e, max_size=e))
    if e and draw(st.booleans()):  # force a duplicate and, when square, a self-loop
        src.append(src[0])
        dst.append(dst[0])
        if nd == ns:
            src.append(dst[-1])
            dst.append(dst[-1])
    return {
        "nd": nd,
        "ns": ns,
        "edge_index": torch.tensor([src, dst], dtype=torch.long).view(2, -1),
        "b": draw(st.integers(1, 2)),
        "h": draw(st.integers(1, 3)),
        "d": draw(st.integers(1, 4)),
        "dv": draw(st.integers(1, 4)),
        "bias": draw(st.sampled_from([None, "EH", "BEH"])),
        "lengths": draw(st.none() | st.lists(st.integers(0, ns), min_size=2, max_size=2)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _inputs(p):
    gen = torch.Generator().manual_seed(p["seed"])
    b, h, nd, ns = p["b"], p["h"], p["nd"], p["ns"]
    ei = p["edge_index"]
    graph = Graph.from_edge_index(ei, nd, ns)
    if p["lengths"] is not None:
        graph = graph.pad(lengths=p["lengths"][:b])

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)

    q, k, v = rand(b, h, nd, p["d"]), rand(b, h, ns, p["d"]), rand(b, h, ns, p["dv"])
    e = ei.shape[1]
    bias = {None: None, "EH": lambda: rand(e, h), "BEH": lambda: rand(b, e, h)}[p["bias"]]
    bias = bias() if bias is not None else None
    return graph, q, k, v, bias


def _reference(graph, q, k, v, bias):
    ei = graph.edge_index()
    counts = edge_counts(ei, graph.num_dst, graph.num_src)  # (Nd, Ns)
    if graph.key_padding_mask is not None:
        counts = (counts[None] * ~graph.key_padding_mask[:, None, :])[:, None]  # (B, 1, Nd, Ns)
    dense_bias = None
    if bias is not None:
        dense_bias = edge_bias_as_dense(bias, ei, graph.num_dst, graph.num_src)
    return dense_reference(q, k, v, counts, dense_bias)


@SETTINGS
@given(problems())
def test_backends_agree_with_each_other_and_the_reference(p):
    graph, q, k, v, bias = _inputs(p)
    inputs = (q, k, v) if bias is None else (q, k, v, bias)
    grad_out = torch.randn(p["b"], p["h"], p["nd"], p["dv"], dtype=torch.float64)
    results = {}
    for backend in ("dense", "edges", "reference"):
        if backend == "reference":
            out = _reference(graph, q, k, v, bias)
        else:
            out = graph_attention(q, k, v, graph, attn_bias=bias, backend=backend)
        assert torch.isfinite(out).all()
        grads = torch.autograd.grad(out, inputs, grad_out, allow_unused=True)
        pairs = zip(grads, inputs, strict=True)
        grads = tuple(torch.zeros_like(t) if g is None else g for g, t in pairs)
        results[backend] = (out, grads)
    ref_out, ref_grads = results["reference"]
    for backend in ("dense", "edges"):
        out, grads = results[backend]
        torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-9, msg=backend)
        for name, g, rg in zip("qkvb", grads, ref_grads, strict=False):
            assert torch.isfinite(g).all(), (backend, name)
            torch.testing.assert_close(g, rg, rtol=0, atol=1e-9, msg=f"{backend} d{name}")
    for g_dense, g_edges in zip(results["dense"][1], results["edges"][1], strict=True):
        torch.testing.assert_close(g_dense, g_edges, rtol=0, atol=1e-9)


@SETTINGS
@given(problems())
def test_weights_agree_and_normalise(p):
    graph, q, k, v, bias = _inputs(p)
    with torch.no_grad():
        wd = graph_attention_with_weights(q, k, v, graph, attn_bias=bias, backend="dense")
        we = graph_attention_with_weights(q, k, v, graph, attn_bias=bias, backend="edges")
    assert wd.attention.layout == we.attention.layout == "edges"
    torch.testing.assert_close(wd.attention.values, we.attention.values, rtol=0, atol=1e-9)
    dense = we.attention.to_dense()  # (B, H, Nd, Ns)
    assert ((dense >= 0) & (dense <= 1 + 1e-12)).all()
    has_message = graph.materialize().any(-1)  # (Nd,) or (B, Nd)
    expected = has_message.to(dense.dtype).expand(p["b"], p["nd"])[:, None]
    torch.testing.assert_close(dense.sum(-1), expected.expand_as(dense[..., 0]), rtol=0, atol=1e-9)
