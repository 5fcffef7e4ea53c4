"""GraphTransformerLayer / GraphTransformer against nn.TransformerEncoderLayer and
nn.TransformerEncoder with copied weights, per-layer graphs, checkpointing, attention records,
gradients and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphattn import (
    AttentionWeights,
    Graph,
    GraphTransformer,
    GraphTransformerLayer,
    LayerOutput,
    RelativePositionBias1D,
    RotaryEmbedding,
    TransformerOutput,
)

C, H, FF = 16, 4, 24


def _ref_layer(norm_first: bool, activation="relu", seed=0) -> nn.TransformerEncoderLayer:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        C, H, FF, dropout=0.1, activation=activation, batch_first=True, norm_first=norm_first
    )
    with torch.no_grad():  # biases and norms start at 0 / 1: make them count
        for name, p in layer.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return layer.eval()


def _kpm():
    return torch.tensor([[False] * 7, [False] * 4 + [True] * 3])


@pytest.mark.parametrize("backend", ["dense", "edges"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize(
    ("norm_first", "activation"),
    [(True, "relu"), (False, "relu"), (True, "gelu"), (False, nn.GELU())],
)
def test_layer_matches_transformer_encoder_layer(norm_first, activation, padded, backend, gen):
    ref = _ref_layer(norm_first, activation)
    layer = GraphTransformerLayer.from_transformer_encoder_layer(ref, backend=backend).eval()
    x = torch.randn(2, 7, C, generator=gen, requires_grad=True)  # grad: no fast path
    kpm = _kpm() if padded else None
    want = ref(x, src_key_padding_mask=kpm)
    got = layer(x, key_padding_mask=kpm)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    grad_out = torch.randn(want.shape, generator=gen)
    (gx_want,) = torch.autograd.grad(want, x, grad_out)
    (gx_got,) = torch.autograd.grad(got, x, grad_out)
    torch.testing.assert_close(gx_got, gx_want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_parameter_gradients_match(norm_first, gen):
    ref = _ref_layer(norm_first)
    layer = GraphTransformerLayer.from_transformer_encoder_layer(ref).eval()
    x = torch.randn(2, 7, C, generator=gen)
    ref(x, src_key_padding_mask=_kpm()).pow(2).sum().backward()
    layer(x, key_padding_mask=_kpm()).pow(2).sum().backward()
    ref_params = dict(ref.named_parameters())
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=0, atol=1e-4)


@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_matches_fast_path_on_real_positions(norm_first, gen):
    """Under no_grad in eval PyTorch may take its fused fast path (zeros at padded rows)."""
    ref = _ref_layer(norm_first)
    layer = GraphTransformerLayer.from_transformer_encoder_layer(ref).eval()
    x = torch.randn(2, 7, C, generator=gen)
    with torch.no_grad():
        want = ref(x, src_key_padding_mask=_kpm())
        got = layer(x, key_padding_mask=_kpm())
    real = ~_kpm()
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("with_norm", [True, False])
def test_stack_matches_transformer_encoder(norm_first, with_norm, gen):
    torch.manual_seed(1)
    enc_layer = nn.TransformerEncoderLayer(C, H, FF, batch_first=True, norm_first=norm_first)
    norm = nn.LayerNorm(C) if with_norm else None
    ref = nn.TransformerEncoder(enc_layer, 3, norm=norm, enable_nested_tensor=False).eval()
    model = GraphTransformer.from_transformer_encoder(ref).eval()
    assert model.num_layers == 3 and (model.norm is not None) == with_norm
    x = torch.randn(2, 7, C, generator=gen, requires_grad=True)
    want = ref(x, src_key_padding_mask=_kpm())
    got = model(x, key_padding_mask=_kpm())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    (gx_want,) = torch.autograd.grad(want.sum(), x)
    (gx_got,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(gx_got, gx_want, rtol=0, atol=1e-5)


def test_layer_unbatched_equals_batched(gen):
    layer = GraphTransformerLayer(C, H, dim_feedforward=FF).eval()
    x = torch.randn(1, 9, C, generator=gen)
    g = Graph.window(9, radius=2)
    torch.testing.assert_close(layer(x[0], g), layer(x, g)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_backends_agree_on_sparse_graph_with_bias_and_rotary(norm_first, gen):
    torch.manual_seed(2)
    dense = GraphTransformerLayer(C, H, dim_feedforward=FF, norm_first=norm_first, backend="dense")
    edges = GraphTransformerLayer(C, H, dim_feedforward=FF, norm_first=norm_first, backend="edges")
    edges.load_state_dict(dense.state_dict())
    dense.eval(), edges.eval()
    g = Graph.window(11, radius=3)
    rpb = RelativePositionBias1D(H, num_buckets=8, max_distance=16)
    nn.init.normal_(rpb.relative_attention_bias.weight)
    rope = RotaryEmbedding(C // H)
    x = torch.randn(2, 11, C, generator=gen)
    a = dense(x, g, attn_bias=rpb(g), rotary=rope)
    b = edges(x, g, attn_bias=rpb(g), rotary=rope)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_layer_return_attention(gen):
    layer = GraphTransformerLayer(C, H, dim_feedforward=FF).eval()
    x = torch.randn(2, 6, C, generator=gen)
    g = Graph.causal(6)
    res = layer.forward_with_weights(x, g)
    assert isinstance(res, LayerOutput)
    torch.testing.assert_close(res.out, layer(x, g), rtol=0, atol=1e-6)
    dense = res.attention.to_dense()  # (B, H, N, N)
    assert dense.shape == (2, H, 6, 6)
    torch.testing.assert_close(dense.sum(-1), torch.ones(2, H, 6))
    assert bool((dense.triu(1) == 0).all())


def _graphs(n: int, gen: torch.Generator) -> list:
    src = torch.randint(0, n, (40,), generator=gen)
    dst = torch.randint(0, n, (40,), generator=gen)
    return [None, Graph.window(n, radius=2), torch.stack([src, dst])]


def test_stack_per_layer_graphs_equal_running_layers_by_hand(gen):
    model = GraphTransformer(3, C, H, dim_feedforward=FF).eval()
    x = torch.randn(2, 8, C, generator=gen)
    graphs = _graphs(8, gen)
    h = x
    for layer, g in zip(model.layers, graphs, strict=True):
        h = layer(h, g)
    want = model.norm(h)
    torch.testing.assert_close(model(x, graphs), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(x, tuple(graphs)), want, rtol=0, atol=1e-6)


def test_stack_one_graph_for_all_layers(gen):
    model = GraphTransformer(2, C, H, dim_feedforward=FF).eval()
    x = torch.randn(2, 8, C, generator=gen)
    g = Graph.window(8, radius=1)
    torch.testing.assert_close(model(x, g), model(x, [g, g]), rtol=0, atol=0)
    torch.testing.assert_close(model(x, g.edge_index()), model(x, g), rtol=0, atol=1e-6)


def test_stack_wrong_number_of_graphs():
    model = GraphTransformer(3, C, H, dim_feedforward=FF)
    with pytest.raises(ValueError, match=r"list of 2 entries.*num_layers=3"):
        model(torch.randn(2, 5, C), [None, None])
    with pytest.raises(ValueError, match=r"bias is a list of 4 entries.*num_layers=3"):
        model(torch.randn(2, 5, C), attn_bias=[None] * 4)
    with pytest.raises(TypeError, match="graph must be one of"):
        model(torch.randn(2, 5, C), "complete")


def test_stack_return_attention_has_one_record_per_layer(gen):
    model = GraphTransformer(3, C, H, dim_feedforward=FF).eval()
    x = torch.randn(2, 8, C, generator=gen)
    graphs = _graphs(8, gen)
    res = model.forward_with_weights(x, graphs)
    assert isinstance(res, TransformerOutput)
    assert len(res.attentions) == 3
    assert all(isinstance(a, AttentionWeights) for a in res.attentions)
    assert res.attentions[0].layout == "dense" and res.attentions[1].layout == "edges"
    for a, g in zip(res.attentions, graphs, strict=True):
        dense = a.to_dense()  # (B, H, N, N)
        gg = Graph.complete(8) if g is None else g
        mask = (gg if isinstance(gg, Graph) else Graph.from_edge_index(gg, 8)).materialize()
        assert bool((dense[..., ~mask] == 0).all())
        has_in = mask.any(-1)
        torch.testing.assert_close(dense.sum(-1)[..., has_in], torch.ones(2, H, int(has_in.sum())))
    torch.testing.assert_close(res.out, model(x, graphs), rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm_first", [True, False])
def test_checkpoint_gives_the_same_gradients(norm_first, gen):
    torch.manual_seed(3)
    plain = GraphTransformer(2, C, H, dim_feedforward=FF, dropout=0.2, norm_first=norm_first)
    ckpt = GraphTransformer(
        2, C, H, dim_feedforward=FF, dropout=0.2, norm_first=norm_first, checkpoint=True
    )
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, C, generator=gen)
    g = [None, Graph.window(8, radius=2)]
    grads, calls = [], []
    for model in (plain, ckpt):
        model.train()
        count = [0]

        def counting_relu(t, count=count):
            count[0] += 1
            return torch.relu(t)

        model.layers[0].activation = counting_relu
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(7)  # the same dropout masks in both runs
        model(xi, g, key_padding_mask=_kpm().repeat(1, 2)[:, :8]).pow(2).sum().backward()
        grads.append([xi.grad] + [p.grad for p in model.parameters()])
        calls.append(count[0])
    assert calls == [1, 2]  # checkpointing recomputes the layer in backward
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_checkpoint_with_return_attention(gen):
    model = GraphTransformer(2, C, H, dim_feedforward=FF, dropout=0.0, checkpoint=True).train()
    x = torch.randn(2, 6, C, generator=gen, requires_grad=True)
    res = model.forward_with_weights(x)
    assert len(res.attentions) == 2
    res.out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("norm_first", [True, False])
def test_every_parameter_gets_a_gradient(norm_first, gen):
    model = GraphTransformer(
        2, C, H, dim_feedforward=FF, edge_dim=3, norm_first=norm_first, dropout=0.1
    ).train()
    x = torch.randn(2, 8, C, generator=gen)
    src = torch.randint(0, 8, (30,), generator=gen)
    dst = torch.randint(0, 8, (30,), generator=gen)
    ei = torch.stack([src, dst])
    out = model(x, ei, edge_attr=torch.randn(30, 3, generator=gen))
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool((p.grad != 0).any()), name


def test_per_layer_edge_attr(gen):
    model = GraphTransformer(2, C, H, dim_feedforward=FF, edge_dim=3).eval()
    x = torch.randn(2, 6, C, generator=gen)
    g1, g2 = Graph.window(6, radius=1), Graph.causal(6)
    ea = [torch.randn(g1.num_edges, 3, generator=gen), torch.randn(g2.num_edges, 3, generator=gen)]
    h = model.layers[1](model.layers[0](x, g1, edge_attr=ea[0]), g2, edge_attr=ea[1])
    torch.testing.assert_close(model(x, [g1, g2], edge_attr=ea), model.norm(h), rtol=0, atol=1e-6)


def test_final_norm_and_repr():
    model = GraphTransformer(2, C, H, dim_feedforward=FF)
    assert model.num_layers == 2 and model.layers[0].linear1.out_features == FF
    assert model.norm is not None
    post = GraphTransformer(1, C, H, norm_first=False)
    assert post.norm is None  # post-norm layers end with a norm already
    r = repr(model)
    assert "num_layers=2" in r and "embed_dim=16" in r and "dim_feedforward=24" in r


def test_reset_parameters_changes_weights():
    model = GraphTransformer(2, C, H, dim_feedforward=FF)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    model.reset_parameters()
    after = list(model.parameters())
    weights = [(b, a) for b, a in zip(before, after, strict=True) if b.dim() == 2]
    assert all(not torch.equal(a, torch.full_like(a, 0.5)) for _, a in weights)
    ln = model.norm
    assert torch.equal(ln.weight, torch.ones(C)) and torch.equal(ln.bias, torch.zeros(C))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activation": "swish"}, "activation must be"),
        ({"dim_feedforward": 0}, "dim_feedforward must be a positive int"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GraphTransformerLayer(C, H, **kwargs)


def test_other_constructor_errors():
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        GraphTransformer(0, C, H)
    with pytest.raises(TypeError, match="nn.TransformerEncoderLayer"):
        GraphTransformerLayer.from_transformer_encoder_layer(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.TransformerEncoder"):
        GraphTransformer.from_transformer_encoder(nn.Linear(2, 2))


def test_copy_of_a_sequence_first_layer_stays_batch_first(gen):
    """A TransformerEncoderLayer(batch_first=False) copies over; the copy takes (B, N, C)
    (its attention is set batch-first, since the layer hands it batch-first tensors)."""
    torch.manual_seed(1)
    ref = nn.TransformerEncoderLayer(C, H, FF, batch_first=False).eval()
    layer = GraphTransformerLayer.from_transformer_encoder_layer(ref).eval()
    assert layer.self_attn.batch_first
    x = torch.randn(7, 2, C, generator=gen)  # (N, B, C) for the reference
    torch.testing.assert_close(layer(x.transpose(0, 1)), ref(x).transpose(0, 1), rtol=0, atol=1e-5)
