"""Explanations: rollout (identity, row sums, a hand-computed example, the vit-explain
formula), gradient x attention (against plain-torch gradients and Chefer et al.'s DETR
relevance rules; a model where one token decides the output), head statistics, the
perturbation check and modality summaries, on dense and per-edge weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphattn import AttentionWeights, Graph, GraphAttention, GraphTransformer
from graphattn.explain import (
    attention_rollout,
    force_dense_backend,
    grad_attention,
    grad_attention_by_role,
    head_statistics,
    perturbation_check,
    summarize_by_modality,
)

C, H, N = 8, 2, 6


class Stack(nn.Module):
    """Residual attention layers: ``x = x + attn(x)``; returns the output and every layer's
    attention."""

    def __init__(self, *layers: GraphAttention):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, graph=None, key_padding_mask=None):
        attentions = []
        for layer in self.layers:
            res = layer.forward_with_weights(x, graph, key_padding_mask=key_padding_mask)
            x = x + res.out
            attentions.append(res.attention)
        return x, attentions


def _random_layer(seed, embed=C, heads=H, scale=1.0, backend="auto"):
    torch.manual_seed(seed)
    layer = GraphAttention(embed, heads, backend=backend)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(scale)
        layer.in_proj_bias.normal_(0, 0.1 * scale)
    return layer


def _pointer_layer(strength=20.0):
    """One head over features ``[one, flag, content, spare]``: every target attends to the
    flagged node (score ``strength / 2 * flag``); values and output are the identity."""
    attn = GraphAttention(4, 1, bias=False, backend="dense")
    with torch.no_grad():
        w = torch.zeros(12, 4)
        w[0, 0] = strength  # q[0] = strength * one
        w[4, 1] = 1.0  # k[0] = flag
        w[8:] = torch.eye(4)  # v = x
        attn.in_proj_weight.copy_(w)
        attn.out_proj.weight.copy_(torch.eye(4))
    return attn


def _flagged_inputs(b, n, gen):
    """Node 0 is a CLS node (no content); node ``flag[b]`` carries the flag."""
    x = torch.zeros(b, n, 4)
    x[..., 0] = 1.0
    x[:, 1:, 2] = 0.5 + 0.5 * torch.rand(b, n - 1, generator=gen)
    flag = 1 + torch.arange(b) % (n - 1)
    x[torch.arange(b), flag, 1] = 1.0
    return x, flag


# ---------------------------------------------------------------------- rollout


def test_rollout_of_identity_is_identity():
    eye = torch.eye(N).expand(2, H, N, N)  # (B, H, N, N)
    for residual in (True, False):
        torch.testing.assert_close(attention_rollout([eye, eye, eye], residual=residual), eye[:, 0])
    g = Graph.from_edge_index(torch.arange(N).repeat(2, 1))  # self-loops only
    per_edge = AttentionWeights(torch.ones(N, H), g, "edges", batched=False)
    torch.testing.assert_close(attention_rollout([per_edge] * 2), torch.eye(N))


@pytest.mark.parametrize("head_reduce", ["mean", "max", "min"])
@pytest.mark.parametrize("residual", [True, False])
def test_rollout_rows_sum_to_one(head_reduce, residual, gen):
    layers = [torch.softmax(torch.randn(3, H, N, N, generator=gen), -1) for _ in range(4)]
    r = attention_rollout(layers, residual=residual, head_reduce=head_reduce)
    assert r.shape == (3, N, N) and bool((r >= 0).all())
    torch.testing.assert_close(r.sum(-1), torch.ones(3, N))


def test_rollout_hand_computed_two_layers():
    a1 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    a2 = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    # A_hat1 = [[1, 0], [.25, .75]], A_hat2 = [[.75, .25], [0, 1]], R = A_hat2 @ A_hat1
    expect = torch.tensor([[0.8125, 0.1875], [0.25, 0.75]])
    torch.testing.assert_close(attention_rollout([a1, a2]), expect)
    torch.testing.assert_close(attention_rollout([a1, a2], residual=False), a2 @ a1)


def test_rollout_matches_vit_explain_formula(gen):
    """jacobgil/vit-explain: a = (mean_heads(A) + I) / 2, rows renormalised, result = a @
    result, written out here independently."""
    layers = [torch.softmax(torch.randn(H, N, N, generator=gen), -1) for _ in range(3)]
    result = torch.eye(N)
    for a in layers:
        a = (a.mean(0) + torch.eye(N)) / 2
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
    torch.testing.assert_close(attention_rollout(layers), result)


@pytest.mark.parametrize("graph", [Graph.window(N, 1), Graph.causal(N)])
def test_rollout_per_edge_equals_dense(graph, gen):
    x = torch.randn(2, N, C, generator=gen)
    stack = Stack(_random_layer(0, backend="edges"), _random_layer(1, backend="edges"))
    _, atts = stack(x, graph)
    dense = [AttentionWeights(a.to_dense(), a.graph, "dense") for a in atts]
    assert atts[0].layout == "edges" or graph.kind == "causal"
    r = attention_rollout(atts)
    torch.testing.assert_close(r, attention_rollout(dense))
    if graph.kind == "window":  # information travels one step per layer
        assert bool((r[:, 0, 3:] == 0).all()) and bool((r[:, 0, :3] > 0).all())


def test_rollout_cross_attention_needs_no_residual():
    a = torch.full((3, 5), 0.2)  # 3 targets, 5 sources
    b = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="residual"):
        attention_rollout([a])
    torch.testing.assert_close(attention_rollout([a, b], residual=False), torch.full((2, 5), 0.2))
    with pytest.raises(ValueError, match="chain"):
        attention_rollout([b, b], residual=False)


# ---------------------------------------------------------------------- gradient x attention


def test_grad_attention_matches_plain_torch_gradients(gen):
    """Relevance from graphattn's weights equals Chefer's rule computed on attention written
    out in plain torch with retain_grad (same weights)."""
    layers = [_random_layer(0), _random_layer(1), _random_layer(2)]
    stack = Stack(*layers)
    x = torch.randn(2, N, C, generator=gen)
    with force_dense_backend(stack):
        assert all(layer.backend == "dense" for layer in layers)
        out, atts = stack(x)
    assert all(layer.backend == "auto" for layer in layers)
    rel = grad_attention(out[:, 0].sum(-1), atts)

    h, maps = x, []
    for layer in layers:
        q, k, v = F.linear(h, layer.in_proj_weight, layer.in_proj_bias).chunk(3, -1)
        q, k, v = (t.view(2, N, H, C // H).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C // H), -1)  # (B, H, N, N)
        a.retain_grad()
        maps.append(a)
        h = h + layer.out_proj((a @ v).transpose(1, 2).reshape(2, N, C))
    h[:, 0].sum().backward()
    expect = torch.eye(N).repeat(2, 1, 1)
    for a in maps:
        expect = expect + (a.grad * a).clamp(min=0).mean(1) @ expect
    torch.testing.assert_close(rel, expect, rtol=1e-4, atol=1e-5)


def test_grad_attention_finds_the_deciding_token(gen):
    """The output is the content of the flagged token: it gets the highest relevance for the
    CLS node, while plain attention of the random first layer is spread out."""
    stack = Stack(_random_layer(3, embed=4, scale=0.1, backend="dense"), _pointer_layer())
    x, flag = _flagged_inputs(4, N, gen)
    out, atts = stack(x)
    rel = grad_attention(out[:, 0, 2], atts)  # (B, N, N)
    assert torch.equal(rel[:, 0, 1:].argmax(-1) + 1, flag)
    assert bool((rel >= 0).all())


def test_grad_attention_unbatched_equals_batched(gen):
    stack = Stack(_random_layer(4, backend="dense"), _random_layer(5, backend="dense"))
    x = torch.randn(1, N, C, generator=gen)
    out, atts = stack(x)
    batched = grad_attention(out[:, 2].sum(), atts)
    out1, atts1 = stack(x[0])  # GraphAttention returns views weights[0]: still usable
    torch.testing.assert_close(grad_attention(out1[2].sum(), atts1), batched[0])


def test_grad_attention_cross_attention_finds_the_deciding_source(gen):
    """A query set attends to a source set (roles): R_qs points at the flagged source."""
    enc = _random_layer(6, embed=4, scale=0.1, backend="dense")
    cross = _pointer_layer()
    src, flag = _flagged_inputs(4, N, gen)
    query = torch.zeros(4, 1, 4)
    query[..., 0] = 1.0
    res_enc = enc.forward_with_weights(src)
    s = src + res_enc.out
    res_x = cross.forward_with_weights(query, x_src=s)
    y = (query + res_x.out)[:, 0, 2]
    rel = grad_attention_by_role(y, [res_enc.attention, res_x.attention], [("s", "s"), ("q", "s")])
    assert set(rel) == {("s", "s"), ("q", "q"), ("q", "s"), ("s", "q")}
    assert rel["q", "s"].shape == (4, 1, N)
    assert torch.equal(rel["q", "s"][:, 0].argmax(-1), flag)


def _handle_residual(r):
    """Chefer et al.'s handle_residual (eqs. 8-9), batched."""
    eye = torch.eye(r.shape[-1])
    r = r - eye
    r = r / r.sum(-1, keepdim=True)
    return torch.nan_to_num(r) + eye


def test_grad_attention_roles_follow_detr_generator(gen):
    """Encoder self-attention on image nodes, decoder self-attention on queries, then
    queries attend to the image: the relevance rules of Chefer et al.'s DETR generator
    (Transformer-MM-Explainability, ``Generator.generate_ours`` without LRP)."""
    ni, nq = 5, 3
    enc = [_random_layer(10, backend="dense"), _random_layer(11, backend="dense")]
    dec_self, dec_cross = _random_layer(12, backend="dense"), _random_layer(13, backend="dense")
    img = torch.randn(2, ni, C, generator=gen)
    qry = torch.randn(2, nq, C, generator=gen)
    atts = []
    for layer in enc:
        res = layer.forward_with_weights(img)
        img, _ = img + res.out, atts.append(res.attention)
    res = dec_self.forward_with_weights(qry)
    qry, _ = qry + res.out, atts.append(res.attention)
    res = dec_cross.forward_with_weights(qry, x_src=img)
    qry, _ = qry + res.out, atts.append(res.attention)
    score = qry[:, 1].square().sum(-1)
    roles = [("i", "i"), ("i", "i"), ("q", "q"), ("q", "i")]
    rel = grad_attention_by_role(score, atts, roles, retain_graph=True)

    grads = torch.autograd.grad(score.sum(), [a.values for a in atts])
    cams = [(g * a.values).clamp(min=0).mean(1) for g, a in zip(grads, atts, strict=True)]
    r_ii = torch.eye(ni).repeat(2, 1, 1)
    r_qq = torch.eye(nq).repeat(2, 1, 1)
    r_qi = torch.zeros(2, nq, ni)
    for cam in cams[:2]:  # handle_self_attention_image
        r_ii = r_ii + cam @ r_ii
    r_qq, r_qi = r_qq + cams[2] @ r_qq, r_qi + cams[2] @ r_qi  # handle_co_attn_self_query
    r_qi = r_qi + _handle_residual(r_qq).transpose(1, 2) @ cams[3] @ _handle_residual(r_ii)
    torch.testing.assert_close(rel["i", "i"], r_ii)
    torch.testing.assert_close(rel["q", "q"], r_qq)
    torch.testing.assert_close(rel["q", "i"], r_qi)


@pytest.mark.parametrize("graph", [None, Graph.window(N, 1)], ids=["complete", "window"])
def test_grad_attention_is_the_same_on_every_backend(graph, gen):
    """The edge backend's weights and the dense backend's per-edge weights on a sparse graph
    lie on the output's autograd path, and give the dense result."""
    x = torch.randn(2, N, C, generator=gen)
    relevance = {}
    for backend in ("dense", "edges"):
        stack = Stack(_random_layer(0, backend=backend), _random_layer(1, backend=backend))
        out, atts = stack(x, graph)
        relevance[backend] = grad_attention(out[:, 0].sum(), atts)
    torch.testing.assert_close(relevance["edges"], relevance["dense"], rtol=1e-5, atol=1e-6)
    assert bool((relevance["dense"] >= 0).all())


def test_grad_attention_refuses_detached_weights(gen):
    stack = Stack(_random_layer(0, backend="edges"))
    out, atts = stack(torch.randn(2, N, C, generator=gen))
    detached = [AttentionWeights(a.values.detach(), a.graph, a.layout) for a in atts]
    with pytest.raises(ValueError, match="not part of the autograd graph"):
        grad_attention(out.sum(), detached)


# ---------------------------------------------------------------------- head statistics


def test_head_entropy_of_uniform_attention_is_log_n():
    stats = head_statistics(torch.full((3, N, N), 1 / N))
    torch.testing.assert_close(stats.entropy, torch.full((3,), math.log(N)))
    torch.testing.assert_close(stats.uniform_entropy, torch.full((3,), math.log(N)))
    torch.testing.assert_close(stats.max_weight, torch.full((3,), 1 / N))
    pos = torch.arange(N).float()
    expect = (pos[:, None] - pos[None]).abs().mean()
    torch.testing.assert_close(stats.mean_distance, expect.expand(3))


def test_head_statistics_of_previous_token_attention():
    a = torch.zeros(N, N)
    a[0, 0] = 1.0
    a[torch.arange(1, N), torch.arange(N - 1)] = 1.0
    stats = head_statistics(a)
    assert stats.num_heads == 1
    torch.testing.assert_close(stats.entropy, torch.zeros(1))
    torch.testing.assert_close(stats.max_weight, torch.ones(1))
    torch.testing.assert_close(stats.mean_distance, torch.tensor([(N - 1) / N]))
    coords = torch.stack([torch.arange(N) // 3, torch.arange(N) % 3], -1)  # 2 x 3 grid
    d2 = head_statistics(a, positions=coords).mean_distance
    expect = sum(float((coords[i] - coords[i - 1]).float().norm()) for i in range(1, N)) / N
    torch.testing.assert_close(d2, torch.tensor([expect]))


def test_head_statistics_uniform_causal_per_edge(gen):
    attn = GraphAttention(C, H, backend="edges")
    with torch.no_grad():
        attn.in_proj_weight[:C] = 0  # uniform attention over the in-edges
        attn.in_proj_bias.zero_()
    res = attn.forward_with_weights(torch.randn(1, N, C, generator=gen), Graph.causal(N))
    stats = head_statistics(res.attention)
    expect = torch.log(torch.arange(1, N + 1).float()).mean()
    torch.testing.assert_close(stats.entropy, expect.expand(H))
    torch.testing.assert_close(stats.uniform_entropy, expect.expand(H))


@pytest.mark.parametrize("padded", [False, True])
def test_head_statistics_per_edge_equals_dense(padded, gen):
    attn = _random_layer(7, backend="edges")
    x = torch.randn(2, N, C, generator=gen)
    kpm = torch.tensor([[False] * N, [False] * 4 + [True] * 2]) if padded else None
    res = attn.forward_with_weights(x, Graph.window(N, 2), key_padding_mask=kpm)
    assert res.attention.layout == "edges"
    dense = AttentionWeights(res.attention.to_dense(), res.attention.graph, "dense")
    a, b = head_statistics(res.attention), head_statistics(dense)
    for name in ("entropy", "uniform_entropy", "max_weight", "mean_distance"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))
    assert torch.isfinite(a.entropy).all() and a.entropy.shape == (H,)


def test_head_statistics_cross_attention_positions():
    a = torch.full((1, 2, 4), 0.25)
    assert head_statistics(a).mean_distance is None
    stats = head_statistics(a, positions=(torch.tensor([0.0, 3.0]), torch.arange(4.0)))
    torch.testing.assert_close(stats.mean_distance, torch.tensor([1.5]))


# ---------------------------------------------------------------------- perturbation


def _pointer_model():
    stack = Stack(_pointer_layer())
    return stack, lambda x, kpm: stack(x, key_padding_mask=kpm)[0][:, 0]


@pytest.mark.parametrize("mode", ["mask", "zero"])
def test_perturbation_top_k_beats_random(mode, gen):
    stack, model_fn = _pointer_model()
    x, flag = _flagged_inputs(5, N, gen)
    _, atts = stack(x)
    res = perturbation_check(
        model_fn, x, atts[0], k=1, num_random=6, generator=gen, mode=mode, target=0
    )
    assert res.top_delta.shape == (5,) and res.random_delta.shape == (6, 5)
    assert torch.isfinite(res.top_delta).all() and torch.isfinite(res.random_delta).all()
    assert torch.equal(res.top_nodes[:, 0], flag)
    assert bool((res.top_delta >= res.random_mean).all())
    assert res.ratio > 2.0


def test_perturbation_accepts_rollout_importance_and_node_mask(gen):
    stack, model_fn = _pointer_model()
    x, flag = _flagged_inputs(3, N, gen)
    _, atts = stack(x)
    node_mask = torch.ones(3, N, dtype=torch.bool)
    node_mask[:, 0] = False  # never delete the CLS node
    res = perturbation_check(
        model_fn, x, atts, k=2, num_random=3, generator=gen, node_mask=node_mask
    )
    assert not bool((res.top_nodes == 0).any())
    assert bool((res.top_nodes == flag[:, None]).any(1).all())
    imp = torch.zeros(N)
    imp[4] = 1.0  # an importance vector given directly
    res = perturbation_check(model_fn, x, imp, k=1, num_random=2, generator=gen)
    assert torch.equal(res.top_nodes, torch.full((3, 1), 4))
    with pytest.raises(ValueError, match="k must"):
        perturbation_check(model_fn, x, imp, k=0)


# ---------------------------------------------------------------------- modality summary


def _loop_summary(dense, labels, m):
    """Reference: (B, H, N, N) weights, mean over targets of modality a of the mass on b."""
    out = torch.zeros(m, m)
    for a in range(m):
        rows = dense[:, :, labels == a]  # (B, H, Na, N)
        for b in range(m):
            out[a, b] = rows[..., labels == b].sum(-1).mean()
    return out


def test_modality_summary_rows_sum_to_one_and_match_loops(gen):
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    w = torch.softmax(torch.randn(2, H, N, N, generator=gen), -1)
    s = summarize_by_modality(w, labels, ["text", "image", "audio"])
    assert s.shape == (3, 3)
    torch.testing.assert_close(s.sum(-1), torch.ones(3))
    torch.testing.assert_close(s, _loop_summary(w, labels, 3))


def test_modality_summary_per_edge_equals_dense(gen):
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    attn = _random_layer(8, backend="edges")
    res = attn.forward_with_weights(torch.randn(2, N, C, generator=gen), Graph.window(N, 1))
    dense = AttentionWeights(res.attention.to_dense(), res.attention.graph, "dense")
    s = summarize_by_modality(res.attention, labels)
    torch.testing.assert_close(s, summarize_by_modality(dense, labels))
    torch.testing.assert_close(s, _loop_summary(dense.values, labels, 2))
    torch.testing.assert_close(s.sum(-1), torch.ones(2))


def test_modality_summary_cross_attention_and_empty_modality():
    w = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]])  # 2 targets, 3 sources
    s = summarize_by_modality(w, (torch.tensor([0, 0]), torch.tensor([0, 1, 2])), ["a", "b", "c"])
    expect = torch.tensor([[0.25, 0.125, 0.625], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(s, expect)
    with pytest.raises(ValueError, match="labels"):
        summarize_by_modality(w, torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------------- with GraphTransformer


def _transformer(backend="edges"):
    torch.manual_seed(0)
    return GraphTransformer(3, C, H, dim_feedforward=16, dropout=0.0, backend=backend)


def test_transformer_grad_attention_on_both_backends(gen):
    model = _transformer("edges")
    x = torch.randn(2, N, C, generator=gen)
    res = model.forward_with_weights(x)
    rel_edges = grad_attention(res.out[:, 0].sum(), res.attentions)
    with force_dense_backend(model):
        res = model.forward_with_weights(x)
    assert all(layer.self_attn.backend == "edges" for layer in model.layers)
    rel = grad_attention(res.out[:, 0].sum(), res.attentions)
    assert rel.shape == (2, N, N) and torch.isfinite(rel).all()
    assert bool((rel >= 0).all()) and bool((rel.diagonal(dim1=1, dim2=2) >= 1).all())
    torch.testing.assert_close(rel_edges, rel, rtol=1e-5, atol=1e-6)


def test_transformer_attention_records_explain_on_both_layouts(gen):
    """Rollout, head statistics and modality summary agree between a sparse graph run by
    the edge backend and the same weights densified."""
    model = _transformer("edges")
    x = torch.randn(2, N, C, generator=gen)
    kpm = torch.tensor([[False] * N, [False] * 5 + [True]])
    res = model.forward_with_weights(x, Graph.window(N, 2), key_padding_mask=kpm)
    dense = [AttentionWeights(a.to_dense(), a.graph, "dense") for a in res.attentions]
    torch.testing.assert_close(attention_rollout(res.attentions), attention_rollout(dense))
    torch.testing.assert_close(
        attention_rollout(res.attentions).sum(-1), torch.ones(2, N), rtol=0, atol=1e-5
    )
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    for a, d in zip(res.attentions, dense, strict=True):
        torch.testing.assert_close(head_statistics(a).entropy, head_statistics(d).entropy)
        s = summarize_by_modality(a, labels)
        torch.testing.assert_close(s, summarize_by_modality(d, labels))
        torch.testing.assert_close(s.sum(-1), torch.ones(2))


def test_transformer_perturbation_with_key_padding(gen):
    model = _transformer("auto")
    x = torch.randn(3, N, C, generator=gen)
    res = model.forward_with_weights(x)

    def model_fn(x, key_padding_mask):
        return model(x, key_padding_mask=key_padding_mask)[:, 0]

    check = perturbation_check(
        model_fn, x, res.attentions, k=2, num_random=4, generator=gen, target=0
    )
    assert torch.isfinite(check.top_delta).all() and bool((check.top_delta > 0).all())
    assert check.random_delta.shape == (4, 3) and math.isfinite(check.ratio)


def test_grad_attention_on_causal_graph_respects_the_mask(gen):
    stack = Stack(_random_layer(20, backend="dense"), _random_layer(21, backend="dense"))
    out, atts = stack(torch.randn(2, N, C, generator=gen), Graph.causal(N))
    assert atts[0].layout == "dense"
    rel = grad_attention(out[:, -1].sum(), atts)
    assert torch.isfinite(rel).all()
    assert bool((rel.triu(1) == 0).all())  # no relevance flows from the future
    with pytest.raises(ValueError, match="requires grad"):
        grad_attention(out.detach().sum(), atts)
