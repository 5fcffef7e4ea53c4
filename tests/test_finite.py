"""The rules for non-finite values (``graphattn/_finite.py``), on every backend and score:

1. a NaN or inf in a source's key or value reaches only the targets with an edge from it,
   a non-finite query only its own target, a non-finite per-edge input only its edge's target;
2. padded sources never send, even when their keys, values or per-edge inputs are NaN or inf;
3. scores that overflow are computed in a wider type; float64 overflow raises;
4. modules zero padded nodes' non-finite features, so that gradients stay finite.

The fuzz places NaN and inf in random sources, queries, padded nodes and per-edge biases of
random graphs and checks, per target and head, that the output is non-finite exactly where
the rule says (for NaN; for inf, the non-finite targets are a subset: ``-inf`` in a key can
legitimately give a finite weight of zero).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from graphattn import (
    Graph,
    GraphAttention,
    GraphTransformerLayer,
    auto_policy,
    graph_attention,
    graph_attention_with_weights,
)
from graphattn._finite import all_finite, zero_padded_nodes
from graphattn.backends import BackendNotSupportedError, backend_names
from graphattn.scores import GAT, Custom, GATv2

BACKENDS = ["dense", "blocks", "edges", "fused"]
FUZZ_EXAMPLES = 400

SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _cosine(q: torch.Tensor, k: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:  # (n, H)
    return torch.nn.functional.cosine_similarity(q, k, dim=-1) * 4.0


def _score(name: str, h: int, d: int, gen: torch.Generator):
    if name == "dot":
        return None, d
    if name == "gat":
        return GAT(), 1
    if name == "gatv2":
        return GATv2(torch.randn(h, d, generator=gen, dtype=torch.float64)), d
    return Custom(_cosine), d


def _graph(kind: str, n: int, gen: torch.Generator) -> Graph:
    if kind == "complete":
        return Graph.complete(n)
    if kind == "causal":
        return Graph.causal(n)
    if kind == "window":
        return Graph.window(n, 1)
    if kind == "blocks":  # two complete blocks, as a PyG batch of complete graphs
        half = n // 2
        ids = [list(range(0, half)), list(range(half, n))]
        pairs = [(s, t) for block in ids for s in block for t in block]
        return Graph.from_edge_index(torch.tensor(pairs).t().reshape(2, -1), n, n)
    e = 3 * n
    ei = torch.stack(
        [torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen)]
    )
    return Graph.from_edge_index(ei, n, n)


def _reach(graph: Graph, bad_src: torch.Tensor) -> torch.Tensor:
    """``(B, H, Nd)``: targets with an edge from a bad source ``(B, H, Ns)``."""
    src, dst = graph.edge_index()
    hit = bad_src[:, :, src]  # (B, H, E)
    out = torch.zeros(*bad_src.shape[:2], graph.num_dst, dtype=torch.long)
    out.index_add_(2, dst, hit.long())
    return out > 0


@st.composite
def cases(draw):
    return {
        "score": draw(st.sampled_from(["dot", "gat", "gatv2", "custom"])),
        "graph": draw(st.sampled_from(["sparse", "complete", "causal", "window", "blocks"])),
        "n": draw(st.integers(4, 10)),
        "b": draw(st.integers(1, 2)),
        "h": draw(st.integers(1, 2)),
        "value": draw(st.sampled_from([math.nan, math.inf, -math.inf])),
        "where": draw(st.sampled_from(["k", "v", "q", "bias"])),
        "count": draw(st.integers(1, 3)),
        "padded": draw(st.booleans()),
        "padded_value": draw(st.sampled_from([None, math.nan, math.inf])),
        "seed": draw(st.integers(0, 2**16)),
    }


@SETTINGS
@given(cases())
def test_fuzz_non_finite_values_stay_where_the_rule_says(c):
    gen = torch.Generator().manual_seed(c["seed"])
    n, b, h, d = c["n"], c["b"], c["h"], 3
    score, dq = _score(c["score"], h, d, gen)
    graph = _graph(c["graph"], n, gen)
    lengths = None
    if c["padded"]:
        lengths = torch.randint(1, n + 1, (b,), generator=gen)
        graph = graph.pad(lengths=lengths)
    q = torch.randn(b, h, n, dq, generator=gen, dtype=torch.float64)
    k = torch.randn(b, h, n, dq, generator=gen, dtype=torch.float64)
    v = torch.randn(b, h, n, d, generator=gen, dtype=torch.float64)
    e = graph.num_edges
    bias = (
        torch.randn(b, e, h, generator=gen, dtype=torch.float64) if c["where"] == "bias" else None
    )
    real = torch.ones(b, n, dtype=torch.bool)
    if lengths is not None:
        real = torch.arange(n)[None] < lengths[:, None]  # (B, Ns)
        if c["padded_value"] is not None:  # padded sources' features and edges poisoned
            pad = ~real
            k[pad[:, None, :, None].expand_as(k)] = c["padded_value"]
            v[pad[:, None, :, None].expand_as(v)] = c["padded_value"]
            if bias is not None:
                src = graph.edge_index()[0]
                bias[pad[:, src][..., None].expand_as(bias)] = c["padded_value"]
    # poison `count` random real positions of one kind
    bad_src = torch.zeros(b, h, n, dtype=torch.bool)
    bad_dst = torch.zeros(b, h, n, dtype=torch.bool)
    for _ in range(c["count"]):
        bi = int(torch.randint(0, b, (1,), generator=gen))
        hi = int(torch.randint(0, h, (1,), generator=gen))
        if c["where"] == "bias":
            if e == 0:
                continue
            ei = int(torch.randint(0, e, (1,), generator=gen))
            s, t = graph.edge_index()[:, ei].tolist()
            if not real[bi, s]:
                continue  # an edge from a padded source: covered by the padded poison
            bias[bi, ei, hi] = c["value"]
            bad_dst[bi, hi, t] = True
            continue
        node = int(torch.randint(0, n, (1,), generator=gen))
        if c["where"] == "q":
            q[bi, hi, node, 0] = c["value"]
            bad_dst[bi, hi, node] = True
        elif real[bi, node]:
            (k if c["where"] == "k" else v)[bi, hi, node, -1] = c["value"]
            bad_src[bi, hi, node] = True
    outputs = {}
    event(f"{c['graph']} {c['score']} padded={c['padded']}")
    for backend in [*BACKENDS, "auto"]:  # every backend that serves the call
        try:
            outputs[backend] = graph_attention(
                q, k, v, graph, score=score, attn_bias=bias, backend=backend
            )
            event(f"ran on {backend}")
        except BackendNotSupportedError:
            pass
    has_edge = graph.unpadded().in_degree() > 0  # (Nd,): targets without edges give zero
    if lengths is not None:  # a target whose only sources are padded has no edge either
        src, dst = graph.edge_index()
        live = torch.zeros(b, n, dtype=torch.long)
        live.index_add_(1, dst, real[:, src].long())
        has_edge = live > 0  # (B, Nd)
    has_edge = has_edge.expand(b, n)[:, None, :]  # (B, 1, Nd)
    expected = (_reach(graph, bad_src) | bad_dst) & has_edge  # (B, H, Nd)
    for backend, out in outputs.items():
        nonfinite = ~torch.isfinite(out).all(-1)  # (B, H, Nd)
        assert not (nonfinite & ~expected).any(), f"{backend}: reached an unreached target"
        if math.isnan(c["value"]):
            assert (nonfinite == expected).all(), f"{backend}: a NaN was lost on its way"
        clean = ~expected[..., None].expand_as(out)  # finite targets agree across backends
        torch.testing.assert_close(out[clean], outputs["edges"][clean], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_target_without_in_edges_gets_zero_even_with_a_nan_query(backend, value, gen):
    graph = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 3, 3)  # target 2: no edge
    q, k, v = (torch.randn(1, 2, 3, 4, generator=gen) for _ in range(3))
    q[0, :, 2] = value
    try:
        out = graph_attention(q, k, v, graph, backend=backend)
    except BackendNotSupportedError:
        pytest.skip(f"{backend} does not serve this graph (not a union of complete blocks)")
    assert torch.equal(out[0, :, 2], torch.zeros(2, 4))


@pytest.mark.parametrize("backend", ["dense", "edges", "fused"])  # blocks: no key padding
def test_padded_sources_never_send_even_nan(backend, gen):
    """Same real outputs with clean and with NaN/inf padding; padded targets stay finite."""
    graph = Graph.window(6, 2).pad(lengths=[6, 3])
    q, k, v = (torch.randn(2, 2, 6, 4, generator=gen) for _ in range(3))
    clean = graph_attention(q, k, v, graph, backend=backend)
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 3:] = math.nan
    v2[1, :, 3:] = math.inf
    out = graph_attention(q, k2, v2, graph, backend=backend)
    torch.testing.assert_close(out, clean, rtol=0, atol=0)


def _padded_layer_case(module, pad_value: float, gen: torch.Generator):
    x = torch.randn(2, 7, 16, generator=gen)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, 4:] = True
    ref = module(x, Graph.window(7, 2), key_padding_mask=kpm)
    poisoned = x.clone()
    poisoned[1, 4:] = pad_value
    poisoned.requires_grad_(True)
    out = module(poisoned, Graph.window(7, 2), key_padding_mask=kpm)
    return ref, out, poisoned, ~kpm


@pytest.mark.parametrize("backend", ["dense", "edges", "fused"])
@pytest.mark.parametrize("kind", ["attention", "layer"])
def test_modules_ignore_non_finite_padding_forward_and_backward(kind, backend, gen):
    torch.manual_seed(0)
    if kind == "attention":
        module = GraphAttention(16, 4, backend=backend).eval()
    else:
        module = GraphTransformerLayer(16, 4, backend=backend).eval()
    ref, out, x, real = _padded_layer_case(module, math.nan, gen)
    torch.testing.assert_close(out[real], ref[real], rtol=0, atol=1e-6)
    out[real].sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in module.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_cross_attention_zeroes_padded_sources_of_x_src(gen):
    ga = GraphAttention(8, 2).eval()
    x = torch.randn(2, 3, 8, generator=gen)
    src = torch.randn(2, 5, 8, generator=gen)
    kpm = torch.tensor([[False] * 5, [False] * 2 + [True] * 3])
    ref = ga(x, x_src=src, key_padding_mask=kpm)
    src[1, 2:] = math.nan
    torch.testing.assert_close(ga(x, x_src=src, key_padding_mask=kpm), ref, rtol=0, atol=0)


def test_zero_padded_nodes_copies_nothing_when_finite(gen):
    x = torch.randn(2, 4, 3, generator=gen)
    kpm = torch.tensor([[False, False, True, True]] * 2)
    assert zero_padded_nodes(x, kpm) is x
    x[0, 3] = math.nan
    y = zero_padded_nodes(x, kpm)
    assert torch.isfinite(y).all() and torch.equal(y[:, :2], x[:, :2])
    assert torch.equal(zero_padded_nodes(x[0], kpm[:1])[:2], x[0, :2])  # unbatched


def test_all_finite_is_exact_when_the_sum_overflows():
    big = torch.full((4,), 3e38)  # finite, but the float32 sum overflows
    assert all_finite(big)
    assert not all_finite(torch.tensor([1.0, math.nan]))
    assert not all_finite(torch.tensor([math.inf, -math.inf]))
    half = torch.ones(100_000, dtype=torch.float16)  # sums past float16's range
    assert all_finite(half, None, torch.arange(3))


# ---------------------------------------------------------------------- overflow


def _big(dtype: torch.dtype, gen: torch.Generator):
    factor = {torch.float16: 300.0, torch.bfloat16: 1e20, torch.float32: 1e20}[dtype]
    q, k, v = (torch.randn(2, 10, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    return q * factor, k * factor, v


@pytest.mark.parametrize("backend", ["dense", "edges", "fused"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("graph", ["complete", "window"])
def test_overflowing_scores_are_computed_in_a_wider_type(graph, dtype, backend, gen):
    q, k, v = _big(dtype, gen)
    g = None if graph == "complete" else Graph.window(10, 2)
    # plain float32 arithmetic really overflows here (the case this rule is for)
    scores = q.to(dtype) @ k.to(dtype).mT  # (H, N, N) in the call's own type
    assert not torch.isfinite(torch.softmax(scores, -1)).all()
    ref = graph_attention(q, k, v, g, backend="edges")  # float64: no overflow
    out = graph_attention(q.to(dtype), k.to(dtype), v.to(dtype), g, backend=backend)
    assert out.dtype == dtype and torch.isfinite(out).all()
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol)


def test_overflow_widening_keeps_gradients(gen):
    q, k, v = _big(torch.float32, gen)
    q, k, v = (t.float().requires_grad_(True) for t in (q, k, v))
    out = graph_attention(q, k, v, Graph.window(10, 2), backend="edges")
    out.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("backend", ["dense", "edges", "fused"])
def test_float64_overflow_raises(backend, gen):
    q, k, v = (torch.randn(2, 10, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    with pytest.raises(FloatingPointError, match="overflowed float64.*scale the queries"):
        graph_attention(q * 1e160, k * 1e160, v, None, backend=backend)


def test_non_finite_inputs_in_float64_are_returned_not_raised(gen):
    q, k, v = (torch.randn(2, 10, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    k[0, 3] = math.nan
    out = graph_attention(q, k, v, Graph.window(10, 1))
    assert (~torch.isfinite(out).all(-1)).nonzero()[:, 1].unique().tolist() == [2, 3, 4]


# ---------------------------------------------------------------------- memory limits


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_checks_its_memory_before_allocating(backend, gen, monkeypatch):
    graph = Graph.from_edge_index(torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]), 4, 4)  # 4 blocks
    q, k, v = (torch.randn(2, 4, 8, generator=gen) for _ in range(3))
    graph_attention(q, k, v, graph, backend=backend)  # serves it within the default limit
    monkeypatch.setattr(auto_policy, "max_memory_bytes", 64)
    with pytest.raises(
        BackendNotSupportedError,
        match=rf"{backend}: .*would allocate about .*GiB.*max_memory_bytes=64",
    ):
        graph_attention(q, k, v, graph, backend=backend)


def test_a_call_too_big_for_the_machine_is_refused_with_reasons():
    """Weights of a complete graph of 2^20 nodes: terabytes on every backend."""
    q = torch.randn(1, 2, 1 << 20, 4)
    with pytest.raises(BackendNotSupportedError) as err:
        graph_attention_with_weights(q, q, q, None)
    for name in ("dense", "edges"):
        assert f"{name}: would allocate about" in str(err.value)


def test_backend_names_cover_the_tests():
    assert set(BACKENDS) <= set(backend_names())


@pytest.mark.parametrize("backend", ["dense", "edges", "fused"])
@pytest.mark.parametrize("where", ["k", "v"])
def test_a_minus_inf_bias_zeroes_the_weight_but_values_still_count(where, backend, gen):
    """Edge 0 -> 1 has bias -inf: its weight is zero whatever its score, so source 0's NaN
    key does not reach target 1, but its NaN value does (0 * NaN), on every backend."""
    graph = Graph.from_edge_index(torch.tensor([[0, 2, 0], [1, 1, 0]]), 3, 3)
    q, k, v = (torch.randn(1, 1, 3, 4, generator=gen) for _ in range(3))
    (k if where == "k" else v)[0, 0, 0] = math.nan
    bias = torch.tensor([[[-math.inf], [0.0], [0.0]]])  # (B, E, H)
    out = graph_attention(q, k, v, graph, attn_bias=bias, backend=backend)
    assert bool(torch.isfinite(out[0, 0, 1]).all()) == (where == "k")
    assert torch.isnan(out[0, 0, 0]).all()  # 0 -> 0 is a live edge
    assert torch.equal(out[0, 0, 2], torch.zeros(4))  # no in-edge
