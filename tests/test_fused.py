"""The fused CPU kernel against the pure-torch edge path: forward, backward and every input
(bias, padding, edge features and values, duplicates, isolated targets, bipartite sizes, a
hub with 10^5 in-edges), float64 gradcheck, dropout, half precision, and the refusal and
fallback when the kernel cannot be built."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import random_edge_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from graphattn import BackendNotSupportedError, Graph, auto_policy, graph_attention, scores
from graphattn.backends import fused as fused_mod

F64 = torch.float64


@pytest.fixture(scope="module")
def kernel():
    ext, why = fused_mod.fused_extension()
    if ext is None:
        pytest.skip(f"the fused kernel is not available here: {why}")
    return ext


def _score(kind: str, h: int, d: int, gen, dtype=F64):
    if kind == "dot":
        return scores.DotProduct(), d
    if kind == "gat":
        return scores.GAT(0.2), 1
    return scores.GATv2(torch.randn(h, d, generator=gen, dtype=dtype, requires_grad=True)), d


def _compare(
    graph, kind, gen, *, b=2, h=3, d=4, dv=5, bias=False, ef=False, ev=False, dtype=F64, atol=1e-12
):
    score, dk = _score(kind, h, d, gen, dtype)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype, requires_grad=True)

    e = graph.num_edges
    t = {
        "q": rand(b, h, graph.num_dst, dk),
        "k": rand(b, h, graph.num_src, dk),
        "v": rand(b, h, graph.num_src, dv),
        "bias": rand(e, h) if bias else None,  # (E, H): never read as a dense bias
        "edge_features": rand(1, e, h, 1 if kind == "gat" else dk) if ef else None,
        "edge_values": rand(1, e, h, dv) if ev else None,
    }
    leaves = [x for x in t.values() if x is not None] + list(score.tensors())
    results = {}
    for backend in ("edges", "fused"):
        out = graph_attention(
            t["q"],
            t["k"],
            t["v"],
            graph,
            score=score,
            attn_bias=t["bias"],
            edge_features=t["edge_features"],
            edge_values=t["edge_values"],
            backend=backend,
        )
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
        results[backend] = (out, torch.autograd.grad(out, leaves, grad, allow_unused=True))
    (o1, g1), (o2, g2) = results["edges"], results["fused"]
    torch.testing.assert_close(o2, o1, rtol=0, atol=atol)
    for a, b_ in zip(g2, g1, strict=True):
        if b_ is None:
            assert a is None or not a.abs().max() > 0
        else:
            torch.testing.assert_close(a, b_, rtol=0, atol=atol)


GRAPHS = {
    "dups_selfloops_isolated": lambda: Graph.from_edge_index(
        torch.tensor([[0, 0, 2, 4, 1, 3, 1], [1, 1, 2, 0, 0, 1, 2]]), 6
    ),
    "bipartite": lambda: Graph.from_edge_index(
        torch.tensor([[0, 5, 5, 2, 3, 1], [0, 0, 0, 2, 2, 3]]), num_dst=4, num_src=6
    ),
    "random": lambda: Graph.from_edge_index(
        random_edge_index(9, 7, 60, torch.Generator().manual_seed(1)), 9, 7
    ),
    "window": lambda: Graph.window(8, 2),
    "complete": lambda: Graph.complete(5, 4),
}


@pytest.mark.parametrize("graph_name", list(GRAPHS))
@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_equals_the_edge_path(kernel, kind, graph_name, gen):
    _compare(GRAPHS[graph_name](), kind, gen)
    _compare(GRAPHS[graph_name](), kind, gen, bias=True, ef=True, ev=True)


@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_padding_and_fully_padded_sample(kernel, kind, gen):
    graph = GRAPHS["random"]().pad(lengths=[4, 0])
    _compare(graph, kind, gen, bias=True)
    q = torch.randn(2, 3, 9, 1 if kind == "gat" else 4, generator=gen)
    score, _ = _score(kind, 3, 4, gen, torch.float32)
    out = graph_attention(
        q, q[:, :, :7], torch.randn(2, 3, 7, 5, generator=gen), graph, score=score, backend="fused"
    )
    assert torch.isfinite(out).all() and (out[1] == 0).all()


def test_hub_with_100k_in_edges(kernel, gen):
    """A star: target 0 receives 10^5 edges, the others a few; float32 against the edge path."""
    n = 100_001
    hub = torch.stack([torch.arange(1, n), torch.zeros(n - 1, dtype=torch.long)])
    rest = torch.stack(
        [torch.randint(0, n, (3 * n,), generator=gen), torch.randint(1, n, (3 * n,), generator=gen)]
    )
    graph = Graph.from_edge_index(torch.cat([hub, rest], 1), n)
    _compare(graph, "gat", gen, b=1, h=2, d=2, dv=3, dtype=torch.float32, atol=2e-5)


@st.composite
def problems(draw):
    nd, ns = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    e = draw(st.integers(0, 30))
    src = draw(st.lists(st.integers(0, ns - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, nd - 1), min_size=e, max_size=e))
    return {
        "ei": torch.tensor([src, dst], dtype=torch.long).view(2, -1),
        "nd": nd,
        "ns": ns,
        "kind": draw(st.sampled_from(["dot", "gat", "gatv2"])),
        "b": draw(st.integers(1, 2)),
        "h": draw(st.integers(1, 3)),
        "d": draw(st.integers(1, 4)),
        "bias": draw(st.booleans()),
        "ef": draw(st.booleans()),
        "ev": draw(st.booleans()),
        "lengths": draw(st.none() | st.lists(st.integers(0, ns), min_size=2, max_size=2)),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(p=problems())
def test_random_graphs(kernel, p):
    graph = Graph.from_edge_index(p["ei"], p["nd"], p["ns"])
    if p["lengths"] is not None:
        graph = graph.pad(lengths=p["lengths"][: p["b"]])
    _compare(
        graph,
        p["kind"],
        torch.Generator().manual_seed(p["seed"]),
        b=p["b"],
        h=p["h"],
        d=p["d"],
        bias=p["bias"],
        ef=p["ef"],
        ev=p["ev"],
    )


@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_gradcheck(kernel, kind, gen):
    graph = GRAPHS["dups_selfloops_isolated"]().pad(lengths=[4])
    score, dk = _score(kind, 2, 2, gen)
    e = graph.num_edges

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64, requires_grad=True)

    inputs = [
        rand(1, 2, 6, dk),
        rand(1, 2, 6, dk),
        rand(1, 2, 6, 2),
        rand(1, e, 2),
        rand(e, 2, 1 if kind == "gat" else dk),
        rand(e, 2, 2),
        *score.tensors(),
    ]

    def fn(q, k, v, bias, ef, ev, *att):
        sc = scores.GATv2(att[0]) if kind == "gatv2" else score
        return graph_attention(
            q,
            k,
            v,
            graph,
            score=sc,
            attn_bias=bias,
            edge_features=ef,
            edge_values=ev,
            backend="fused",
        )

    assert gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-8)


def test_dropout(kernel, gen):
    graph = GRAPHS["random"]()
    q, k, v = (torch.randn(1, 2, n, 3, generator=gen, dtype=F64) for n in (9, 7, 7))
    plain = graph_attention(q, k, v, graph, backend="fused")
    torch.manual_seed(0)
    a = graph_attention(q, k, v, graph, dropout_p=0.5, backend="fused")
    torch.manual_seed(0)
    b = graph_attention(q, k, v, graph, dropout_p=0.5, backend="fused")
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the seed comes from torch's generator
    assert not torch.allclose(a, plain)
    many = graph_attention(
        q.expand(4000, -1, -1, -1),
        k.expand(4000, -1, -1, -1),
        v.expand(4000, -1, -1, -1),
        graph,
        dropout_p=0.25,
        backend="fused",
    )
    torch.testing.assert_close(many.mean(0, keepdim=True), plain, rtol=0, atol=0.05)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def fn(q, k, v):
        torch.manual_seed(3)
        return graph_attention(q, k, v, graph, dropout_p=0.4, backend="fused")

    assert gradcheck(fn, (qg, kg, vg), eps=1e-6, atol=1e-8)


def test_half_precision_runs_in_float32(kernel, gen):
    graph = GRAPHS["random"]()
    q, k, v = (torch.randn(2, 2, n, 4, generator=gen) for n in (9, 7, 7))
    ref = graph_attention(q, k, v, graph, backend="fused")
    low = graph_attention(*(t.bfloat16() for t in (q, k, v)), graph, backend="fused")
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)


def test_refusals(kernel, gen):
    graph = GRAPHS["random"]()
    q = torch.randn(1, 2, 9, 3, generator=gen)
    k = torch.randn(1, 2, 7, 3, generator=gen)
    with pytest.raises(BackendNotSupportedError, match=r"fused: .*returns no weights"):
        graph_attention(q, k, k, graph, need_weights=True, backend="fused")
    with pytest.raises(BackendNotSupportedError, match=r"fused: score Custom.*not served"):
        graph_attention(q, k, k, graph, score=lambda a, b, e: (a * b).sum(-1), backend="fused")


def test_auto_prefers_the_kernel_for_big_calls(kernel, gen, monkeypatch):
    graph = Graph.from_edge_index(random_edge_index(200, 200, 400, gen), 200)  # sparse
    q = torch.randn(1, 2, 200, 3, generator=gen)
    monkeypatch.setattr(auto_policy, "fused_min_work", 1)
    assert auto_policy.order(graph, 3, 2)[:2] == ["fused", "edges"]
    res = graph_attention(q, q, q, graph, need_weights=True)  # weights: the edge path
    assert res.backend == "edges"
    torch.testing.assert_close(
        graph_attention(q, q, q, graph), graph_attention(q, q, q, graph, backend="edges")
    )
    monkeypatch.setattr(auto_policy, "fused_min_work", 10**12)
    assert auto_policy.order(graph, 3, 2)[0] == "edges"


def test_no_compiler_falls_back_with_one_warning(gen, monkeypatch):
    """When the build fails the backend refuses with the reason, auto runs the pure-torch
    edge path, and the warning is given once."""
    import torch.utils.cpp_extension as cpp

    def fail(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(fused_mod, "_STATE", {})
    monkeypatch.setattr(cpp, "load", fail)
    monkeypatch.setattr(auto_policy, "fused_min_work", 1)
    graph = Graph.from_edge_index(random_edge_index(200, 200, 400, gen), 200)  # sparse
    q = k = torch.randn(1, 2, 200, 3, generator=gen)
    with pytest.warns(RuntimeWarning, match=r"could not be built \(Ninja is required"):
        out = graph_attention(q, k, k, graph)
    torch.testing.assert_close(out, graph_attention(q, k, k, graph, backend="edges"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        graph_attention(q, k, k, graph)
    with pytest.raises(BackendNotSupportedError, match=r"fused: the C\+\+ kernel could not be"):
        graph_attention(q, k, k, graph, backend="fused")


def test_disabled_by_environment(gen, monkeypatch):
    monkeypatch.setattr(fused_mod, "_STATE", {})
    monkeypatch.setenv("GRAPHATTN_FUSED", "0")
    q = torch.randn(1, 2, 9, 3, generator=gen)
    k = torch.randn(1, 2, 7, 3, generator=gen)
    with pytest.raises(BackendNotSupportedError, match=r"disabled by GRAPHATTN_FUSED=0"):
        graph_attention(q, k, k, GRAPHS["random"](), backend="fused")
