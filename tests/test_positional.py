"""Positional and structural encodings: known values, the references they follow (PyTorch's
tutorial encoding, T5's buckets, Swin's index, PyG's Laplacian / random-walk transforms,
networkx shortest paths) and agreement of the dense and edge backends with each bias or
rotary embedding applied."""

from __future__ import annotations

import functools
import math

import networkx as nx
import pytest
import torch
from conftest import dense_reference
from torch import nn
from torch_geometric.data import Data
from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE

from graphattn import (
    AxialRotaryEmbedding,
    Graph,
    GraphAttention,
    LaplacianPE,
    LearnedPositionalEncoding,
    RelativePositionBias1D,
    RelativePositionBias2D,
    RotaryEmbedding,
    ShortestPathBias,
    SinusoidalPositionalEncoding,
    clustering_encoding,
    degree_encoding,
    graph_attention,
    laplacian_eigenpairs,
    laplacian_eigenvector_pe,
    random_walk_pe,
    shortest_path_distance,
    sinusoidal_2d,
    sinusoidal_encoding,
    t5_relative_position_bucket,
)
from graphattn.positional import _BucketLookup

H = 4

# ---------------------------------------------------------------------- absolute encodings


def test_sinusoidal_known_values():
    pe = sinusoidal_encoding(50, 8)
    assert pe.shape == (50, 8)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0] * 4))
    # position 1, pair i: sin / cos of 1 / 10000^(2i/8)
    want = [f(1 / 10000 ** (2 * i / 8)) for i in range(4) for f in (math.sin, math.cos)]
    torch.testing.assert_close(pe[1], torch.tensor(want))
    odd = sinusoidal_encoding(3, 5)  # an odd dim drops the last cosine
    assert odd.shape == (3, 5)
    torch.testing.assert_close(odd[1, 4], torch.tensor(math.sin(1 / 10000 ** (4 / 5))))


def test_sinusoidal_matches_pytorch_tutorial():
    """The encoding of PyTorch's "Language Modeling with nn.Transformer" tutorial."""
    n, d = 40, 16
    position = torch.arange(n).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    want = torch.zeros(n, d)
    want[:, 0::2] = torch.sin(position * div_term)
    want[:, 1::2] = torch.cos(position * div_term)
    torch.testing.assert_close(sinusoidal_encoding(n, d), want, rtol=0, atol=1e-5)


def test_sinusoidal_module(gen):
    enc = SinusoidalPositionalEncoding(8)
    x = torch.randn(2, 5, 8, generator=gen)
    torch.testing.assert_close(enc(x), x + sinusoidal_encoding(5, 8))
    torch.testing.assert_close(enc(x[0]), x[0] + sinusoidal_encoding(5, 8))
    pos = torch.tensor([[4, 3, 2, 1, 0], [0, 0, 1, 1, 2]])
    torch.testing.assert_close(enc(x, pos), x + sinusoidal_encoding(5, 8)[pos])
    torch.testing.assert_close(enc(x, pos[0]), x + sinusoidal_encoding(5, 8)[pos[0]])
    with pytest.raises(ValueError, match=r"positions must have shape \(N=5,\)"):
        enc(x, torch.arange(4))
    with pytest.raises(ValueError, match="feature size 8 but dim is 6"):
        SinusoidalPositionalEncoding(6)(x)


def test_sinusoidal_2d():
    pe = sinusoidal_2d(3, 5, 8)
    assert pe.shape == (15, 8)
    one_d = sinusoidal_encoding(5, 4)
    for r in range(3):
        for c in range(5):
            torch.testing.assert_close(pe[r * 5 + c], torch.cat([one_d[r], one_d[c]]))
    with pytest.raises(ValueError, match="divisible by 4.*got 6"):
        sinusoidal_2d(3, 5, 6)


def test_learned_positional_encoding(gen):
    enc = LearnedPositionalEncoding(10, 8)
    x = torch.randn(2, 6, 8, generator=gen)
    torch.testing.assert_close(enc(x), x + enc.weight[:6])
    pos = torch.tensor([[9, 0, 1, 2, 3, 4], [5, 5, 5, 5, 5, 5]])
    torch.testing.assert_close(enc(x, pos), x + enc.weight[pos])
    enc(x, pos).sum().backward()
    assert enc.weight.grad[[0, 1, 2, 3, 4, 5, 9]].abs().sum() > 0
    assert enc.weight.grad[[6, 7, 8]].abs().sum() == 0
    with pytest.raises(IndexError, match="position 12 is out of range for max_positions=10"):
        enc(torch.randn(13, 8))
    with pytest.raises(IndexError, match="position -1 is out of range"):
        enc(x, pos - 1)
    with pytest.raises(TypeError, match="positions must be integers"):
        enc(x, pos.float())
    assert "max_positions=10, dim=8" in repr(enc)
    before = enc.weight.detach().clone()
    enc.reset_parameters()
    assert not torch.equal(before, enc.weight)


# ---------------------------------------------------------------------- rotary


def _rope_reference(x, pos, base=10000.0):
    """RoPE as complex multiplication: channel pairs (f, f + Dh/2) are complex numbers
    rotated by exp(i * pos * base^(-2f/Dh))."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2 :].double())
    z = z * torch.polar(torch.ones_like(theta), pos.double()[:, None] * theta)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def test_rotary_matches_complex_reference(gen):
    rope = RotaryEmbedding(8)
    q = torch.randn(2, H, 6, 8, generator=gen)
    k = torch.randn(2, H, 6, 8, generator=gen)
    q2, k2 = rope(q, k)
    pos = torch.arange(6)
    torch.testing.assert_close(q2, _rope_reference(q, pos), rtol=0, atol=1e-5)
    torch.testing.assert_close(k2, _rope_reference(k, pos), rtol=0, atol=1e-5)
    torch.testing.assert_close(rope(q, k)[0][:, :, 0], q[:, :, 0])  # position 0: identity


def test_rotary_preserves_norms_and_depends_on_offsets_only(gen):
    rope = RotaryEmbedding(16, base=100.0)
    q = torch.randn(1, H, 7, 16, generator=gen)
    k = torch.randn(1, H, 7, 16, generator=gen)
    pos = torch.tensor([0, 3, 5, 9, 10, 20, 21])
    q2, k2 = rope(q, k, pos, pos)
    torch.testing.assert_close(q2.norm(dim=-1), q.norm(dim=-1))
    scores = q2 @ k2.transpose(-2, -1)
    q3, k3 = rope(q, k, pos + 37, pos + 37)  # shift every position: scores unchanged
    torch.testing.assert_close(q3 @ k3.transpose(-2, -1), scores, rtol=0, atol=1e-4)
    assert not torch.allclose(q3, q2)
    # the score of (q at p, k at p') depends on p - p' only
    same = torch.randn(1, 1, 1, 16, generator=gen)
    qa, ka = rope(same, same, torch.tensor([4]), torch.tensor([1]))
    qb, kb = rope(same, same, torch.tensor([13]), torch.tensor([10]))
    torch.testing.assert_close((qa * ka).sum(), (qb * kb).sum(), rtol=0, atol=1e-5)


def test_rotary_batched_positions_and_cross_attention(gen):
    rope = RotaryEmbedding(8)
    q = torch.randn(2, H, 3, 8, generator=gen)
    k = torch.randn(2, H, 5, 8, generator=gen)
    qp = torch.tensor([[0, 1, 2], [5, 6, 7]])
    kp = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    q2, k2 = rope(q, k, qp, kp)
    for b in range(2):
        torch.testing.assert_close(q2[b], rope.rotate(q[b], qp[b]))
        torch.testing.assert_close(k2[b], rope.rotate(k[b], kp[b]))
    with pytest.raises(ValueError, match="q has 3 nodes but k has 5.*q_pos and k_pos"):
        rope(q, k)
    with pytest.raises(ValueError, match=r"k_pos must have shape \(N=5,\)"):
        rope(q, k, qp[0], kp[0, :4])
    with pytest.raises(ValueError, match="head dim 8 but .* head_dim=4"):
        RotaryEmbedding(4)(q, q)
    with pytest.raises(ValueError, match="head_dim must be even"):
        RotaryEmbedding(5)


def test_axial_rotary_offsets_and_halves(gen):
    rope = AxialRotaryEmbedding(16, height=3, width=4)
    q = torch.randn(1, H, 12, 16, generator=gen)
    k = torch.randn(1, H, 12, 16, generator=gen)
    q2, k2 = rope(q, k)
    torch.testing.assert_close(q2.norm(dim=-1), q.norm(dim=-1))
    # each half is a 1-D rotary of head dim 8 at the row / column index
    grid = rope.grid_positions()
    half = RotaryEmbedding(8)
    torch.testing.assert_close(q2[..., :8], half.rotate(q[..., :8], grid[:, 0]))
    torch.testing.assert_close(q2[..., 8:], half.rotate(q[..., 8:], grid[:, 1]))
    # shift all cells by a 2-D offset: scores unchanged
    q3, k3 = rope(q, k, grid + torch.tensor([5, -2]), grid + torch.tensor([5, -2]))
    torch.testing.assert_close(
        q3 @ k3.transpose(-2, -1), q2 @ k2.transpose(-2, -1), rtol=0, atol=1e-4
    )
    # shifting rows only by different amounts for q and k changes the scores
    q4, k4 = rope(q, k, grid + torch.tensor([1, 0]), grid)
    assert not torch.allclose(q4 @ k4.transpose(-2, -1), q2 @ k2.transpose(-2, -1), atol=1e-3)
    with pytest.raises(ValueError, match="x has 5 nodes but the grid has height \\* width"):
        rope.rotate(q[:, :, :5])
    with pytest.raises(ValueError, match="divisible by 4"):
        AxialRotaryEmbedding(6, 2, 2)


@pytest.mark.parametrize("rope_kind", ["1d", "axial"])
def test_graph_attention_rotary_backends_agree(rope_kind, gen):
    torch.manual_seed(0)
    attn = GraphAttention(32, H)  # head dim 8
    if rope_kind == "1d":
        rope, g = RotaryEmbedding(8), Graph.window(12, radius=3)
    else:
        rope, g = AxialRotaryEmbedding(8, 3, 4), Graph.grid(3, 4, radius=1)
    x = torch.randn(2, 12, 32, generator=gen, requires_grad=True)
    outs, grads = [], []
    for backend in ("dense", "edges"):
        attn.backend = backend
        res = attn.forward_with_weights(x, g, rotary=rope)
        outs.append((res.out, res.attention.to_dense()))
        grads.append(torch.autograd.grad(res.out.sum(), x)[0])
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)
    attn.backend = "auto"
    assert not torch.allclose(attn(x, g, rotary=rope), attn(x, g), atol=1e-4)


def test_graph_attention_rotary_matches_reference(gen):
    """Rotary is applied to the projected q and k, before the scores."""
    torch.manual_seed(0)
    attn = GraphAttention(16, 2).eval()
    x = torch.randn(1, 5, 16, generator=gen)
    pos = torch.tensor([3, 1, 4, 1, 5])
    rope = RotaryEmbedding(8)
    got = attn(x, rotary=functools.partial(rope, q_pos=pos, k_pos=pos))
    q, k, v = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    q, k, v = (t.view(1, 5, 2, 8).transpose(1, 2) for t in (q, k, v))  # (B, H, N, Dh)
    q, k = _rope_reference(q, pos), _rope_reference(k, pos)
    out = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1) @ v
    want = attn.out_proj(out.transpose(1, 2).reshape(1, 5, 16))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_graph_attention_rotary_checks_its_result(gen):
    attn = GraphAttention(16, 2)
    x = torch.randn(5, 16, generator=gen)
    with pytest.raises(ValueError, match="rotary must keep the shapes"):
        attn(x, rotary=lambda q, k: (q[..., :2, :], k))
    with pytest.raises(TypeError, match="rotary must return a pair"):
        attn(x, rotary=lambda q, k: q)


# ---------------------------------------------------------------------- relative biases


def _t5_bucket_reference(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """``T5Attention._relative_position_bucket`` of Hugging Face transformers, verbatim."""
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    relative_position_if_large = max_exact + (
        torch.log(relative_position.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    relative_position_if_large = torch.min(
        relative_position_if_large, torch.full_like(relative_position_if_large, num_buckets - 1)
    )
    relative_buckets += torch.where(is_small, relative_position, relative_position_if_large)
    return relative_buckets


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 20)])
def test_t5_buckets_match_reference(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-300, 301)
    got = t5_relative_position_bucket(
        rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    want = _t5_bucket_reference(rel, bidirectional, num_buckets, max_distance)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert int(got.min()) >= 0 and int(got.max()) == num_buckets - 1


def test_t5_bucket_known_values():
    rel = torch.tensor([0, -1, -7, 1, 7])
    torch.testing.assert_close(t5_relative_position_bucket(rel), torch.tensor([0, 1, 7, 17, 23]))


def test_relative_bias_1d_per_edge_and_dense(gen):
    rpb = RelativePositionBias1D(H, num_buckets=8, max_distance=16)
    g = Graph.window(10, radius=3)
    per_edge = rpb(g)
    src, dst = g.edge_index()
    assert per_edge.shape == (g.num_edges, H)
    dense = rpb.dense(10)  # (H, N, N)
    assert dense.shape == (H, 10, 10)
    torch.testing.assert_close(per_edge, dense[:, dst, src].T)
    torch.testing.assert_close(per_edge, rpb.relative_attention_bias.weight[rpb.bucket(src - dst)])
    # explicit positions: every node at the same position -> the bucket of distance 0
    same = rpb(g, dst_pos=torch.zeros(10, dtype=torch.long), src_pos=torch.zeros(10).long())
    torch.testing.assert_close(same, rpb.relative_attention_bias.weight[0].expand_as(same))
    assert rpb.dense(3, 5).shape == (H, 3, 5)
    with pytest.raises(ValueError, match="max_distance"):
        RelativePositionBias1D(H, num_buckets=32, max_distance=8)


def test_relative_bias_2d_matches_swin_index():
    h, w = 3, 4
    rpb = RelativePositionBias2D(H, h, w)
    # Swin Transformer's relative_position_index
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
    flat = torch.flatten(coords, 1)  # (2, N)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # (N, N, 2)
    rel[:, :, 0] += h - 1
    rel[:, :, 1] += w - 1
    rel[:, :, 0] *= 2 * w - 1
    index = rel.sum(-1)  # (N, N)
    want = rpb.relative_position_bias_table[index.view(-1)].view(h * w, h * w, H).permute(2, 0, 1)
    torch.testing.assert_close(rpb.dense(), want, rtol=0, atol=0)
    g = Graph.grid(h, w, radius=1)
    src, dst = g.edge_index()
    torch.testing.assert_close(rpb(g), want[:, dst, src].T, rtol=0, atol=0)
    with pytest.raises(ValueError, match="height \\* width = 3 \\* 4 = 12 cells"):
        rpb(Graph.window(10, 2))
    with pytest.raises(IndexError, match="node 12, out of range"):
        rpb(torch.tensor([[0, 12], [1, 2]]))


def _spd_setup():
    ei = torch.tensor([[0, 1, 2, 3, 5, 6, 2], [1, 2, 3, 4, 6, 7, 7]])  # two pieces + node 8
    return ei, 9


def _check_backends_agree_with_bias(g: Graph, bias_edges, bias_dense, gen):
    q = torch.randn(2, H, g.num_dst, 8, generator=gen, requires_grad=True)
    k = torch.randn(2, H, g.num_src, 8, generator=gen)
    v = torch.randn(2, H, g.num_src, 8, generator=gen)
    outs = [
        graph_attention(q, k, v, g, attn_bias=bias_edges, backend=b) for b in ("dense", "edges")
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-5)
    mask = g.materialize().long()
    want = dense_reference(q, k, v, mask, bias=bias_dense)
    torch.testing.assert_close(outs[1], want, rtol=0, atol=1e-5)
    grads = [torch.autograd.grad(o.sum(), q, retain_graph=True)[0] for o in outs]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)


def _bias_case(kind: str):
    """(graph, per-edge bias fn, dense bias fn) for one relative-bias module."""
    torch.manual_seed(0)
    if kind == "1d":
        module, g = RelativePositionBias1D(H, 8, 16), Graph.window(12, radius=4)
        per_edge, dense = module, lambda: module.dense(12)
    elif kind == "2d":
        module, g = RelativePositionBias2D(H, 3, 4), Graph.grid(3, 4, radius=1)
        per_edge, dense = module, module.dense
    else:
        ei, n = _spd_setup()
        ei = torch.cat([ei, ei.flip(0), torch.tensor([[4, 8], [0, 8]])], dim=1)
        g = Graph.from_edge_index(ei, n)
        module, spd = ShortestPathBias(H, max_distance=3), shortest_path_distance(ei, n)
        per_edge, dense = functools.partial(module, spd), functools.partial(module, spd)
    for p in module.parameters():
        torch.nn.init.normal_(p)  # large enough to matter
    return g, per_edge, dense


@pytest.mark.parametrize("kind", ["1d", "2d", "spd"])
def test_backends_agree_with_relative_bias(kind, gen):
    g, per_edge, dense = _bias_case(kind)
    edges, full = per_edge(g), dense()  # (E, H), (H, N, N)
    assert edges.shape == (g.num_edges, H) and full.shape == (H, g.num_dst, g.num_src)
    _check_backends_agree_with_bias(g, edges, full, gen)


@pytest.mark.parametrize("kind", ["1d", "2d", "spd"])
def test_relative_bias_dense_equals_per_edge_on_complete_graph(kind, gen):
    """Through GraphAttention: the dense bias on the complete graph equals the per-edge bias
    of the complete graph given as an edge list (edge backend)."""
    g, per_edge, dense = _bias_case(kind)
    n = g.num_dst
    complete = Graph.complete(n).edge_index()
    attn = GraphAttention(32, H, backend="dense")
    x = torch.randn(2, n, 32, generator=gen)
    want = attn(x, None, attn_bias=dense()[None])
    attn.backend = "edges"
    got = attn(x, complete, attn_bias=per_edge(Graph.from_edge_index(complete, n)))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- graph encodings


def _random_connected_graph(n: int, gen: torch.Generator) -> torch.Tensor:
    """An undirected (both directions) connected graph: a path plus random chords."""
    src = torch.cat([torch.arange(n - 1), torch.randint(0, n, (n,), generator=gen)])
    dst = torch.cat([torch.arange(1, n), torch.randint(0, n, (n,), generator=gen)])
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    ei = torch.cat([ei, ei.flip(0)], dim=1)
    return torch.unique(ei, dim=1)


def _sym_laplacian(ei: torch.Tensor, n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.float64)
    a[ei[0], ei[1]] = 1.0
    d = a.sum(1).rsqrt()
    return torch.eye(n, dtype=torch.float64) - d[:, None] * a * d


def test_laplacian_pe_eigen_equation_and_pyg(gen):
    n, k = 12, 4
    ei = _random_connected_graph(n, gen)
    pe, vals = laplacian_eigenpairs(ei, n, k)
    assert pe.shape == (n, k) and vals.shape == (k,)
    lap = _sym_laplacian(ei, n)
    torch.testing.assert_close(lap @ pe.double(), pe.double() * vals.double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(pe.T @ pe, torch.eye(k), rtol=0, atol=1e-5)
    assert bool((vals > 1e-6).all()) and bool((vals[1:] >= vals[:-1]).all())
    # PyG's transform: the same eigenvectors up to sign (the spectrum is simple here)
    ref = AddLaplacianEigenvectorPE(k, is_undirected=True)(Data(edge_index=ei, num_nodes=n))
    ref_pe = ref.laplacian_eigenvector_pe.float()
    signs = torch.sign((ref_pe * pe).sum(0))
    torch.testing.assert_close(pe * signs, ref_pe, rtol=0, atol=1e-4)
    # a Graph gives the same
    torch.testing.assert_close(laplacian_eigenvector_pe(Graph.from_edge_index(ei, n), k=k), pe)


def test_laplacian_pe_pads_small_graphs():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # path of 3 nodes
    pe, vals = laplacian_eigenpairs(ei, 3, 5)
    assert pe.shape == (3, 5)
    assert bool((pe[:, 2:] == 0).all()) and bool((vals[2:] == 0).all())
    torch.testing.assert_close(vals[:2], torch.tensor([1.0, 2.0]))  # path P3: 0, 1, 2
    with pytest.raises(IndexError, match="node 3, out of range for num_nodes=3"):
        laplacian_eigenvector_pe(torch.tensor([[0], [3]]), 3, 2)


def test_laplacian_pe_module_flips_signs_in_training_only(gen):
    enc = LaplacianPE(k=3, dim=3)
    with torch.no_grad():  # identity projection: the output shows the signs
        enc.proj.weight.copy_(torch.eye(3))
        enc.proj.bias.zero_()
    vecs = torch.rand(6, 3, generator=gen) + 0.5
    enc.eval()
    torch.testing.assert_close(enc(vecs), vecs)
    enc.train()
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        signs = enc(vecs) / vecs  # (N, K): one sign per eigenvector, the same for every node
        assert bool((signs.abs() == 1).all()) and bool((signs == signs[0]).all())
        seen.add(tuple(signs[0].tolist()))
    assert len(seen) > 1
    batched = enc(vecs.expand(4, 6, 3)) / vecs  # (B, N, K): signs per sample
    assert bool((batched == batched[:, :1]).all())
    assert LaplacianPE(3, 8)(torch.randn(2, 6, 3, generator=gen)).shape == (2, 6, 8)
    with pytest.raises(ValueError, match=r"eigvecs must have shape \(N, K=3\)"):
        enc(torch.randn(6, 4))


def test_random_walk_pe_cycle_known_values():
    n = 7
    src = torch.arange(n)
    ei = torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([(src + 1) % n, src])], dim=1)
    pe = random_walk_pe(ei, n, 4)
    # return after 1 step: 0; 2 steps: 1/2 (go and come back); 3: 0 (odd, cycle of 7 > 3);
    # 4 steps: C(4, 2) = 6 closed walks of 2^4 = 16 -> 3/8
    want = torch.tensor([0.0, 0.5, 0.0, 0.375]).expand(n, 4)
    torch.testing.assert_close(pe, want, rtol=0, atol=1e-6)


def test_random_walk_pe_matches_pyg(gen):
    n = 10
    ei = torch.unique(torch.randint(0, n, (2, 30), generator=gen), dim=1)  # directed, loops
    ref = AddRandomWalkPE(5)(Data(edge_index=ei, num_nodes=n)).random_walk_pe
    torch.testing.assert_close(random_walk_pe(ei, n, 5), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(random_walk_pe(Graph.from_edge_index(ei, n), k=5), ref)


def test_random_walk_pe_blocks_match_dense_powers(gen):
    """Any column block gives the diagonal of the dense powers of ``P = D_out^-1 A``, on a
    directed graph with duplicate edges, self-loops and nodes without out-edges."""
    n = 25
    ei = torch.randint(0, n, (2, 40), generator=gen)
    adj = torch.zeros(n, n, dtype=torch.float64).index_put_(
        (ei[0], ei[1]), torch.ones(40, dtype=torch.float64), accumulate=True
    )
    walk = adj / adj.sum(1, keepdim=True).clamp(min=1)
    assert (adj.sum(1) == 0).any()
    power, want = torch.eye(n, dtype=torch.float64), []
    for _ in range(6):
        power = power @ walk
        want.append(power.diagonal())
    want = torch.stack(want, -1).float()  # (N, 6)
    for block in (None, 1, 7, n, 100):
        torch.testing.assert_close(random_walk_pe(ei, n, 6, block=block), want)
    assert random_walk_pe(torch.zeros(2, 0, dtype=torch.long), 0, 3).shape == (0, 3)
    with pytest.raises(ValueError, match="block"):
        random_walk_pe(ei, n, 6, block=0)


def test_degree_encoding_is_the_standardised_log_in_degree():
    """In-degrees 2, 1, 0 (node 0's self-loop not counted) give log(1 + d) standardised over
    the nodes; a Graph gives the edge list's numbers; a regular graph gets zeros."""
    ei = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 0]])
    log_deg = torch.log1p(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    want = ((log_deg - log_deg.mean()) / log_deg.std()).float()[:, None]
    torch.testing.assert_close(degree_encoding(ei, 3), want)
    torch.testing.assert_close(degree_encoding(Graph.from_edge_index(ei, 3)), want)
    ring = torch.tensor([[0, 1, 2], [1, 2, 0]])
    assert degree_encoding(ring).equal(torch.zeros(3, 1))
    assert degree_encoding(ring[:, :0], 1).equal(torch.zeros(1, 1))


def test_degree_encoding_matches_pyg_degree(gen):
    """PyG's ``utils.degree`` of the targets, self-loops removed, log1p, standardised; a
    graph of 10^5 nodes stays sparse (no (N, N) matrix)."""
    from torch_geometric.utils import degree, remove_self_loops

    n = 50
    ei = torch.randint(0, n, (2, 400), generator=gen)  # duplicates and self-loops included
    deg = torch.log1p(degree(remove_self_loops(ei)[0][1], n, dtype=torch.float64))
    want = ((deg - deg.mean()) / deg.std()).float()[:, None]
    torch.testing.assert_close(degree_encoding(ei, n), want)
    big = degree_encoding(torch.randint(0, 100_000, (2, 400_000), generator=gen), 100_000)
    assert big.shape == (100_000, 1) and torch.isfinite(big).all()
    assert abs(big.mean().item()) < 1e-4 and abs(big.std().item() - 1) < 1e-4


def test_degree_encoding_refuses_bad_graphs():
    with pytest.raises(IndexError, match="node 5, out of range for num_nodes=3"):
        degree_encoding(torch.tensor([[0], [5]]), 3)
    with pytest.raises(ValueError, match="num_nodes=4 but the graph has 3 nodes"):
        degree_encoding(Graph.from_edge_index(torch.tensor([[0], [1]]), 3), 4)
    with pytest.raises(ValueError, match=r"edge_index must be an integer tensor of shape \(2, E\)"):
        degree_encoding(torch.zeros(3, 2, dtype=torch.long))


def test_clustering_encoding_hand_computed():
    """A triangle 0-1-2 with a tail 2-3: nodes 0 and 1 sit in a closed triangle (1), node 2
    has one joined pair of its three (1/3), node 3 one neighbour (0); direction, duplicates
    and self-loops do not change it; a Graph gives the edge list's numbers."""
    ei = torch.tensor([[0, 1, 2, 2, 1, 3, 3], [1, 2, 0, 3, 0, 3, 2]])
    want = torch.tensor([[1.0], [1.0], [1 / 3], [0.0]])
    torch.testing.assert_close(clustering_encoding(ei, 4), want)
    torch.testing.assert_close(clustering_encoding(Graph.from_edge_index(ei, 4)), want)
    torch.testing.assert_close(clustering_encoding(ei, 6), torch.cat([want, torch.zeros(2, 1)]))
    assert clustering_encoding(ei[:, :0], 3).equal(torch.zeros(3, 1))


@pytest.mark.parametrize("block", [1, 7, 1024])
def test_clustering_encoding_matches_networkx(gen, block):
    """networkx's ``clustering`` of the undirected simple graph, for any column block."""
    n = 60
    ei = torch.randint(0, n, (2, 500), generator=gen)  # duplicates and self-loops included
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((a, b) for a, b in ei.T.tolist() if a != b)
    want = torch.tensor([[nx.clustering(graph, i)] for i in range(n)], dtype=torch.float32)
    torch.testing.assert_close(clustering_encoding(ei, n, block=block), want)


def test_clustering_encoding_stays_sparse(gen):
    """A graph of 2 * 10^4 nodes (no (N, N) matrix: it would take 3.2 GB in float64): the
    coefficients lie in [0, 1], and a clique planted in it gets 1 on the nodes it alone
    joins."""
    n = 20_000
    ei = torch.randint(0, n, (2, 100_000), generator=gen)
    clique = torch.arange(n, n + 5)
    pairs = torch.cartesian_prod(clique, clique).T  # (2, 25), self-loops dropped
    cc = clustering_encoding(torch.cat([ei, pairs], 1), n + 5)
    assert cc.shape == (n + 5, 1) and bool(((cc >= 0) & (cc <= 1)).all())
    assert cc[n:].equal(torch.ones(5, 1))


def test_clustering_encoding_refuses_bad_arguments():
    with pytest.raises(IndexError, match="node 5, out of range for num_nodes=3"):
        clustering_encoding(torch.tensor([[0], [5]]), 3)
    with pytest.raises(ValueError, match="block"):
        clustering_encoding(torch.tensor([[0], [1]]), 2, block=0)
    with pytest.raises(ValueError, match="graph encodings need a square graph"):
        clustering_encoding(Graph.complete(3, 4))


def _networkx_hops(ei: torch.Tensor, n: int, directed: bool = False) -> torch.Tensor:
    """networkx's all-pairs hop counts in the attention layout: ``[i, j]`` is the number of
    hops from source ``j`` to target ``i``, -1 if unreachable.

    Shapes:
        - ei: ``(2, E)``; returns ``(N, N)`` int64
    """
    graph = nx.DiGraph() if directed else nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(ei.T.tolist())
    want = torch.full((n, n), -1)
    for j, lengths in nx.all_pairs_shortest_path_length(graph):  # from source j
        for i, d in lengths.items():
            want[i, j] = d
    return want


def test_shortest_path_distance_path_graph():
    n = 6
    ei = torch.stack([torch.arange(n - 1), torch.arange(1, n)])  # 0 -> 1 -> ... -> 5
    spd = shortest_path_distance(ei, n)
    idx = torch.arange(n)
    torch.testing.assert_close(spd, (idx[:, None] - idx[None]).abs())
    directed = shortest_path_distance(ei, n, directed=True)  # [i, j]: hops from j to i
    want = torch.where(idx[:, None] >= idx[None], idx[:, None] - idx[None], -1)
    torch.testing.assert_close(directed, want)


def test_shortest_path_distance_matches_networkx(gen):
    ei, n = _spd_setup()
    ei = torch.cat([ei, torch.randint(0, 5, (2, 4), generator=gen)], dim=1)
    spd = shortest_path_distance(ei, n)
    want = _networkx_hops(ei, n)
    torch.testing.assert_close(spd, want)
    assert spd[8, 0] == -1 and spd[8, 8] == 0
    # max_distance: farther connected pairs get max_distance + 1, unreachable stays -1
    capped = shortest_path_distance(ei, n, max_distance=2)
    torch.testing.assert_close(capped, torch.where(want > 2, 3, want))
    idx = torch.arange(40)
    path = torch.stack([idx[:-1], idx[1:]])
    far = shortest_path_distance(path, 40, max_distance=3)
    torch.testing.assert_close(far, (idx[:, None] - idx[None]).abs().clamp(max=4))


@pytest.mark.parametrize("max_distance", [1, 2, 3, 6, 50])
@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int64])
def test_shortest_path_distance_stops_at_max_distance(gen, max_distance, dtype):
    """Undirected with ``max_distance``, the search stops there and the connected components
    tell farther pairs (``max_distance + 1``) from unreachable ones (-1): the same as the
    full search, capped, on a graph of several components (a long path, a random part,
    isolated nodes), in any integer dtype."""
    idx = torch.arange(12)
    path = torch.stack([idx[:-1], idx[1:]])  # nodes 0-11, diameter 11
    rand = torch.randint(12, 30, (2, 25), generator=gen)  # nodes 12-29, maybe split
    ei = torch.cat([path, rand], 1)  # nodes 30-33 have no edges
    n = 34
    want = _networkx_hops(ei, n)
    got = shortest_path_distance(ei, n, max_distance=max_distance, dtype=dtype)
    assert got.dtype == dtype
    capped = torch.where(want > max_distance, max_distance + 1, want)
    torch.testing.assert_close(got.long(), capped)


def test_shortest_path_distance_dtype_errors():
    idx = torch.arange(200)
    path = torch.stack([idx[:-1], idx[1:]])  # 199 hops end to end
    with pytest.raises(TypeError, match="dtype must be one of"):
        shortest_path_distance(path, 200, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"max_distance=127: dtype=torch.int8 holds .* 127"):
        shortest_path_distance(path, 200, max_distance=127, dtype=torch.int8)
    with pytest.raises(ValueError, match="128 hops apart; pass max_distance or a wider"):
        shortest_path_distance(path, 200, dtype=torch.int8)
    for directed in (False, True):  # directed: the search runs on, capped at 101
        got = shortest_path_distance(path, 200, max_distance=100, dtype=torch.int8,
                                     directed=directed)  # fmt: skip
        hops = idx[:, None] - idx[None]  # [i, j]: from j to i
        want = (hops.abs() if not directed else torch.where(hops >= 0, hops, -1)).clamp(max=101)
        torch.testing.assert_close(got.long(), want)
    assert shortest_path_distance(path, 200, dtype=torch.int16).max() == 199
    # the search counts hops in the narrowest integer that holds N (int16 here), then widens
    torch.testing.assert_close(shortest_path_distance(path, 200), (idx[:, None] - idx[None]).abs())


def test_shortest_path_distance_directed_matches_networkx(gen):
    """Directed hops on a random digraph with duplicate edges and self-loops, with and
    without ``max_distance`` (one sparse product per hop, to the diameter)."""
    n = 30
    ei = torch.randint(0, n, (2, 45), generator=gen)
    want = _networkx_hops(ei, n, directed=True)
    assert (want < 0).any() and want.max() > 3
    torch.testing.assert_close(shortest_path_distance(ei, n, directed=True), want)
    capped = shortest_path_distance(Graph.from_edge_index(ei, n), directed=True, max_distance=3)
    torch.testing.assert_close(capped, torch.where(want > 3, 4, want))
    assert shortest_path_distance(torch.zeros(2, 0, dtype=torch.long), 0).shape == (0, 0)


def test_shortest_path_bias_buckets(gen):
    spb = ShortestPathBias(H, max_distance=2)
    spd = torch.tensor([[0, 1, 2], [3, 7, -1], [-1, 2, 1]])
    torch.testing.assert_close(spb.bucket(spd), torch.tensor([[0, 1, 2], [2, 2, 3], [3, 2, 1]]))
    dense = spb(spd)
    assert dense.shape == (H, 3, 3)
    torch.testing.assert_close(dense[:, 1, 2], spb.spatial_bias.weight[3])
    batched = spb(torch.stack([spd, spd]))
    assert batched.shape == (2, H, 3, 3)
    ei = torch.tensor([[0, 2], [1, 1]])
    # edge 0 -> 1 has distance spd[1, 0] = 3 (clipped to 2), edge 2 -> 1 is unreachable
    torch.testing.assert_close(spb(spd, ei), spb.spatial_bias.weight[[2, 3]])
    assert spb(torch.stack([spd, spd]), ei).shape == (2, 2, H)
    with pytest.raises(TypeError, match="distances must be integers"):
        spb(spd.float())
    with pytest.raises(ValueError, match="graph has num_dst=4"):
        spb(spd, Graph.complete(4))
    # lookup: forward's dense bias from buckets a caller keeps (no re-bucketing, so the
    # unreachable bucket 3 stays 3 instead of being clipped to 2)
    torch.testing.assert_close(spb.lookup(spb.bucket(spd)), dense)
    torch.testing.assert_close(spb.lookup(spb.bucket(torch.stack([spd, spd]))), batched)
    with pytest.raises(TypeError, match="buckets must be int64"):
        spb.lookup(spb.bucket(spd).int())
    with pytest.raises(ValueError, match=r"buckets must be a tensor of shape \(\[B,\] Nd, Ns\)"):
        spb.lookup(spb.bucket(spd)[0])


def test_shortest_path_bias_dense_gradient(gen):
    """The dense bias's bincount backward (CPU) passes float64 gradcheck and gives
    ``nn.Embedding``'s gradient, batched or not."""
    spb = ShortestPathBias(H, max_distance=3).double()
    spd = torch.randint(-1, 6, (2, 7, 5), generator=gen)
    table = spb.spatial_bias.weight.detach().clone().requires_grad_(True)
    lookup = _BucketLookup.apply
    assert torch.autograd.gradcheck(lambda t: lookup(t, spb.bucket(spd)), (table,))
    assert torch.autograd.gradcheck(lambda t: lookup(t, spb.bucket(spd[0])), (table,))
    grad = torch.randn(2, H, 7, 5, generator=gen, dtype=torch.float64)
    spb(spd).backward(grad)
    ref = nn.Embedding.from_pretrained(table.detach(), freeze=False)
    ref(spb.bucket(spd)).movedim(-1, -3).backward(grad)
    torch.testing.assert_close(spb.spatial_bias.weight.grad, ref.weight.grad)


def test_encoding_modules_repr_and_reset():
    mods = [
        RelativePositionBias1D(H),
        RelativePositionBias2D(H, 2, 3),
        ShortestPathBias(H, 5),
        LaplacianPE(4, 8),
    ]
    for m in mods:
        before = [p.detach().clone() for p in m.parameters()]
        m.reset_parameters()
        assert any(not torch.equal(b, p) for b, p in zip(before, m.parameters(), strict=True))
        assert "num_heads=4" in repr(m) or "k=4" in repr(m)
    assert "head_dim=8" in repr(RotaryEmbedding(8))
    assert "height=2, width=3" in repr(AxialRotaryEmbedding(8, 2, 3))
