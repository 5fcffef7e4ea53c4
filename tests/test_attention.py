"""GraphAttention against nn.MultiheadAttention and PyG's TransformerConv with copied
weights, attention weights, gradients, torch.compile and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.nn import TransformerConv

from graphattn import BackendNotSupportedError, Graph, GraphAttention, graph_attention

BACKENDS = ["dense", "edges", "auto"]
C, H = 16, 4


def _mha(seed=0, **kwargs) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(C, H, batch_first=True, **kwargs)
    with torch.no_grad():  # MHA zero-initialises biases: make them count
        for name, p in mha.named_parameters():
            if "bias" in name:
                p.normal_(0, 0.1)
    return mha


def _kpm():
    # sample 0 unpadded, sample 1 padded from position 4 (no fully padded sample: MHA gives NaN)
    return torch.tensor([[False] * 7, [False] * 4 + [True] * 3])


def _assert_grads_close(a, b, atol=1e-5):
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=0, atol=atol)


# ---------------------------------------------------------------------- nn.MultiheadAttention


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_multihead_attention(backend, padded, bias, gen):
    mha = _mha(bias=bias)
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    x = torch.randn(2, 7, C, generator=gen, requires_grad=True)
    kpm = _kpm() if padded else None
    ref, _ = mha(x, x, x, key_padding_mask=kpm, need_weights=False)
    out = ga(x, key_padding_mask=kpm)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    grad_out = torch.randn(out.shape, generator=gen)
    _assert_grads_close(
        torch.autograd.grad(out, x, grad_out), torch.autograd.grad(ref, x, grad_out)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_multihead_attention_param_grads(backend, gen):
    mha = _mha()
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    x = torch.randn(2, 7, C, generator=gen)
    mha(x, x, x, key_padding_mask=_kpm(), need_weights=False)[0].pow(2).sum().backward()
    ga(x, key_padding_mask=_kpm()).pow(2).sum().backward()
    for name, p in ga.named_parameters():
        torch.testing.assert_close(p.grad, mha.get_parameter(name).grad, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_argument_forms_agree(backend, gen):
    """None, Graph.complete and the complete graph as an edge_index give the same output."""
    ga = GraphAttention(C, H, backend=backend)
    x = torch.randn(2, 5, C, generator=gen)
    ref = ga(x)
    torch.testing.assert_close(ga(x, Graph.complete(5)), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ga(x, Graph.complete(5).edge_index()), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padded", [False, True])
def test_cross_attention_matches_multihead_attention(backend, padded, gen):
    mha = _mha()
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    x = torch.randn(2, 3, C, generator=gen, requires_grad=True)
    y = torch.randn(2, 7, C, generator=gen, requires_grad=True)
    kpm = _kpm() if padded else None
    ref, _ = mha(x, y, y, key_padding_mask=kpm, need_weights=False)
    out = ga(x, x_src=y, key_padding_mask=kpm)
    assert out.shape == (2, 3, C)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    _assert_grads_close(
        torch.autograd.grad(out.sum(), (x, y)), torch.autograd.grad(ref.sum(), (x, y))
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_attention_kdim_vdim(backend, gen):
    mha = _mha(kdim=6, vdim=6)
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    assert ga.in_proj_weight is None and ga.k_proj_weight.shape == (C, 6)
    x = torch.randn(2, 3, C, generator=gen, requires_grad=True)
    y = torch.randn(2, 5, 6, generator=gen, requires_grad=True)
    ref, _ = mha(x, y, y, need_weights=False)
    out = ga(x, x_src=y)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    _assert_grads_close(
        torch.autograd.grad(out.sum(), (x, y)), torch.autograd.grad(ref.sum(), (x, y))
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [(C, C), (6, 5)], ids=["packed", "kdim_vdim"])
def test_separate_keys_and_values_match_multihead_attention(dims, backend, gen):
    kdim, vdim = dims
    mha = _mha(kdim=kdim, vdim=vdim)
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    x = torch.randn(2, 3, C, generator=gen, requires_grad=True)
    key = torch.randn(2, 5, kdim, generator=gen, requires_grad=True)
    value = torch.randn(2, 5, vdim, generator=gen, requires_grad=True)
    kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    ref, _ = mha(x, key, value, key_padding_mask=kpm, need_weights=False)
    out = ga(x, x_src=key, x_value=value, key_padding_mask=kpm)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    _assert_grads_close(
        torch.autograd.grad(out.sum(), (x, key, value)),
        torch.autograd.grad(ref.sum(), (x, key, value)),
    )
    with pytest.raises(ValueError, match="keys and values must have the same number of nodes"):
        ga(x, x_src=key, x_value=value[:, :4])
    with pytest.raises(ValueError, match=r"x_value \(values\) has feature size 7 but vdim"):
        ga(x, x_src=key, x_value=torch.randn(2, 5, 7))


@pytest.mark.parametrize("pair", [tuple, list])
def test_a_source_pair_is_refused_as_ambiguous(pair, gen):
    """PyG reads x_src=(a, b) as (sources, targets), MHA as (key, value): neither guess."""
    ga = GraphAttention(C, H)
    x = torch.randn(2, 3, C, generator=gen)
    src = torch.randn(2, 5, C, generator=gen)
    with pytest.raises(TypeError, match=r"ambiguous.*\(x_src, x_dst\).*\(key, value\).*x_value"):
        ga(x, x_src=pair((src, src)))
    with pytest.raises(ValueError, match="x_value was given without x_src"):
        ga(x, x_value=src)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padded", [False, True])
def test_unbatched_matches_multihead_attention(backend, padded, gen):
    mha = _mha()
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    x = torch.randn(7, C, generator=gen, requires_grad=True)
    kpm = _kpm()[1] if padded else None
    ref, _ = mha(x, x, x, key_padding_mask=kpm, need_weights=False)
    out = ga(x, key_padding_mask=kpm)
    assert out.shape == (7, C)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    _assert_grads_close(torch.autograd.grad(out.sum(), x), torch.autograd.grad(ref.sum(), x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_eval_matches_multihead_attention(backend, gen):
    mha = _mha(dropout=0.5).eval()
    ga = GraphAttention.from_multihead_attention(mha, backend=backend).eval()
    assert ga.dropout == 0.5
    x = torch.randn(2, 7, C, generator=gen)
    ref, _ = mha(x, x, x, key_padding_mask=_kpm(), need_weights=False)
    torch.testing.assert_close(ga(x, key_padding_mask=_kpm()), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_dropout_train_is_random_and_finite(backend, gen):
    ga = GraphAttention(C, H, dropout=0.5, backend=backend).train()
    x = torch.randn(2, 7, C, generator=gen)
    a, b = ga(x, Graph.window(7, 2)), ga(x, Graph.window(7, 2))
    assert torch.isfinite(a).all() and not torch.equal(a, b)


@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_batched_equals_one_by_one(backend, gen):
    ga = GraphAttention(C, H, backend=backend)
    g = Graph.from_edge_index(torch.randint(0, 6, (2, 15), generator=gen), 6)
    x = torch.randn(3, 6, C, generator=gen)
    out = ga(x, g)
    for i in range(3):
        torch.testing.assert_close(out[i], ga(x[i], g), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- TransformerConv


def _conv_and_copy(edge_dim=None, seed=0):
    torch.manual_seed(seed)
    conv = TransformerConv(C, C // H, heads=H, root_weight=False, edge_dim=edge_dim)
    ga = GraphAttention.from_transformer_conv(conv, backend="edges")
    return conv, ga


def _pyg_inputs(gen, n=8, e=30, edge_dim=None):
    x = torch.randn(n, C, generator=gen, requires_grad=True)
    ei = torch.randint(0, n, (2, e), generator=gen)  # duplicates and self-loops likely
    ei[1, :2] = 1  # make sure target 1 has several in-edges
    ei[:, 2] = torch.tensor([1, 1])
    ea = None if edge_dim is None else torch.randn(e, edge_dim, generator=gen, requires_grad=True)
    return x, ei, ea


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edge_dim", [None, 5])
def test_matches_transformer_conv(edge_dim, backend, gen):
    conv, ga = _conv_and_copy(edge_dim)
    ga.backend = backend
    x, ei, ea = _pyg_inputs(gen, edge_dim=edge_dim)
    if edge_dim is not None and backend == "dense":
        with pytest.raises(BackendNotSupportedError, match="edge features"):
            ga(x, ei, edge_attr=ea)
        return
    if edge_dim is None:
        ref, out = conv(x, ei), ga(x, ei)
    else:
        ref, out = conv(x, ei, ea), ga(x, ei, edge_attr=ea)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    grad_out = torch.randn(out.shape, generator=gen)
    inputs = (x,) if ea is None else (x, ea)
    _assert_grads_close(
        torch.autograd.grad(out, inputs, grad_out, retain_graph=True),
        torch.autograd.grad(ref, inputs, grad_out, retain_graph=True),
    )
    # parameter gradients
    (out * grad_out).sum().backward()
    (ref * grad_out).sum().backward()
    lins = (conv.lin_query, conv.lin_key, conv.lin_value)
    torch.testing.assert_close(
        ga.in_proj_weight.grad, torch.cat([lin.weight.grad for lin in lins]), rtol=0, atol=1e-4
    )
    torch.testing.assert_close(
        ga.in_proj_bias.grad, torch.cat([lin.bias.grad for lin in lins]), rtol=0, atol=1e-4
    )
    if edge_dim is not None:
        torch.testing.assert_close(
            ga.lin_edge.weight.grad, conv.lin_edge.weight.grad, rtol=0, atol=1e-4
        )


@pytest.mark.parametrize("edge_dim", [None, 5])
def test_attention_weights_match_transformer_conv(edge_dim, gen):
    conv, ga = _conv_and_copy(edge_dim)
    x, ei, ea = _pyg_inputs(gen, edge_dim=edge_dim)
    _, (ei_ref, alpha) = conv(x, ei, ea, return_attention_weights=True)
    assert torch.equal(ei_ref, ei)
    res = ga.forward_with_weights(x, ei, edge_attr=ea)
    assert res.attention.layout == "edges"
    assert res.attention.values.shape == (ei.shape[1], H)
    torch.testing.assert_close(res.attention.values, alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.out, conv(x, ei, ea), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- attention weights


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padded", [False, True])
def test_return_attention_matches_multihead_attention(backend, padded, gen):
    mha = _mha()
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    x = torch.randn(2, 7, C, generator=gen)
    kpm = _kpm() if padded else None
    ref_out, ref_w = mha(x, x, x, key_padding_mask=kpm, average_attn_weights=False)
    res = ga.forward_with_weights(x, key_padding_mask=kpm)
    assert res.backend in ("dense", "edges") and (backend == "auto" or res.backend == backend)
    assert res.attention.layout == "dense"
    assert res.attention.values.shape == (2, H, 7, 7)
    torch.testing.assert_close(res.attention.values, ref_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.out, ref_out, rtol=0, atol=1e-5)
    assert res.attention.to_edges().shape == (2, 49, H)


@pytest.mark.parametrize("backend", BACKENDS)
def test_return_attention_unbatched_matches_multihead_attention(backend, gen):
    mha = _mha()
    ga = GraphAttention.from_multihead_attention(mha, backend=backend)
    x = torch.randn(5, C, generator=gen)
    _, ref_w = mha(x, x, x, average_attn_weights=False)  # (H, N, N)
    res = ga.forward_with_weights(x)
    assert not res.attention.batched and res.attention.values.shape == (H, 5, 5)
    torch.testing.assert_close(res.attention.values, ref_w, rtol=0, atol=1e-6)
    assert res.attention.to_edges().shape == (25, H)


@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_return_attention_unbatched_edge_list(backend, gen):
    ga = GraphAttention(C, H, backend=backend)
    x = torch.randn(6, C, generator=gen)
    ei = torch.randint(0, 6, (2, 14), generator=gen)
    res = ga.forward_with_weights(x, ei)
    assert res.attention.layout == "edges" and res.attention.values.shape == (14, H)
    dense = res.attention.to_dense()  # (H, Nd, Ns)
    has_in_edge = torch.zeros(6, dtype=torch.bool)
    has_in_edge[ei[1]] = True
    torch.testing.assert_close(dense.sum(-1), has_in_edge.float().expand(H, 6))
    torch.testing.assert_close(res.out, ga(x, ei), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- gradients, compile


@pytest.mark.parametrize(
    ("kwargs", "call"),
    [
        ({}, "self"),
        ({"kdim": 6, "vdim": 6}, "cross"),
        ({"edge_dim": 3}, "edges"),
    ],
)
@pytest.mark.parametrize("backend", ["dense", "edges", "auto"])
def test_every_parameter_gets_a_gradient(kwargs, call, backend, gen):
    if call == "edges" and backend == "dense":
        pytest.skip("edge features need the edge backend")
    ga = GraphAttention(C, H, backend=backend, **kwargs)
    x = torch.randn(2, 5, C, generator=gen)
    if call == "self":
        out = ga(x, Graph.causal(5))
    elif call == "cross":
        out = ga(x, x_src=torch.randn(2, 4, 6, generator=gen))
    else:
        ei = torch.randint(0, 5, (2, 12), generator=gen)
        out = ga(x, ei, edge_attr=torch.randn(12, 3, generator=gen))
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    for name, p in ga.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_torch_compile_matches_eager(gen):
    torch._dynamo.reset()
    ga = GraphAttention(C, H, backend="dense")
    x = torch.randn(2, 6, C, generator=gen, requires_grad=True)
    compiled = torch.compile(ga, fullgraph=True)  # fullgraph: fails on a graph break
    out, ref = compiled(x), ga(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    _assert_grads_close(torch.autograd.grad(out.sum(), x), torch.autograd.grad(ref.sum(), x))


# ---------------------------------------------------------------------- checks, repr, init


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((10, 3), {}, r"embed_dim \(10\).*num_heads \(3\)"),
        ((0, 1), {}, r"embed_dim.*0"),
        ((8, 2), {"dropout": 1.0}, r"dropout.*1\.0"),
        ((8, 2), {"backend": "flash"}, r"backend.*'flash'"),
    ],
)
def test_constructor_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GraphAttention(*args, **kwargs)


def test_forward_errors(gen):
    ga = GraphAttention(C, H)
    x = torch.randn(2, 5, C, generator=gen)
    with pytest.raises(ValueError, match=rf"feature size 7 .*embed_dim is {C}"):
        ga(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"x must .*\(5,\)"):
        ga(torch.randn(5))
    with pytest.raises(ValueError, match=rf"x_src has feature size 3 .*kdim is {C}"):
        ga(x, x_src=torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"batch 2 .*x_src has 3"):
        ga(x, x_src=torch.randn(3, 4, C))
    with pytest.raises(ValueError, match=r"num_dst=4.*5 target"):
        ga(x, Graph.causal(4))
    with pytest.raises(ValueError, match=r"edge_attr.*edge_dim=None"):
        ga(x, Graph.causal(5), edge_attr=torch.randn(15, 2))
    with pytest.raises(ValueError, match=r"self-attention.*kdim=6"):
        GraphAttention(C, H, kdim=6, vdim=6)(x)
    ge = GraphAttention(C, H, edge_dim=3)
    with pytest.raises(ValueError, match=r"edge_attr.*E=15.*\(14, 3\)"):
        ge(x, Graph.causal(5), edge_attr=torch.randn(14, 3))
    with pytest.raises(ValueError, match="pass edge_attr"):
        ge(x, Graph.causal(5))


def test_from_multihead_attention_rejects_unsupported():
    with pytest.raises(TypeError, match="Linear"):
        GraphAttention.from_multihead_attention(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="add_bias_kv"):
        GraphAttention.from_multihead_attention(nn.MultiheadAttention(C, H, add_bias_kv=True))


def test_repr():
    r = repr(GraphAttention(24, 6, edge_dim=3, backend="edges"))
    assert "embed_dim=24" in r and "num_heads=6" in r and "edge_dim=3" in r and "'edges'" in r


def test_reset_parameters_changes_weights():
    torch.manual_seed(0)
    ga = GraphAttention(C, H, kdim=6, vdim=6, edge_dim=3)
    with torch.no_grad():
        for p in ga.parameters():
            p.fill_(0.5)
    ga.reset_parameters()
    for name, p in ga.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name  # nn.MultiheadAttention initialises biases to 0
        else:
            assert not (p == 0.5).any(), name


def test_from_transformer_conv_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="root_weight=True"):
        GraphAttention.from_transformer_conv(TransformerConv(C, C // H, heads=H))
    with pytest.raises(ValueError, match=r"lazy \(in_channels=-1\)"):
        GraphAttention.from_transformer_conv(
            TransformerConv(-1, C // H, heads=H, root_weight=False)
        )
    with pytest.raises(TypeError, match="TransformerConv"):
        GraphAttention.from_transformer_conv(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_sequence_first_like_multihead_attention(backend, gen):
    """A default nn.MultiheadAttention (batch_first=False) and its copy give the same numbers
    on (L, B, E) inputs: self- and cross-attention, with key padding."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(C, H).eval()  # batch_first=False
    ga = GraphAttention.from_multihead_attention(mha, backend=backend).eval()
    assert not ga.batch_first and "batch_first=False" in repr(ga)
    x = torch.randn(7, 2, C, generator=gen)  # (L, B, E)
    y = torch.randn(5, 2, C, generator=gen)  # (S, B, E)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    torch.testing.assert_close(ga(x), mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-6)
    ref = mha(x, y, y, key_padding_mask=pad, need_weights=False)[0]
    out = ga(x, x_src=y, key_padding_mask=pad)
    assert out.shape == (7, 2, C)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    res = ga.forward_with_weights(x, x_src=y, key_padding_mask=pad)
    torch.testing.assert_close(res.out, ref, rtol=1e-5, atol=1e-6)
    assert ga(x[:, 0]).shape == (7, C)  # unbatched inputs are the same either way


# ---------------------------------------------------------------------- renamed keywords


def test_old_keyword_names_still_work_with_a_future_warning(gen):
    ga = GraphAttention(C, H)
    x = torch.randn(2, 5, C, generator=gen)
    bias = torch.randn(1, H, 5, 5, generator=gen)
    new = ga.forward_with_weights(x, attn_bias=bias)
    with pytest.warns(FutureWarning, match=r"bias= is now called attn_bias="):
        old = ga.forward_with_weights(x, bias=bias)
    torch.testing.assert_close(old.out, new.out)
    with pytest.warns(FutureWarning, match=r"call GraphAttention.forward_with_weights"):
        assert ga(x, return_attention=True).backend == new.backend
    with pytest.raises(
        TypeError, match=r"bias= is the old name of attn_bias=; pass attn_bias= only"
    ):
        ga(x, attn_bias=bias, bias=bias)
    q = torch.randn(H, 5, 4, generator=gen)
    with pytest.warns(FutureWarning, match="attn_bias"):
        graph_attention(q, q, q, None, bias=bias[0])
