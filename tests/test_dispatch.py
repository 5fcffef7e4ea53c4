"""Dispatch: backends declare what they serve, ``auto`` follows the policy's order, a refusal
lists every backend's reasons with the call, graph kinds declare capabilities, and a new
backend or graph kind plugs in without touching the others."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import edge_backend
from torch import Tensor

from graphattn import (
    AutoPolicy,
    BackendNotSupportedError,
    Graph,
    auto_policy,
    backends,
    choose_backend,
    graph_attention,
    graph_attention_with_weights,
    scores,
)
from graphattn.backends import AttentionCall, Backend, BackendResult, EdgesBackend
from graphattn.graph import EdgeListGraph


def _qkv(b, h, nd, ns, d, gen):
    return (torch.randn(b, h, n, d, generator=gen) for n in (nd, ns, ns))


def test_refusal_lists_every_backend_and_the_call(gen):
    q, k, v = _qkv(2, 3, 5, 5, 4, gen)
    g = Graph.window(5, 1)
    ev = torch.randn(g.num_edges, 3, 4, generator=gen)
    with pytest.raises(BackendNotSupportedError) as err:
        graph_attention(q, k, v, g, edge_values=ev, backend="blocks")
    msg = str(err.value)
    assert msg.startswith("backend 'blocks' cannot serve this call: per-edge values")
    assert "reasons of every backend:" in msg
    assert re.search(r"^  dense: per-edge values", msg, re.M)
    assert re.search(r"^  blocks: .*not a disjoint union of complete graphs", msg, re.M)
    assert re.search(r"^  edges: can serve$", msg, re.M)
    assert "q (2, 3, 5, 4), k (2, 3, 5, 4), v (2, 3, 5, 4) (torch.float32, cpu)" in msg
    assert "graph window: WindowGraph(num_dst=5, num_src=5, num_edges=13, padded=False)" in msg
    assert "score DotProduct()" in msg and "edge_values (1, 13, 3, 4)" in msg


def test_forced_dense_checks_the_mask_size(gen):
    """A graph of 10^7 nodes and 10 edges: the dense backend refuses before allocating."""
    n = 10**7
    g = Graph.from_edge_index(torch.randint(0, n, (2, 10), generator=gen), n)
    q = torch.randn(1, 1, 1, 2).expand(1, 1, n, 2)  # no memory behind the expansion
    with pytest.raises(BackendNotSupportedError, match=r"mask \(1e\+14|mask \(100000000000000"):
        graph_attention(q, q, q, g, backend="dense")
    assert choose_backend(g) in ("fused", "edges")  # an edge list, never the dense mask


@pytest.mark.parametrize(
    ("graph", "layout", "mask_free", "causal"),
    [
        (Graph.complete(3), "dense", True, False),
        (Graph.causal(3), "dense", True, True),
        (Graph.window(3, 1), "edges", False, False),
        (Graph.grid(2, 2), "edges", False, False),
        (Graph.from_edge_index(torch.tensor([[0], [1]]), 2), "edges", False, False),
    ],
)
def test_graph_capabilities(graph, layout, mask_free, causal):
    assert graph.weights_layout == layout
    assert graph.mask_free is mask_free and graph.is_causal is causal


class ReversedChain(Graph):
    """A graph kind defined outside graphattn: target i attends to sources i..N-1."""

    kind = "reversed_chain"

    def __init__(self, n: int) -> None:
        super().__init__(n, n)

    @property
    def num_edges(self) -> int:
        return self.num_dst * (self.num_dst + 1) // 2

    def _build_mask(self) -> Tensor:
        return torch.ones(self.num_dst, self.num_src, dtype=torch.bool).triu()


@pytest.mark.parametrize("score", [None, scores.GAT()])
def test_new_graph_kind_gets_the_same_weights_from_every_backend(score, gen):
    g = ReversedChain(5)
    d = 1 if score is not None else 3
    q, k, v = _qkv(2, 2, 5, 5, d, gen)
    v = torch.randn(2, 2, 5, 3, generator=gen)
    outs = {}
    for backend in ("dense", "edges"):
        res = graph_attention_with_weights(q, k, v, g, score=score, backend=backend)
        assert res.attention.layout == "edges" == g.weights_layout
        assert res.attention.values.shape == (2, g.num_edges, 2)
        outs[backend] = res
    torch.testing.assert_close(outs["dense"].out, outs["edges"].out)
    torch.testing.assert_close(outs["dense"].attention.values, outs["edges"].attention.values)


class CountingBackend(Backend):
    """Serves window graphs only, by delegating to the edge backend, and counts its calls."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def reasons(self, call: AttentionCall) -> list[str]:
        return [] if call.graph.kind == "window" else [f"only window graphs, not {call.graph.kind}"]

    def run(self, call: AttentionCall) -> BackendResult:
        self.calls += 1
        return EdgesBackend().run(call)


def test_register_a_backend(gen, monkeypatch):
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    counting = backends.register_backend(CountingBackend())
    assert backends.backend_names()[-1] == "counting"
    q, k, v = _qkv(1, 2, 6, 6, 3, gen)
    g = Graph.window(6, 1)
    ref = graph_attention(q, k, v, g, backend="edges")
    torch.testing.assert_close(graph_attention(q, k, v, g, backend="counting"), ref)
    assert counting.calls == 1
    with pytest.raises(BackendNotSupportedError, match=r"counting: only window graphs, not causal"):
        graph_attention(q, k, v, Graph.causal(6), backend="counting")
    # auto: the policy's order first, registered backends after
    policy_order = auto_policy.order(g, 3)
    assert policy_order[-1] == "counting" and policy_order[0] in ("dense", "edges")
    with pytest.raises(TypeError, match="Backend"):
        backends.register_backend(object())


def test_unknown_backend_name(gen):
    q, k, v = _qkv(1, 1, 2, 2, 2, gen)
    with pytest.raises(ValueError, match=r"backend must be 'auto' or one of \('dense', 'blocks'"):
        graph_attention(q, k, v, backend="flash")


def test_auto_order_follows_the_policy():
    policy = AutoPolicy()
    sparse = Graph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 64)
    assert policy.order(sparse, 64)[:3] == ["fused", "edges", "dense"]  # the kernel first
    pure = AutoPolicy(fused_min_work=10**12)
    assert pure.order(sparse, 64)[:2] == ["edges", "dense"]
    dense = Graph.window(64, 20)
    assert policy.order(dense, 64)[:3] == ["dense", "fused", "edges"]
    assert pure.order(dense, 64)[:2] == ["dense", "edges"]
    assert policy.order(Graph.causal(8), 64)[0] == "dense"
    blocks = EdgeListGraph(torch.tensor([[0, 1, 0, 1, 2], [0, 0, 1, 1, 2]]), 3)
    assert policy.order(blocks, 8)[0] == "blocks"
    assert choose_backend(blocks) == "blocks"
    tight = AutoPolicy(max_mask_elements=10)
    assert choose_backend(dense, policy=tight) == edge_backend()


def test_auto_sends_scores_without_dense_form_to_edges(gen):
    q, k, v = _qkv(1, 2, 6, 6, 3, gen)
    res = graph_attention_with_weights(
        q, k, v, Graph.complete(6), score=scores.GATv2(torch.randn(2, 3))
    )
    assert res.backend == "edges" and res.attention.layout == "dense"
