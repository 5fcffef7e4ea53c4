"""Padded positions never leak into real outputs, even when they hold NaN or inf.

Each pooling or masking step of the adapters runs twice: once with finite garbage in the
padded positions, once with NaN / inf / -inf there. The real outputs must be finite and
bit-for-bit the same (``nan * 0`` is NaN, so a product with a 0/1 mask would fail this).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from graphattn import GraphAttention
from modalities import (
    AudioFrameAdapter,
    EntitySpec,
    NodeSet,
    RLStateEncoder,
    fuse,
    masked_mean,
)

POISONS = [float("nan"), float("inf"), float("-inf")]


def poisoned(x: Tensor, padded: Tensor, value: float) -> Tensor:
    """``x`` with ``value`` in every padded position (``padded`` broadcasts against ``x``)."""
    return torch.where(padded, torch.full_like(x, value), x)


def pooled(value: float | None) -> list[Tensor]:
    """masked_mean: pooled features of the real nodes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g) * 100  # (B, N, D), padding holds garbage
    mask = torch.arange(5) < torch.tensor([[2], [5], [0]])  # (B, N): one sample all padding
    if value is not None:
        x = poisoned(x, ~mask[..., None], value)
    return [masked_mean(x, mask)]


def audio(value: float | None, **kw) -> list[Tensor]:
    """AudioFrameAdapter with ``lengths``: features of the real frames or patches."""
    torch.manual_seed(0)
    adapter = AudioFrameAdapter(8000, 8, n_mels=16, **kw)
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(2, 2400, generator=g) * 0.1  # (B, T)
    lengths = torch.tensor([2400, 1480])  # at 16 kHz, the last real frame ends at the last sample
    if value is not None:
        wave = poisoned(wave, torch.arange(2400) >= lengths[:, None], value)
    nodes = adapter(wave, lengths)
    return [nodes.features[nodes.mask]]  # (real nodes, D)


def entities(value: float | None) -> list[Tensor]:
    """RLStateEncoder on entity observations: the embedded nodes (padded ones included),
    embedding, value and logits."""
    torch.manual_seed(0)
    enc = RLStateEncoder(EntitySpec(3), 8, 2, 2, num_actions=2).eval()
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(3, 4, 3, generator=g) * 100  # (B, N, F)
    mask = torch.arange(4) < torch.tensor([[2], [4], [0]])  # (B, N)
    if value is not None:
        obs = poisoned(obs, ~mask[..., None], value)
    out = enc(obs, mask)
    return [enc.embed(obs, mask)[0], out.embedding, out.value, out.logits]


def summary(value: float | None) -> list[Tensor]:
    """FusedGraph.modality_summary: attention of padded targets and onto padded sources."""
    torch.manual_seed(0)
    text_mask = torch.arange(3) < torch.tensor([[1], [3]])  # (B, N_text)
    text = NodeSet(torch.randn(2, 3, 8), text_mask, modality="text")
    image = NodeSet(torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool), modality="image")
    fused = fuse([text, image])
    attention = GraphAttention(8, 2).forward_with_weights(fused.nodes.features, fused.graph)
    w = attention.attention.to_dense()  # (B, H, N, N)
    if value is not None:
        real = fused.nodes.mask  # (B, N)
        padded = ~(real[:, None, :, None] & real[:, None, None, :])  # (B, 1, N, N)
        w = poisoned(w, padded, value)
    return [fused.modality_summary(w)]


SITES: dict[str, Callable[[float | None], list[Tensor]]] = {
    "masked_mean": pooled,
    "audio frames": audio,
    "audio frames, resampled": lambda v: audio(v, target_rate=16000),
    "audio patches": lambda v: audio(v, patch=(4, 2)),
    "rl entities": entities,
    "fusion modality_summary": summary,
}


@pytest.mark.parametrize("value", POISONS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("site", list(SITES))
def test_nan_or_inf_in_padding_never_reaches_real_outputs(site: str, value: float) -> None:
    clean = SITES[site](None)
    dirty = SITES[site](value)
    for c, d in zip(clean, dirty, strict=True):
        assert torch.isfinite(d).all(), f"{site}: {d}"
        assert torch.equal(c, d), f"{site}: {c} != {d}"


def test_masked_mean_gives_padded_nodes_a_zero_gradient() -> None:
    x = torch.tensor([[[1.0], [3.0], [float("nan")]]], requires_grad=True)  # (B=1, N=3, D=1)
    mask = torch.tensor([[True, True, False]])
    masked_mean(x, mask).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[[0.5], [0.5], [0.0]]]))
