"""graphattn.MultiheadAttention: nn.MultiheadAttention's constructor and call, with copied
weights giving MHA's outputs, weights and gradients, inside nn.TransformerEncoderLayer and
nn.TransformerDecoderLayer too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphattn import Graph, MultiheadAttention

E, H = 16, 4


def _pair(backend="auto", **kw):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, **kw)
    return mha, MultiheadAttention.from_multihead_attention(mha, backend=backend)


MASKS = {
    "none": lambda b, nq, s: {},
    "padding": lambda b, nq, s: {"key_padding_mask": torch.arange(s)[None].expand(b, s) >= s - 2},
    "float_padding": lambda b, nq, s: {"key_padding_mask": torch.randn(b, s)},
    "bool_2d": lambda b, nq, s: {"attn_mask": torch.rand(nq, s) > 0.7},
    "float_3d": lambda b, nq, s: {"attn_mask": torch.randn(b * H, nq, s)},
    "both": lambda b, nq, s: {
        "attn_mask": torch.randn(nq, s),
        "key_padding_mask": torch.arange(s)[None].expand(b, s) >= s - 1,
    },
}


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
@pytest.mark.parametrize("backend", ["dense", "edges"])
@pytest.mark.parametrize("extra", ["plain", "bias_kv", "zero_attn", "kdim"])
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_outputs_weights_and_gradients_match_mha(batch_first, mask, extra, backend):
    kw = {"batch_first": batch_first}
    kw |= {"bias_kv": {"add_bias_kv": True}, "zero_attn": {"add_zero_attn": True}}.get(extra, {})
    kw |= {"kdim": 6, "vdim": 5} if extra == "kdim" else {}
    mha, ours = _pair(backend, **kw)
    b, lq, s = 3, 5, 7
    gen = torch.Generator().manual_seed(1)

    def x(n, d):
        shape = (b, n, d) if batch_first else (n, b, d)
        return torch.randn(*shape, generator=gen, requires_grad=True)

    q, k, v = x(lq, E), x(s, kw.get("kdim", E)), x(s, kw.get("vdim", E))
    masks = MASKS[mask](b, lq, s)  # MHA pads them for bias_k / the zero key; so do we
    for average in (True, False):
        ref_out, ref_w = mha(q, k, v, average_attn_weights=average, **masks)
        out, w = ours(q, k, v, average_attn_weights=average, **masks)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    g_ref = torch.autograd.grad(ref_out.square().sum(), (q, k, v, *mha.parameters()))
    g = torch.autograd.grad(out.square().sum(), (q, k, v, *ours.parameters()))
    for a, r in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_need_weights_false_and_unbatched_inputs():
    mha, ours = _pair()
    x = torch.randn(5, E)  # unbatched (L, E)
    out, w = ours(x, x, x, need_weights=False)
    assert w is None
    torch.testing.assert_close(out, mha(x, x, x, need_weights=False)[0], rtol=0, atol=1e-6)
    out, w = ours(x, x, x)
    torch.testing.assert_close(w, mha(x, x, x)[1], rtol=0, atol=1e-6)


def test_a_fully_masked_row_is_zero_where_mha_gives_nan():
    mha, ours = _pair()
    x = torch.randn(4, 2, E)
    kpm = torch.tensor([[False] * 4, [True] * 4])
    assert torch.isnan(mha(x, x, x, key_padding_mask=kpm)[0][:, 1]).all()
    out = ours(x, x, x, key_padding_mask=kpm)[0]
    torch.testing.assert_close(out[:, 1], ours.out_proj.bias.expand(4, E))  # zero message


def test_is_causal_without_a_mask_uses_the_causal_graph():
    mha, ours = _pair()
    x = torch.randn(6, 2, E)
    mask = nn.Transformer.generate_square_subsequent_mask(6)
    ref = mha(x, x, x, attn_mask=mask, is_causal=True)[0]
    torch.testing.assert_close(ours(x, x, x, is_causal=True)[0], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_inside_transformer_layers(kind):
    torch.manual_seed(0)
    if kind == "encoder":
        layer = nn.TransformerEncoderLayer(E, H, 32, dropout=0.0, batch_first=True)
    else:
        layer = nn.TransformerDecoderLayer(E, H, 32, dropout=0.0, batch_first=True)
    x, mem = torch.randn(2, 6, E), torch.randn(2, 4, E)
    args = (x,) if kind == "encoder" else (x, mem)
    mask = nn.Transformer.generate_square_subsequent_mask(6)
    ref = layer(*args, src_mask=mask) if kind == "encoder" else layer(*args, tgt_mask=mask)
    layer.self_attn = MultiheadAttention.from_multihead_attention(layer.self_attn)
    if kind == "decoder":
        layer.multihead_attn = MultiheadAttention.from_multihead_attention(layer.multihead_attn)
    out = layer(*args, src_mask=mask) if kind == "encoder" else layer(*args, tgt_mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_attend_is_the_graph_native_call():
    _, ours = _pair(batch_first=True)
    x = torch.randn(2, 6, E)
    out = ours.attend(x, Graph.window(6, 1))
    res = ours.forward_with_weights(x, Graph.window(6, 1))  # GraphAttention's, inherited
    assert isinstance(out, torch.Tensor) and out.shape == (2, 6, E)
    torch.testing.assert_close(res.out, out)
    assert res.attention.values.shape[0] == 2
