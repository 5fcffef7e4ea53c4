"""Score functions on every backend that serves them, against a plain-torch reference written
here (per-edge formulas, scatter softmax, scatter sum), forward and backward; float64
gradcheck of every score, the user hook included; chunk boundaries; errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import random_edge_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.autograd import gradcheck
from torch_geometric.data import Batch, Data

from graphattn import (
    BackendNotSupportedError,
    Graph,
    graph_attention,
    graph_attention_with_weights,
    scores,
)
from graphattn.backends import _chunks

F64 = torch.float64
BACKENDS = ["dense", "blocks", "edges", "auto"]
KINDS = ["dot", "gat", "gatv2", "cosine"]


# ---------------------------------------------------------------------- the reference
def ref_logits(kind: str, qi: Tensor, kj: Tensor, e: Tensor | None, extra: dict) -> Tensor:
    """Unscaled logits ``(..., H)`` of gathered ``(..., H, D)`` features, written out."""
    if kind == "dot":
        return (qi * (kj if e is None else kj + e)).sum(-1)
    pre = qi + kj if e is None else qi + kj + e
    if kind == "gat":
        return F.leaky_relu(pre, extra["slope"])[..., 0]
    if kind == "gatv2":
        return (F.leaky_relu(pre, extra["slope"]) * extra["att"]).sum(-1)
    return F.cosine_similarity(qi, kj, dim=-1) * extra["tau"].exp()


def reference(
    q, k, v, edge_index, num_dst, kind, extra, *, scale=1.0, bias=None, ef=None, ev=None, pad=None
):
    """Attention over the edge list in plain torch. Returns out ``(B, H, Nd, Dv)`` and the
    weights ``(B, E, H)`` in the edge list's order."""
    b, h = q.shape[:2]
    src, dst = edge_index
    qi = q[:, :, dst].permute(0, 2, 1, 3)  # (B, E, H, D)
    kj = k[:, :, src].permute(0, 2, 1, 3)
    e = None if ef is None else ef.expand(b, -1, -1, -1)
    s = ref_logits(kind, qi, kj, e, extra) * scale  # (B, E, H)
    if bias is not None:
        s = s + bias
    if pad is not None:
        s = s.masked_fill(pad[:, src][:, :, None], -math.inf)
    m = s.new_full((b, num_dst, h), -math.inf)
    m = m.scatter_reduce(1, dst[None, :, None].expand_as(s), s.detach(), "amax")
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    ex = (s - m[:, dst]).exp()
    z = s.new_zeros(b, num_dst, h).index_add(1, dst, ex)
    alpha = ex / torch.where(z > 0, z, torch.ones_like(z))[:, dst]  # (B, E, H)
    vals = v[:, :, src].permute(0, 2, 1, 3)  # (B, E, H, Dv)
    if ev is not None:
        vals = vals + ev
    out = v.new_zeros(b, num_dst, h, v.shape[-1]).index_add(1, dst, alpha[..., None] * vals)
    return out.permute(0, 2, 1, 3), alpha


def make_score(kind: str, h: int, d: int, gen: torch.Generator):
    """A score object, its reference parameters and its (q/k head dim, edge feature dim)."""
    if kind == "dot":
        return scores.DotProduct(), {}, d
    if kind == "gat":
        return scores.GAT(0.15), {"slope": 0.15}, 1
    if kind == "gatv2":
        att = torch.randn(h, d, generator=gen, dtype=F64, requires_grad=True)
        return scores.GATv2(att, 0.3), {"slope": 0.3, "att": att}, d
    tau = torch.tensor(0.4, dtype=F64, requires_grad=True)

    def cosine(qi, kj, e):
        return F.cosine_similarity(qi, kj, dim=-1) * tau.exp()  # (n, H)

    return scores.Custom(cosine, tensors=[tau]), {"tau": tau}, d


def _complete_pyg(n: int) -> Data:
    idx = torch.arange(n)
    return Data(edge_index=torch.stack([idx.repeat(n), idx.repeat_interleave(n)]), num_nodes=n)


GRAPHS = {
    "edges": lambda: Graph.from_edge_index(
        torch.tensor([[0, 0, 2, 4, 1, 3, 1], [1, 1, 2, 0, 0, 1, 2]]), 5
    ),  # a duplicate, a self-loop, targets 3 and 4 without in-edges
    "bipartite": lambda: Graph.from_edge_index(
        torch.tensor([[0, 5, 5, 2, 3, 1], [0, 0, 0, 2, 2, 3]]), num_dst=4, num_src=6
    ),
    "complete": lambda: Graph.complete(4, 5),
    "causal": lambda: Graph.causal(5),
    "window": lambda: Graph.window(6, 1),
    "blocks": lambda: Graph.from_pyg(Batch.from_data_list([_complete_pyg(2), _complete_pyg(3)])),
}


def _inputs(graph: Graph, kind: str, gen, *, b=2, h=2, d=3, dv=4, bias=False, ef=False, ev=False):
    score, extra, dk = make_score(kind, h, d, gen)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64, requires_grad=True)

    e = graph.num_edges
    t = {
        "q": rand(b, h, graph.num_dst, dk),
        "k": rand(b, h, graph.num_src, dk),
        "v": rand(b, h, graph.num_src, dv),
        "bias": rand(b, e, h) if bias else None,
        "ef": rand(1, e, h, 1 if kind == "gat" else dk) if ef else None,
        "ev": rand(1, e, h, dv) if ev else None,
    }
    return score, extra, t


def _leaves(t: dict, extra: dict) -> list[Tensor]:
    out = [x for x in t.values() if x is not None]
    return out + [x for x in extra.values() if isinstance(x, Tensor)]


def _run_both(graph, kind, score, extra, t, backend):
    scale = 1 / math.sqrt(t["q"].shape[-1]) if kind == "dot" else 1.0
    res = graph_attention_with_weights(
        t["q"],
        t["k"],
        t["v"],
        graph,
        score=score,
        attn_bias=t["bias"],
        edge_features=t["ef"],
        edge_values=t["ev"],
        backend=backend,
    )
    out, alpha = reference(
        t["q"],
        t["k"],
        t["v"],
        graph.edge_index(),
        graph.num_dst,
        kind,
        extra,
        scale=scale,
        bias=t["bias"],
        ef=t["ef"],
        ev=t["ev"],
        pad=graph.key_padding_mask,
    )
    return res, out, alpha


def _check_against_reference(graph, kind, backend, gen, **kw):
    score, extra, t = _inputs(graph, kind, gen, **kw)
    served = True
    try:
        res, out, alpha = _run_both(graph, kind, score, extra, t, backend)
    except BackendNotSupportedError as err:
        assert backend in ("dense", "blocks"), err
        served = False
    if not served:
        return None
    torch.testing.assert_close(res.out, out, rtol=0, atol=1e-10)
    torch.testing.assert_close(res.attention.to_edges(), alpha, rtol=0, atol=1e-10)
    assert res.attention.layout == graph.weights_layout
    leaves = _leaves(t, extra)
    grad_out = torch.randn(out.shape, generator=gen, dtype=F64)
    ours = torch.autograd.grad(res.out, leaves, grad_out, allow_unused=True)
    ref = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    for a, b in zip(ours, ref, strict=True):
        if b is None:
            assert a is None or not a.abs().max() > 0
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    return res.backend


# ---------------------------------------------------------------------- every score, backend
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("graph_name", list(GRAPHS))
@pytest.mark.parametrize("kind", KINDS)
def test_score_matches_reference(kind, graph_name, backend, gen):
    ran = _check_against_reference(GRAPHS[graph_name](), kind, backend, gen)
    if backend == "edges":
        assert ran == "edges"  # the edge backend serves every score
    if kind in ("dot", "gat") and backend == "dense":
        assert ran == "dense"  # both have a dense form


@pytest.mark.parametrize("backend", ["dense", "edges"])
@pytest.mark.parametrize("kind", KINDS)
def test_score_with_bias_and_padding(kind, backend, gen):
    for name in ("edges", "causal", "complete"):
        graph = GRAPHS[name]()
        graph = graph.pad(lengths=[graph.num_src - 1, 1])
        _check_against_reference(graph, kind, backend, gen, bias=True)


@pytest.mark.parametrize("kind", KINDS)
def test_score_with_edge_features_and_values(kind, gen):
    for name in ("edges", "bipartite", "window"):
        ran = _check_against_reference(GRAPHS[name](), kind, "auto", gen, ef=True, ev=True)
        assert ran == "edges"  # per-edge features and values run on the edge backend


@pytest.mark.parametrize("kind", KINDS)
def test_chunk_boundaries(kind, gen, monkeypatch):
    """Chunks of 3 edges: targets whose in-edges straddle chunks, on every pass."""
    monkeypatch.setattr(_chunks, "CHUNK_ELEMENTS", 3)
    monkeypatch.setattr(_chunks, "MIN_CHUNK", 3)
    graph = Graph.from_edge_index(random_edge_index(7, 6, 40, gen), 7, 6)
    _check_against_reference(graph, kind, "edges", gen, bias=True, ef=True, ev=True)


# ---------------------------------------------------------------------- property test
@st.composite
def problems(draw):
    nd, ns = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    e = draw(st.integers(0, 30))
    src = draw(st.lists(st.integers(0, ns - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, nd - 1), min_size=e, max_size=e))
    return {
        "graph": Graph.from_edge_index(
            torch.tensor([src, dst], dtype=torch.long).view(2, -1), nd, ns
        ),
        "kind": draw(st.sampled_from(KINDS)),
        "b": draw(st.integers(1, 2)),
        "h": draw(st.integers(1, 3)),
        "d": draw(st.integers(1, 4)),
        "bias": draw(st.booleans()),
        "ef": draw(st.booleans()),
        "lengths": draw(st.none() | st.lists(st.integers(0, ns), min_size=2, max_size=2)),
        "chunk": draw(st.sampled_from([None, 2, 5])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(p=problems())
def test_random_graphs_every_backend(p, monkeypatch):
    gen = torch.Generator().manual_seed(p["seed"])
    graph = p["graph"]
    if p["lengths"] is not None:
        graph = graph.pad(lengths=p["lengths"][: p["b"]])
    with monkeypatch.context() as m:
        if p["chunk"] is not None:
            m.setattr(_chunks, "CHUNK_ELEMENTS", p["chunk"])
            m.setattr(_chunks, "MIN_CHUNK", p["chunk"])
        for backend in ("edges", "dense"):
            _check_against_reference(
                graph,
                p["kind"],
                backend,
                torch.Generator().manual_seed(p["seed"]),
                b=p["b"],
                h=p["h"],
                d=p["d"],
                bias=p["bias"],
                ef=p["ef"] and backend == "edges",
            )
    del gen


# ---------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("backend", ["dense", "edges"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, backend, gen):
    graph = GRAPHS["edges"]().pad(lengths=[3])
    score, extra, t = _inputs(graph, kind, gen, b=1, d=2, dv=2, bias=True, ef=backend == "edges")
    if not score.dense and backend == "dense":
        pytest.skip(f"{kind} has no dense form (tested on the edge backend)")
    names = [n for n, x in t.items() if x is not None]
    params = [x for x in extra.values() if isinstance(x, Tensor)]

    def fn(*args):
        kw = dict(zip(names, args[: len(names)], strict=True))
        sc = score
        if kind == "gatv2":
            sc = scores.GATv2(args[len(names)], 0.3)
        elif kind == "cosine":
            tau = args[len(names)]
            sc = scores.Custom(
                lambda a, b, e: F.cosine_similarity(a, b, dim=-1) * tau.exp(), tensors=[tau]
            )
        return graph_attention(
            kw["q"],
            kw["k"],
            kw["v"],
            graph,
            score=sc,
            attn_bias=kw.get("bias"),
            edge_features=kw.get("ef"),
            backend=backend,
        )

    assert gradcheck(fn, tuple(t[n] for n in names) + tuple(params), eps=1e-6, atol=1e-8)


def test_gradcheck_dense_gat_blockwise_rows(gen, monkeypatch):
    """The blockwise dense kernel with blocks of 2 rows: recomputed backward is exact."""
    from graphattn.backends import _blockwise

    monkeypatch.setattr(_blockwise, "BLOCK_ELEMENTS", 2 * 2 * 6)
    graph = Graph.window(5, 1).pad(lengths=[5, 2])
    score, _, t = _inputs(graph, "gat", gen, d=1, dv=2)
    fn = lambda q, k, v: graph_attention(q, k, v, graph, score=score, backend="dense")  # noqa: E731
    assert gradcheck(fn, (t["q"], t["k"], t["v"]), eps=1e-6, atol=1e-8)


def test_dense_gat_blockwise_equals_explicit(gen):
    """Without weights the dense GAT runs blockwise; with weights, the explicit math."""
    graph = Graph.complete(7)
    score, _, t = _inputs(graph, "gat", gen, d=1)
    a = graph_attention(t["q"], t["k"], t["v"], graph, score=score, backend="dense")
    b = graph_attention_with_weights(
        t["q"], t["k"], t["v"], graph, score=score, backend="dense"
    ).out
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- the user hook
class CosineScore(nn.Module):
    """Cosine-similarity attention with a learned temperature per head (README example)."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.zeros(heads, dtype=F64))

    def forward(self, q_i, k_j, e_ij):  # (n, H, D) each -> (n, H)
        return F.cosine_similarity(q_i, k_j, dim=-1) * self.log_tau.exp()


def test_module_hook_gets_parameter_gradients(gen):
    hook = CosineScore(3)
    with torch.no_grad():
        hook.log_tau.copy_(torch.tensor([0.1, -0.2, 0.5]))
    graph = Graph.from_edge_index(random_edge_index(6, 6, 20, gen), 6)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=gen, dtype=F64) for _ in range(3))
    out = graph_attention(q, k, v, graph, score=hook)  # an nn.Module is wrapped as Custom
    (g_ours,) = torch.autograd.grad(out.pow(2).sum(), hook.log_tau)
    extra = {"tau": hook.log_tau}
    ref, _ = reference(q, k, v, graph.edge_index(), 6, "cosine", extra)
    (g_ref,) = torch.autograd.grad(ref.pow(2).sum(), hook.log_tau)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-10)
    assert gradcheck(
        lambda tau: graph_attention(
            q,
            k,
            v,
            graph,
            score=scores.Custom(
                lambda a, b, e: F.cosine_similarity(a, b, dim=-1) * tau.exp(), tensors=[tau]
            ),
        ),
        (hook.log_tau.detach().clone().requires_grad_(),),
    )


def test_hook_sees_chunks_of_edges_and_heads(gen):
    seen = []

    def l1(qi, kj, e):
        seen.append((tuple(qi.shape), tuple(kj.shape), None if e is None else tuple(e.shape)))
        return -(qi - kj).abs().sum(-1)

    graph = Graph.window(5, 1)
    q = torch.randn(2, 3, 5, 4, generator=gen)
    ef = torch.randn(graph.num_edges, 3, 4, generator=gen)
    graph_attention(q, q, q, graph, score=l1, edge_features=ef)
    n = graph.num_edges * 2  # edges x batch
    assert seen == [((n, 3, 4), (n, 3, 4), (n, 3, 4))]


# ---------------------------------------------------------------------- errors
def test_errors(gen):
    g = Graph.window(5, 1)
    q = torch.randn(2, 5, 3, generator=gen)
    with pytest.raises(ValueError, match=r"GAT score.*head dim 1.*\(1, 2, 5, 3\)"):
        graph_attention(q, q, q, g, score=scores.GAT())
    with pytest.raises(ValueError, match=r"att.*\(2, 4\).*\(H, D\) = \(2, 3\)"):
        graph_attention(q, q, q, g, score=scores.GATv2(torch.zeros(2, 4)))
    with pytest.raises(ValueError, match=r"scale=0.5.*GAT\(negative_slope=0.2\) takes no scale"):
        graph_attention(q[..., :1], q[..., :1], q, g, score=scores.GAT(), scale=0.5)
    with pytest.raises(ValueError, match=r"must return logits of shape \(n, H\) = \(13, 2\)"):
        graph_attention(q, q, q, g, score=lambda a, b, e: a.sum(-1, keepdim=True))
    with pytest.raises(ValueError, match=r"edge_features.*De=1.*got \(13, 2, 3\)"):
        graph_attention(
            q[..., :1], q[..., :1], q, g, score=scores.GAT(), edge_features=torch.zeros(13, 2, 3)
        )
    with pytest.raises(TypeError, match=r"score must be"):
        graph_attention(q, q, q, g, score="gat")
    with pytest.raises(ValueError, match=r"negative_slope.*nan"):
        scores.GAT(float("nan"))
    with pytest.raises(BackendNotSupportedError, match=r"GATv2.*has no dense form"):
        graph_attention(q, q, q, g, score=scores.GATv2(torch.zeros(2, 3)), backend="dense")


def test_scores_describe_themselves():
    assert repr(scores.GAT(0.1)) == "GAT(negative_slope=0.1)"
    assert "heads=2, head_dim=3" in repr(scores.GATv2(torch.zeros(1, 2, 3)))
    assert scores.DotProduct().sdpa and scores.DotProduct().dense
    assert scores.GAT().dense and not scores.GAT().sdpa
    assert not scores.GATv2(torch.zeros(2, 3)).dense
    assert isinstance(scores.as_score(None), scores.DotProduct)
    assert isinstance(scores.as_score(lambda a, b, e: a.sum(-1)), scores.Custom)


def test_graph_attention_module_takes_a_score(gen):
    """A score module inside GraphAttention trains with it (its parameters are registered)."""
    from graphattn import GraphAttention

    hook = CosineScore(2).float()
    attn = GraphAttention(8, 2, score=hook)
    assert "score.log_tau" in dict(attn.named_parameters())
    x = torch.randn(6, 8, generator=gen)
    out = attn(x, Graph.window(6, 1))
    out.sum().backward()
    assert hook.log_tau.grad is not None and hook.log_tau.grad.abs().sum() > 0
    v2 = GraphAttention(8, 2, score=scores.GATv2(torch.randn(2, 4)))
    assert "score=GATv2" in repr(v2)
    assert v2(x, Graph.window(6, 1)).shape == (6, 8)
