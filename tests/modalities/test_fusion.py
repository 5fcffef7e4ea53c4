"""Fusion: exact edges per mode (against hand-built masks), padding, modality summaries."""

from __future__ import annotations

import pytest
import torch

from graphattn import Graph, GraphAttention, GraphTransformer
from modalities import (
    LATENT,
    AudioFrameAdapter,
    FusedGraph,
    ModalityAttention,
    ModalityFusion,
    ModalityTransformer,
    NodeSet,
    PatchAdapter,
    TextAdapter,
    fuse,
)

D = 8


def nodes(name: str, n: int, lengths: list[int] | None = None, **kw) -> NodeSet:
    g = torch.Generator().manual_seed(n)
    lengths = lengths or [n, n]
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    return NodeSet(torch.randn(len(lengths), n, D, generator=g), mask, modality=name, **kw)


def hand_mask(sizes: list[int], blocks: list[tuple[int, int]]) -> torch.Tensor:
    """``(N, N)``: ``True`` on every (target part, source part) block listed."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    n = sum(sizes)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for dst, src in blocks:
        mask[starts[dst] : starts[dst] + sizes[dst], starts[src] : starts[src] + sizes[src]] = True
    return mask


def test_complete_mode() -> None:
    fused = fuse([nodes("text", 3), nodes("image", 4)])
    assert fused.graph.is_complete and fused.graph.key_padding_mask is None
    assert fused.modality_names == ("text", "image")
    assert fused.modality_ids.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert fused.slices == {"text": (0, 3), "image": (3, 7)}


@pytest.mark.parametrize("symmetric", [True, False])
def test_intra_cross_mode_exact_edges(symmetric: bool) -> None:
    parts = [nodes("text", 2), nodes("image", 3), nodes("audio", 4)]
    fused = fuse(parts, mode="intra+cross", cross_links=[("text", "image")], symmetric=symmetric)
    blocks = [(0, 0), (1, 1), (2, 2), (0, 1)] + ([(1, 0)] if symmetric else [])
    assert torch.equal(fused.graph.materialize(), hand_mask([2, 3, 4], blocks))
    assert fused.graph.edge_counts() is None  # no duplicated edge
    ei = fused.graph.edge_index()
    assert bool((ei[1][1:] >= ei[1][:-1]).all())  # sorted by target


def test_intra_only_when_no_cross_links() -> None:
    fused = fuse([nodes("text", 2), nodes("image", 3)], mode="intra+cross")
    assert torch.equal(fused.graph.materialize(), hand_mask([2, 3], [(0, 0), (1, 1)]))


def test_bottleneck_mode_exact_edges() -> None:
    fused = fuse([nodes("text", 2), nodes("image", 3)], mode="bottleneck", num_latents=2)
    assert fused.modality_names == ("text", "image", LATENT)
    assert fused.nodes.num_nodes == 7 and fused.nodes.mask[:, 5:].all()
    blocks = [(0, 0), (1, 1), (2, 2), (2, 0), (0, 2), (2, 1), (1, 2)]
    assert torch.equal(fused.graph.materialize(), hand_mask([2, 3, 2], blocks))


def test_intra_own_uses_each_structure() -> None:
    text = nodes("text", 3, graph_kind="causal")
    image = nodes("image", 4, grid_shape=(2, 2), graph_kind="grid", graph_radius=1)
    fused = fuse([text, image], mode="intra+cross", cross_links=[("text", "image")], intra="own")
    want = hand_mask([3, 4], [(0, 1), (1, 0)])  # symmetric link
    want[:3, :3] = Graph.causal(3).materialize()
    want[3:, 3:] = Graph.grid(2, 2, 1).materialize()
    assert torch.equal(fused.graph.materialize(), want)


@pytest.mark.parametrize("mode", ["complete", "intra+cross", "bottleneck"])
def test_padding_is_attached_as_key_padding(mode: str) -> None:
    text = nodes("text", 3, lengths=[1, 3])
    image = nodes("image", 2, lengths=[2, 2])
    kw = {"num_latents": 1} if mode == "bottleneck" else {}
    fused = fuse([text, image], mode=mode, **kw)
    kpm = fused.graph.key_padding_mask
    assert kpm is not None and torch.equal(kpm, ~fused.nodes.mask)
    dense = fused.graph.materialize()  # (B, N, N)
    assert not dense[0, :, 1:3].any()  # padded text nodes of sample 0 send nothing
    assert torch.equal(dense, fused.graph.materialize_structure()[None] & fused.nodes.mask[:, None])


@pytest.mark.parametrize("mode", ["complete", "intra+cross", "bottleneck"])
def test_padding_invariance_through_attention(mode: str) -> None:
    """Extra padded text nodes never change the real nodes' outputs."""
    torch.manual_seed(0)
    attn = GraphAttention(D, 2).eval()
    text, image = nodes("text", 3), nodes("image", 4)
    garbage = torch.randn(2, 2, D) * 50
    text_padded = NodeSet(
        torch.cat([text.features, garbage], 1),
        torch.cat([text.mask, torch.zeros(2, 2, dtype=torch.bool)], 1),
        modality="text",
    )
    kw: dict = {"num_latents": 2} if mode == "bottleneck" else {}
    if mode == "intra+cross":
        kw["cross_links"] = [("image", "text")]
    a = fuse([text, image], mode=mode, **kw)
    b = fuse([text_padded, image], mode=mode, **kw)
    out_a = attn(a.nodes.features, a.graph)
    out_b = attn(b.nodes.features, b.graph)
    keep = torch.tensor([0, 1, 2, 5, 6, 7, 8] + ([9, 10] if mode == "bottleneck" else []))
    torch.testing.assert_close(out_b[:, keep], out_a)


def test_modality_summary() -> None:
    fused = fuse([nodes("text", 2, lengths=[2, 1]), nodes("image", 2)])
    w = torch.zeros(2, 1, 4, 4)  # (B, H, N, N)
    w[:, :, :, 0] = 1.0  # everything attends to the first text node ...
    w[1, :, 3, 0], w[1, :, 3, 2] = 0.5, 0.5  # ... except image node 3 of sample 1: half
    summary = fused.modality_summary(w)
    torch.testing.assert_close(summary, torch.tensor([[1.0, 0.0], [0.875, 0.125]]))
    # from real attention weights: rows sum to 1
    attn = GraphAttention(D, 2)
    res = attn.forward_with_weights(fused.nodes.features, fused.graph)
    torch.testing.assert_close(fused.modality_summary(res.attention).sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="N=4"):
        fused.modality_summary(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        fused.pair_mask("audio", "text")
    assert fused.pair_mask("text", "image").sum() == 4


def test_fuse_errors() -> None:
    t, i = nodes("text", 2), nodes("image", 3)
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        fuse([t, i], mode="intra+cross", cross_links=[("text", "audio")])
    with pytest.raises(ValueError, match="links 'text' to itself"):
        fuse([t, i], mode="intra+cross", cross_links=[("text", "text")])
    with pytest.raises(ValueError, match="'text' appears twice"):
        fuse([t, nodes("text", 3)])
    with pytest.raises(ValueError, match="cross_links applies to mode='intra\\+cross' only"):
        fuse([t, i], cross_links=[("text", "image")])
    with pytest.raises(ValueError, match="apply to mode='bottleneck' only"):
        fuse([t, i], num_latents=2)
    with pytest.raises(ValueError, match="needs num_latents or latents"):
        fuse([t, i], mode="bottleneck")
    with pytest.raises(ValueError, match="'latent' is reserved"):
        fuse([nodes(LATENT, 2)], mode="bottleneck", num_latents=1)
    with pytest.raises(ValueError, match="mixes modalities"):
        fuse([NodeSet.concat(t, i)])
    with pytest.raises(ValueError, match="mode must be one of"):
        fuse([t], mode="late")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"latents must have shape \(L, D=8\)"):
        fuse([t], mode="bottleneck", latents=torch.zeros(2, 5))


def test_modality_fusion_module() -> None:
    torch.manual_seed(0)
    fusion = ModalityFusion(D, ("text", "image"), num_latents=3)
    t, i = nodes("text", 2, lengths=[1, 2]), nodes("image", 3)
    fused = fusion([t, i])  # bottleneck by default
    assert fused.mode == "bottleneck" and fused.nodes.num_nodes == 8
    emb = fusion.modality_embedding
    torch.testing.assert_close(fused.nodes.features[:, :2], t.features + emb[0])
    torch.testing.assert_close(fused.nodes.features[:, 2:5], i.features + emb[1])
    torch.testing.assert_close(fused.nodes.features[:, 5:], fusion.latents.expand(2, 3, D))
    # order of the node sets does not change which embedding a modality gets
    swapped = fusion([i, t], mode="complete")
    torch.testing.assert_close(swapped.nodes.features[:, 3:], t.features + emb[0])
    # every parameter receives a gradient through attention over the fused graph
    attn = GraphAttention(D, 2)
    out = attn(fused.nodes.features, fused.graph)
    (out * fused.nodes.mask[..., None]).square().sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_modality_fusion_errors() -> None:
    fusion = ModalityFusion(D, ("text", "image"))
    with pytest.raises(ValueError, match="needs latents"):
        fusion([nodes("text", 2)], mode="bottleneck")
    with pytest.raises(ValueError, match="modality 'audio', not one of"):
        fusion([nodes("audio", 2)])
    with pytest.raises(ValueError, match="feature size 4 but dim=8"):
        fusion([NodeSet(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), modality="text")])
    with pytest.raises(ValueError, match="distinct strings"):
        ModalityFusion(D, ("text", "text"))
    with pytest.raises(ValueError, match="num_latents must be >= 0, got -1"):
        ModalityFusion(D, ("text",), num_latents=-1)


def test_three_real_adapters_fused_end_to_end() -> None:
    torch.manual_seed(0)
    text = TextAdapter(260, 16, max_length=16, causal=True)(["a cat", "a very long dog"])
    image = PatchAdapter(3, 4, 16, grid_radius=1)(torch.rand(2, 3, 8, 12))
    audio = AudioFrameAdapter(8000, 16, n_mels=16)(
        torch.randn(2, 1200), lengths=torch.tensor([1200, 800])
    )
    fusion = ModalityFusion(16, ("text", "image", "audio"), num_latents=2)
    fused = fusion([text, image, audio], intra="own")
    res = GraphAttention(16, 4).forward_with_weights(fused.nodes.features, fused.graph)
    assert torch.isfinite(res.out).all()
    summary = fused.modality_summary(res.attention)
    assert summary.shape == (4, 4)
    # bottleneck: text reaches image only through the latents, never directly
    assert summary[0, 1] == 0 and summary[1, 2] == 0


# ----------------------------------------------------------------------------- per-modality
NAMES = ("audio", "image", "text")


def _padded_fused(**kw) -> FusedGraph:
    """text (3, one sample 2 real), image (4, one sample 1 real), audio (2): 9 nodes."""
    parts = [nodes("text", 3, [3, 2]), nodes("image", 4, [4, 1]), nodes("audio", 2)]
    return fuse(parts, **kw)


@pytest.mark.parametrize("norm_first", [True, False])
def test_modality_transformer_with_equal_types_is_the_graph_transformer(norm_first: bool) -> None:
    torch.manual_seed(0)
    ref = GraphTransformer(2, D, 2, dim_feedforward=16, activation="gelu", norm_first=norm_first)
    ref.eval()
    model = ModalityTransformer.from_graph_transformer(ref, NAMES).eval()
    fused = _padded_fused()
    x = fused.nodes.features
    torch.testing.assert_close(model(x, fused), ref(x, fused.graph), atol=1e-6, rtol=1e-5)
    got, want = model.forward_with_weights(x, fused), ref.forward_with_weights(x, fused.graph)
    torch.testing.assert_close(got.out, want.out, atol=1e-6, rtol=1e-5)
    assert len(got.attentions) == 2
    for a, b in zip(got.attentions, want.attentions, strict=True):
        torch.testing.assert_close(a.to_dense(), b.to_dense(), atol=1e-6, rtol=1e-5)


def test_modality_attention_matches_a_per_node_reference() -> None:
    """Each node's q, k, v and output through its own modality's weights, then a dense
    masked softmax over the graph's in-edges and real sources."""
    torch.manual_seed(0)
    fused = _padded_fused(mode="intra+cross", cross_links=[("text", "image")], symmetric=False)
    attn = ModalityAttention(D, 2, num_types=3).eval()
    with torch.no_grad():  # non-zero biases, so that they are checked too
        attn.in_proj.bias.normal_()
        attn.out_proj.bias.normal_()
    types, x = fused.modality_ids, fused.nodes.features  # (N,), (B, N, C)
    out = attn(x, fused.graph, types)
    b, n, c = x.shape
    qkv = torch.einsum("bnc,nkc->bnk", x, attn.in_proj.weight[types]) + attn.in_proj.bias[types]
    q, k, v = (t.view(b, n, 2, c // 2).transpose(1, 2) for t in qkv.chunk(3, -1))  # (B, H, N, Dh)
    allowed = fused.graph.materialize() & fused.nodes.mask[:, None, :]  # (B, N, N)
    scores = (q @ k.transpose(-1, -2) / (c // 2) ** 0.5).masked_fill(~allowed[:, None], -torch.inf)
    mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)  # (B, N, C)
    ref = torch.einsum("bnc,nkc->bnk", mixed, attn.out_proj.weight[types])
    ref = ref + attn.out_proj.bias[types]
    real = fused.nodes.mask
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=1e-5)


def test_each_modality_has_its_own_projections() -> None:
    """Text and image attend only within themselves: changing image's projections changes
    the image nodes and leaves the text nodes alone (shared weights would change both;
    ignoring the types would change neither)."""
    torch.manual_seed(0)
    fused = fuse([nodes("text", 3), nodes("image", 4)], mode="intra+cross")
    model = ModalityTransformer(1, D, 2, ("text", "image"), dim_feedforward=16).eval()
    attn = model.layers[0].self_attn
    assert not torch.equal(attn.in_proj.weight[0], attn.in_proj.weight[1])  # start apart
    x = fused.nodes.features
    before = model(x, fused)
    with torch.no_grad():
        attn.in_proj.weight[1].mul_(2.0)
        attn.out_proj.weight[1].mul_(2.0)
    after = model(x, fused)
    torch.testing.assert_close(after[:, :3], before[:, :3], atol=0, rtol=0)  # text
    assert (after[:, 3:] - before[:, 3:]).abs().max() > 1e-3  # image


def test_modality_transformer_gradients_and_nan_padding() -> None:
    torch.manual_seed(0)
    fused = _padded_fused()
    real = fused.nodes.mask  # (B, N)
    x = fused.nodes.features.masked_fill(~real[..., None], float("nan")).requires_grad_()
    model = ModalityTransformer(2, D, 2, NAMES, dim_feedforward=16)
    out = model(x, fused)
    assert out.shape == x.shape and torch.isfinite(out[real]).all()
    out[real].square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith(("in_proj.weight", "out_proj.weight")):  # every modality learns
            assert (p.grad.flatten(1).abs().sum(1) > 0).all(), name
        else:
            assert p.grad.abs().sum() > 0, name


def test_modality_transformer_reads_modalities_by_name() -> None:
    """Node sets fused in any order, latents with a projection of their own."""
    fusion = ModalityFusion(D, ("text", "image"), num_latents=2)
    fused = fusion([nodes("image", 4), nodes("text", 3)])  # bottleneck: latents last
    model = ModalityTransformer(1, D, 2, ("text", "image", LATENT), dim_feedforward=16)
    assert model.node_types(fused).tolist() == [1] * 4 + [0] * 3 + [2] * 2
    res = model.forward_with_weights(fused.nodes.features, fused)
    assert res.out.shape == (2, 9, D) and len(res.attentions) == 1
    summary = fused.modality_summary(res.attentions[0])  # rows: image, text, latent
    torch.testing.assert_close(summary.sum(1), torch.ones(3))
    assert summary[0, 1] == 0 and summary[1, 0] == 0  # only through the latents


def test_modality_transformer_errors_name_the_bad_input() -> None:
    model = ModalityTransformer(1, D, 2, ("text", "image"), dim_feedforward=16)
    other = fuse([nodes("text", 3), nodes("audio", 2)])
    with pytest.raises(ValueError, match=r"fused has modalities \['audio'\] that this"):
        model(other.nodes.features, other)
    fused = fuse([nodes("text", 3), nodes("image", 4)])
    with pytest.raises(ValueError, match=r"x must be \(B, N=7, C\) like the fused nodes, got"):
        model(torch.randn(2, 6, D), fused)
    with pytest.raises(TypeError, match="fused must be a FusedGraph"):
        model(fused.nodes.features, fused.graph)
    with pytest.raises(ValueError, match="modality_names must be distinct strings"):
        ModalityTransformer(1, D, 2, ("text", "text"))
    attn = ModalityAttention(D, 2, num_types=2)
    with pytest.raises(ValueError, match=r"node_type must lie in \[0, num_types=2\), got ids"):
        attn(fused.nodes.features, fused.graph, torch.full((7,), 2))
    with pytest.raises(ValueError, match=r"node_type must be integer ids of shape \(N=7,\)"):
        attn(fused.nodes.features, fused.graph, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"embed_dim \(8\) must be divisible by num_heads \(3\)"):
        ModalityAttention(D, 3, num_types=2)
    with pytest.raises(ValueError, match="attn must have no edge features"):
        ModalityAttention.from_graph_attention(GraphAttention(D, 2, edge_dim=3), 2)
