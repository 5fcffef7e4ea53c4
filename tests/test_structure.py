"""attention_to_graph (top-k, mass, ties, duplicates, batches) against brute force, the pruned
graph driving an edge-backend layer, and LearnedStructureBias (gradients, penalty, report)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import dense_reference, edge_counts, random_edge_index

from graphattn import Graph, GraphAttention, GraphTransformer
from graphattn.structure import LearnedStructureBias, attention_to_graph

C, H, N = 16, 4, 9


def _softmax_weights(gen, *shape):
    return torch.softmax(torch.randn(*shape, generator=gen) * 2, dim=-1)


def _kept_sets(wg, num_dst):
    src, dst = wg.edge_index
    return [set(src[dst == i].tolist()) for i in range(num_dst)]


# ---------------------------------------------------------------------- top-k


@pytest.mark.parametrize("k", [1, 3, N, N + 4])
@pytest.mark.parametrize("reduce_heads", ["mean", "max"])
def test_top_k_keeps_exactly_k_best(k, reduce_heads, gen):
    w = _softmax_weights(gen, 2, H, N, N)  # (B, H, N, N)
    wg = attention_to_graph(w, top_k=k, reduce_heads=reduce_heads)
    assert torch.equal(wg.graph.in_degree(), torch.full((N,), min(k, N)))
    score = w.mean(0).mean(0) if reduce_heads == "mean" else w.mean(0).amax(0)  # (N, N)
    for i, kept in enumerate(_kept_sets(wg, N)):
        dropped = set(range(N)) - kept
        if dropped:
            assert min(score[i, list(kept)]) >= max(score[i, list(dropped)])
    # returned weights are the scores and the per-head (batch-mean) weights of the kept edges
    src, dst = wg.edge_index
    torch.testing.assert_close(wg.weights, score[dst, src])
    torch.testing.assert_close(wg.head_weights, w.mean(0)[:, dst, src].t())
    assert wg.graph.num_dst == wg.graph.num_src == N


def test_top_k_ties_prefer_smaller_source_and_are_deterministic():
    w = torch.full((4, 6), 1 / 6)
    w[2] = torch.tensor([0.1, 0.3, 0.1, 0.3, 0.1, 0.1])
    wg = attention_to_graph(w, top_k=2)
    assert _kept_sets(wg, 4) == [{0, 1}, {0, 1}, {1, 3}, {0, 1}]
    again = attention_to_graph(w.clone(), top_k=2)
    assert torch.equal(wg.edge_index, again.edge_index)


def test_top_k_on_sparse_graph_with_duplicates_and_zero_weight_edges(gen):
    ei = random_edge_index(7, 7, 40, gen)  # duplicates likely
    attn = GraphAttention(C, H, backend="edges")
    x = torch.randn(2, 7, C, generator=gen)
    res = attn.forward_with_weights(x, Graph.from_edge_index(ei, 7, 7))
    counts = edge_counts(ei, 7, 7)
    for k in (1, 2, 100):
        wg = attention_to_graph(res.attention, top_k=k)
        assert torch.equal(wg.graph.in_degree(), (counts > 0).sum(1).clamp_max(k))
        assert not wg.graph.has_duplicates()
    # merged duplicates carry the summed weight: same as the dense view of the weights
    wg = attention_to_graph(res.attention, top_k=100)
    dense = res.attention.to_dense().mean(0)  # (H, Nd, Ns)
    src, dst = wg.edge_index
    torch.testing.assert_close(wg.head_weights, dense[:, dst, src].t())


def test_padded_sources_are_never_kept(gen):
    attn = GraphAttention(C, H, backend="dense")
    x = torch.randn(2, 6, C, generator=gen)
    kpm = torch.tensor([[False] * 4 + [True] * 2] * 2)  # node 4, 5 padded in every sample
    res = attn.forward_with_weights(x, key_padding_mask=kpm)
    wg = attention_to_graph(res.attention, top_k=6)
    assert torch.equal(wg.graph.in_degree(), torch.full((6,), 4))
    assert int(wg.edge_index[0].max()) == 3


# ---------------------------------------------------------------------- mass


def _minimal_set(row, mass):
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    kept, total = [], 0.0
    for j in order:
        if row[j] <= 0 or total >= mass * sum(row):
            break
        kept.append(j)
        total += row[j]
    return set(kept)


@pytest.mark.parametrize("mass", [0.1, 0.5, 0.9, 1.0])
def test_mass_keeps_the_minimal_set(mass, gen):
    w = _softmax_weights(gen, H, N, N).double()  # (H, N, N), distinct values
    wg = attention_to_graph(w, mass=mass)
    score = w.mean(0)
    for i, kept in enumerate(_kept_sets(wg, N)):
        assert kept == _minimal_set(score[i].tolist(), mass)
        kept_mass, total = float(score[i, list(kept)].sum()), float(score[i].sum())
        assert kept_mass >= mass * total
        # minimal: dropping the weakest kept edge falls below the mass
        assert kept_mass - float(score[i, list(kept)].min()) < mass * total


def test_mass_and_top_k_together():
    w = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.9, 0.05, 0.03, 0.02]])
    wg = attention_to_graph(w, top_k=2, mass=0.8)
    assert _kept_sets(wg, 2) == [{0, 1}, {0}]


def test_rejects_bad_arguments():
    w = torch.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match="top_k, mass"):
        attention_to_graph(w)
    with pytest.raises(ValueError, match="top_k"):
        attention_to_graph(w, top_k=0)
    with pytest.raises(ValueError, match="mass"):
        attention_to_graph(w, mass=1.5)
    with pytest.raises(ValueError, match="reduce_heads"):
        attention_to_graph(w, top_k=1, reduce_heads="median")
    with pytest.raises(ValueError, match="dense"):
        attention_to_graph(torch.ones(5), top_k=1)


# ---------------------------------------------------------------------- pruned graph in a layer


def test_unpruned_graph_on_edge_backend_matches_dense_layer(gen):
    x = torch.randn(3, N, C, generator=gen)
    dense = GraphAttention(C, H, backend="dense")
    res = dense.forward_with_weights(x)
    wg = attention_to_graph(res.attention, top_k=N)
    assert wg.graph.num_edges == N * N
    sparse = GraphAttention(C, H, backend="edges")
    sparse.load_state_dict(dense.state_dict())
    torch.testing.assert_close(sparse(x, wg.graph), res.out, rtol=0, atol=1e-5)


def test_pruned_graph_drives_a_sparse_layer(gen):
    """A dense layer's top-3 graph run by the edge backend equals attention written out in
    plain torch with that graph as mask."""
    x = torch.randn(2, N, C, generator=gen)
    dense = GraphAttention(C, H, backend="dense")
    wg = attention_to_graph(dense.forward_with_weights(x).attention, top_k=3)
    sparse = GraphAttention(C, H, backend="edges")
    out = sparse(x, wg.graph)
    q, k, v = sparse._project(x, None)
    split = lambda t: t.view(2, N, H, C // H).transpose(1, 2)  # noqa: E731
    mask = edge_counts(wg.edge_index, N, N)
    ref = dense_reference(split(q), split(k), split(v), mask)  # (B, H, N, Dh)
    ref = sparse.out_proj(ref.transpose(1, 2).reshape(2, N, C))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_log_bias_reproduces_kept_weights_without_content_scores(backend, gen):
    w = _softmax_weights(gen, H, N, N)
    wg = attention_to_graph(w, top_k=4)
    attn = GraphAttention(C, H, backend=backend)
    with torch.no_grad():
        attn.in_proj_weight[:C] = 0  # queries 0: scores are the bias alone
    x = torch.randn(1, N, C, generator=gen)
    res = attn.forward_with_weights(x, wg.graph, attn_bias=wg.log_bias())
    got = res.attention.to_dense()[0]  # (H, N, N)
    expect = torch.zeros(H, N, N)
    src, dst = wg.edge_index
    expect[:, dst, src] = wg.head_weights.t()
    expect = expect / expect.sum(-1, keepdim=True)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- LearnedStructureBias


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_learned_bias_gets_gradients(rank, backend, gen):
    torch.manual_seed(0)
    lsb = LearnedStructureBias(N, H, rank=rank)
    attn = GraphAttention(C, H, backend=backend)
    x = torch.randn(2, N, C, generator=gen)
    y = attn(x, attn_bias=lsb())
    loss = y.square().mean() + 0.1 * lsb.sparsity_penalty()
    loss.backward()
    params = dict(lsb.named_parameters())
    assert set(params) == ({"logits"} if rank is None else {"u", "v"})
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_dense_bias_and_edge_bias_agree(gen):
    lsb = LearnedStructureBias(N, H, rank=3)
    attn = GraphAttention(C, H, backend="edges")
    x = torch.randn(2, N, C, generator=gen)
    g = Graph.from_edge_index(Graph.complete(N).edge_index())
    torch.testing.assert_close(
        attn(x, g, attn_bias=lsb.edge_bias(g)), attn(x, attn_bias=lsb()), rtol=0, atol=1e-5
    )


def test_sparsity_penalty_is_entropy_and_differentiable(gen):
    lsb = LearnedStructureBias(N, H)  # init 0: uniform
    assert lsb.sparsity_penalty().item() == pytest.approx(1.0)
    with torch.no_grad():
        lsb.logits.normal_(generator=gen)
    p = lsb.probabilities()
    entropy = -(p * p.log()).sum(-1).mean() / math.log(N)
    torch.testing.assert_close(lsb.sparsity_penalty(), entropy)
    opt = torch.optim.Adam(lsb.parameters(), lr=0.3)
    first = lsb.sparsity_penalty().item()
    for _ in range(20):
        opt.zero_grad()
        lsb.sparsity_penalty().backward()
        opt.step()
    assert lsb.sparsity_penalty().item() < 0.5 * first


def test_learned_graph_reports_the_prior():
    window = Graph.window(N, 1).materialize()
    prior = torch.where(window, 0.0, -6.0)  # (N, N)
    lsb = LearnedStructureBias(N, H, init=prior)
    wg = lsb.learned_graph(mass=0.9)
    assert torch.equal(wg.graph.materialize(), window)
    assert torch.equal(lsb.learned_graph(top_k=2).graph.in_degree(), torch.full((N,), 2))
    low = LearnedStructureBias(N, H, rank=1, init=prior)  # prior kept as a fixed buffer
    assert "prior" in low.state_dict() and "prior" not in lsb.state_dict()
    assert low.structure_logits().shape == (H, N, N)


def test_learned_bias_cross_attention_and_repr():
    lsb = LearnedStructureBias(3, 2, num_src=5, rank=2)
    assert lsb().shape == (1, 2, 3, 5)
    attn = GraphAttention(8, 2)
    y = attn(torch.randn(1, 3, 8), x_src=torch.randn(1, 5, 8), attn_bias=lsb())
    assert y.shape == (1, 3, 8)
    assert "num_src=5" in repr(lsb) and "rank=2" in repr(lsb)
    lsb.reset_parameters()
    with pytest.raises(ValueError, match="init"):
        LearnedStructureBias(3, 2, init=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="rank"):
        LearnedStructureBias(3, 2, rank=0)


# ---------------------------------------------------------------------- with GraphTransformer


def test_transformer_dense_layer_graph_drives_the_next_layer(gen):
    """Layer 0 runs dense; its attention, pruned, is layer 1's graph (edge backend). With
    nothing pruned the output is unchanged."""
    torch.manual_seed(0)
    model = GraphTransformer(2, C, H, dim_feedforward=32, dropout=0.0)
    x = torch.randn(2, N, C, generator=gen)
    ref = model.forward_with_weights(x)
    model.layers[1].self_attn.backend = "edges"
    full = attention_to_graph(ref.attentions[0], top_k=N)
    torch.testing.assert_close(model(x, [None, full.graph]), ref.out, rtol=0, atol=1e-5)
    pruned = attention_to_graph(ref.attentions[0], top_k=2)
    res = model.forward_with_weights(x, [None, pruned.graph])
    assert res.attentions[1].layout == "edges" and res.attentions[1].values.shape[1] == 2 * N
    assert torch.isfinite(res.out).all()


def test_learned_bias_in_transformer_gets_gradients(gen):
    model = GraphTransformer(2, C, H, dim_feedforward=32, dropout=0.0)
    lsb = LearnedStructureBias(N, H, rank=2)
    out = model(torch.randn(2, N, C, generator=gen), attn_bias=[lsb(), None])
    (out.square().mean() + lsb.sparsity_penalty()).backward()
    assert lsb.u.grad.abs().sum() > 0 and lsb.v.grad.abs().sum() > 0
