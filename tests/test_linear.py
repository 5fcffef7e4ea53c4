"""Kernel scores (graphattn.kernels) and the linear backend: PyG's SGFormer numbers, FAVOR+
agreeing with the edge backend on the same kernel and approaching exact softmax attention,
padding, batches, bipartite graphs, refusals and feature redraw."""

from __future__ import annotations

import math

import pytest
import torch

import graphattn
from graphattn import (
    Graph,
    GraphAttention,
    SGFormerAttention,
    graph_attention,
    graph_attention_with_weights,
)
from graphattn.backends import BackendNotSupportedError
from graphattn.kernels import FAVOR, SGFormer


def _qkv(gen, b=2, h=3, nd=7, ns=7, d=4, dv=5, dtype=torch.float64, sd=1.0):
    q = torch.randn(b, h, nd, d, generator=gen, dtype=dtype) * sd
    k = torch.randn(b, h, ns, d, generator=gen, dtype=dtype) * sd
    v = torch.randn(b, h, ns, dv, generator=gen, dtype=dtype)
    return q, k, v


def _sgformer_reference(q, k, v, real):
    """PyG's formula, written out per sample over its real nodes only."""
    out = torch.zeros_like(v)
    for b in range(q.shape[0]):
        idx = real[b].nonzero().flatten()
        qs, ks, vs = q[b][:, idx], k[b][:, idx], v[b][:, idx]  # (H, n, D)
        qs = torch.where(qs == 0, 1e-6, qs)
        ks = torch.where(ks == 0, 1e-6, ks)
        qs, ks = qs / qs.norm(dim=-1, keepdim=True), ks / ks.norm(dim=-1, keepdim=True)
        n = len(idx)
        w = qs @ ks.transpose(-2, -1) + n * torch.eye(n, dtype=q.dtype)  # (H, n, n)
        out[b][:, idx] = (w @ vs) / w.sum(-1, keepdim=True)
    return out


# ---------------------------------------------------------------------- SGFormer


def test_from_pyg_sgformer_gives_pygs_outputs_and_gradients():
    pyg_sgformer = pytest.importorskip("torch_geometric.nn.attention").SGFormerAttention
    torch.manual_seed(0)
    pyg = pyg_sgformer(16, heads=4, head_channels=8, qkv_bias=True)
    ours = graphattn.from_pyg(pyg)
    assert isinstance(ours, SGFormerAttention)
    x = torch.randn(3, 20, 16, requires_grad=True)
    out, ref = ours(x), pyg(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    g_out = torch.autograd.grad(out.square().sum(), [x, *ours.parameters()])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *pyg.parameters()])
    for a, b in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_sgformer_matches_its_formula_over_real_nodes(padded, gen):
    q, k, v = _qkv(gen)
    real = torch.ones(2, 7, dtype=torch.bool)
    graph = Graph.complete(7)
    if padded:
        real[1, 4:] = False
        graph = graph.pad(key_padding_mask=~real)
        k[1, :, 4:] = math.nan  # padded keys and values never send
        v[1, :, 4:] = math.inf
    out = graph_attention(q, k, v, graph, score=SGFormer())
    ref = _sgformer_reference(q, k, v, real)
    torch.testing.assert_close(
        out[real[:, None, :].expand(-1, 3, -1)], ref[real[:, None, :].expand(-1, 3, -1)]
    )


def test_sgformer_is_served_by_the_linear_backend_only(gen):
    q, k, v = _qkv(gen)
    assert graph_attention(q, k, v, None, score=SGFormer(), need_weights=False).shape == v.shape
    with pytest.raises(BackendNotSupportedError, match="not a softmax of logits"):
        graph_attention(q, k, v, None, score=SGFormer(), backend="edges")
    with pytest.raises(BackendNotSupportedError, match="linear: the graph is not complete"):
        graph_attention(q, k, v, Graph.window(7, 1), score=SGFormer())
    with pytest.raises(ValueError, match="self-attention"):
        graph_attention(q, k[:, :, :5], v[:, :, :5], None, score=SGFormer())


def test_a_fully_padded_sample_gives_zeros_not_nan(gen):
    q, k, v = _qkv(gen)
    graph = Graph.complete(7).pad(lengths=[7, 0])
    for score in (SGFormer(), FAVOR(32, 4)):
        out = graph_attention(q, k, v, graph, score=score)
        assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros_like(out[1]))


# ---------------------------------------------------------------------- FAVOR+


@pytest.mark.parametrize("shape", [(7, 7), (5, 9)], ids=["self", "bipartite"])
@pytest.mark.parametrize("padded", [False, True])
def test_favor_linear_backend_equals_the_edge_backend_on_the_same_kernel(shape, padded, gen):
    nd, ns = shape
    q, k, v = _qkv(gen, nd=nd, ns=ns)
    for t in (q, k, v):
        t.requires_grad_(True)
    graph = Graph.complete(nd, ns)
    if padded:
        graph = graph.pad(lengths=[ns, ns - 3])
    score = FAVOR(64, 4, generator=torch.Generator().manual_seed(0))
    lin = graph_attention(q, k, v, graph, score=score, backend="linear")
    edge = graph_attention(q, k, v, graph, score=score, backend="edges")
    torch.testing.assert_close(lin, edge, rtol=1e-9, atol=1e-9)
    g_lin = torch.autograd.grad(lin.square().sum(), (q, k, v))
    g_edge = torch.autograd.grad(edge.square().sum(), (q, k, v))
    for a, b in zip(g_lin, g_edge, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_favor_gradcheck(gen):
    q, k, v = _qkv(gen, b=1, h=2, nd=4, ns=5, d=3, dv=2)
    score = FAVOR(8, 3, generator=torch.Generator().manual_seed(0))
    graph = Graph.complete(4, 5).pad(lengths=[4])
    ins = tuple(t.requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(
        lambda a, b, c: graph_attention(a, b, c, graph, score=score, backend="linear"), ins
    )


def test_favor_error_shrinks_with_more_features(gen):
    """Relative error against exact softmax attention, mean of three feature draws."""
    q, k, v = _qkv(gen, b=1, h=4, nd=256, ns=256, d=16, dv=16, dtype=torch.float32, sd=0.25)
    exact = graph_attention(q, k, v, None)

    def error(f: int) -> float:
        errs = []
        for seed in range(3):
            score = FAVOR(f, 16, generator=torch.Generator().manual_seed(seed))
            out = graph_attention(q, k, v, None, score=score)
            errs.append(float((out - exact).norm() / exact.norm()))
        return sum(errs) / len(errs)

    e16, e256, e4096 = error(16), error(256), error(4096)
    assert e4096 < e256 < e16
    assert e4096 < 0.05


def test_favor_redraws_every_n_training_calls_only(gen):
    q, k, v = _qkv(gen, d=4)
    score = FAVOR(16, 4, redraw_every=2, generator=torch.Generator().manual_seed(0))
    first = score.projection.clone()
    with torch.no_grad():
        for _ in range(3):
            graph_attention(q, k, v, None, score=score)
    assert torch.equal(score.projection, first)  # evaluation keeps the features
    graph_attention(q, k, v, None, score=score)
    assert torch.equal(score.projection, first)
    graph_attention(q, k, v, None, score=score)
    assert not torch.equal(score.projection, first)  # redrawn after two training calls
    score.redraw()


def test_favor_checks_its_arguments():
    with pytest.raises(ValueError, match="num_features must be a positive int, got 0"):
        FAVOR(0, 4)
    with pytest.raises(ValueError, match="redraw_every.*-1"):
        FAVOR(8, 4, redraw_every=-1)
    with pytest.raises(ValueError, match="scale must be a finite positive number"):
        FAVOR(8, 4, scale=math.inf)
    with pytest.raises(ValueError, match="head dim 5 but FAVOR was built for head_dim=4"):
        graph_attention(*(torch.randn(1, 3, 5) for _ in range(3)), None, score=FAVOR(8, 4))


# ---------------------------------------------------------------------- dispatch, modules


def test_linear_backend_refuses_what_it_cannot_serve(gen):
    q, k, v = _qkv(gen)
    score = FAVOR(16, 4)
    cases = [
        ({"attn_bias": torch.zeros(1, 1, 7, 7, dtype=q.dtype)}, "biases and per-edge inputs"),
        ({"dropout_p": 0.1}, "dropout on the weights needs them"),
    ]
    for kwargs, reason in cases:
        with pytest.raises(BackendNotSupportedError, match=reason):
            graph_attention(q, k, v, None, score=score, backend="linear", **kwargs)
    with pytest.raises(BackendNotSupportedError, match="never forms the Nd x Ns weights"):
        graph_attention_with_weights(q, k, v, None, score=score, backend="linear")
    with pytest.raises(BackendNotSupportedError, match="not a kernel score"):
        graph_attention(q, k, v, None, backend="linear")
    # auto: the linear backend on complete graphs, the edge backend elsewhere
    assert graph_attention_with_weights(q, k, v, None, score=score).backend == "edges"
    assert graph_attention_with_weights(q, k, v, Graph.window(7, 2), score=score).backend == (
        "edges"
    )


def test_graph_attention_module_with_a_kernel_score_runs_linear(gen):
    torch.manual_seed(0)
    ga = GraphAttention(16, 4, score=FAVOR(32, 4))
    x = torch.randn(2, 9, 16)
    assert ga(x).shape == (2, 9, 16)
    res = ga.forward_with_weights(x)  # weights: the edge backend, on the same kernel
    assert res.backend == "edges"
    torch.testing.assert_close(res.out, ga(x), rtol=1e-5, atol=1e-6)


def test_memory_is_linear_in_the_number_of_nodes():
    """N = 50,000 self-attention: an N x N matrix would be 10 GB per head; this runs."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 50_000, 8, generator=gen) for _ in range(3))
    for score in (SGFormer(), FAVOR(32, 8)):
        out = graph_attention(q, k, v, None, score=score)
        assert out.shape == v.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------------- layers


@pytest.mark.parametrize("global_score", [None, "favor", "sgformer"])
def test_local_global_layer_is_the_sum_of_its_branches(global_score):
    torch.manual_seed(0)
    score = {None: None, "favor": FAVOR(16, 4), "sgformer": SGFormer()}[global_score]
    layer = graphattn.LocalGlobalLayer(16, 4, global_score=score, dim_feedforward=32).eval()
    x = torch.randn(2, 9, 16)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 0]])
    h = layer.norm1(x)
    mid = x + layer.local_attn(h, ei) + layer.global_attn(h)
    ref = mid + layer.linear2(layer.activation(layer.linear1(layer.norm2(mid))))
    torch.testing.assert_close(layer(x, ei), ref)
    kpm = torch.zeros(2, 9, dtype=torch.bool)
    kpm[1, 6:] = True
    poisoned = x.clone()
    poisoned[1, 6:] = math.nan  # padded nodes send nothing in either branch
    out = layer(poisoned, ei, key_padding_mask=kpm)
    clean = layer(x, ei, key_padding_mask=kpm)
    torch.testing.assert_close(out[~kpm], clean[~kpm])


def test_graph_transformer_takes_a_score_and_backend_per_layer():
    torch.manual_seed(0)
    ei = torch.randint(0, 30, (2, 120), generator=torch.Generator().manual_seed(0))
    scores = [None, None, FAVOR(16, 4)]
    model = graphattn.GraphTransformer(
        3, 16, 4, dim_feedforward=32, score=scores, backend=["edges", "auto", "linear"]
    ).eval()
    x = torch.randn(30, 16)
    out = model(x, [ei, ei, None])
    ref = x
    for layer, g in zip(model.layers, [ei, ei, None], strict=True):
        ref = layer(ref, g)
    torch.testing.assert_close(out, model.norm(ref))
    assert model.layers[2].self_attn.backend == "linear"
    with pytest.raises(ValueError, match="score is a list of 2 entries.*num_layers=3"):
        graphattn.GraphTransformer(3, 16, 4, score=[None, None])
