"""Smoke test of ``examples.vision_hybrid``: a few steps on a slice of the real digits."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import torch  # noqa: E402

from examples import vision_hybrid  # noqa: E402
from examples.vision_hybrid import (  # noqa: E402
    HybridNet,
    LayerScaled,
    VisionConfig,
    run,
    save_rollouts,
)
from graphattn import GraphTransformerLayer  # noqa: E402
from graphattn.plot import plot_image_attention  # noqa: E402


@pytest.mark.usefixtures("one_thread")
def test_vision_hybrid_trains_and_writes(tmp_path):
    cfg = VisionConfig(
        seeds=1,
        epochs=6,
        batch_size=32,
        train_limit=128,
        test_limit=64,
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "vision_hybrid.json"),
        progress=False,
        threads=1,  # small tensors: one thread is fastest
    )
    result = run(cfg)
    assert [r["model"] for r in result["summary"]] == ["hybrid", "cnn", "vit"]
    for r in result["runs"]:
        assert r["last_loss"] < r["first_loss"], r
        assert 0.0 <= r["test_acc"] <= 1.0
    saved = json.loads((tmp_path / "vision_hybrid.json").read_text())
    assert saved["summary"][0]["seeds"] == 1
    pngs = [tmp_path / "runs" / f"rollout_class{c}.png" for c in range(10)]  # all in 64
    assert saved["pictures"] == [str(p) for p in pngs]
    assert all(p.is_file() and p.stat().st_size > 0 for p in pngs)


def test_save_rollouts_one_picture_per_class(tmp_path, monkeypatch):
    """One picture per class present, of a correctly classified digit where there is one."""
    titles = []

    def plot(image, attention, path, **kwargs):
        assert image.shape == (8, 8) and attention.shape == (16,)
        assert torch.all(attention >= 0) and abs(float(attention.sum()) - 1.0) < 1e-5
        titles.append(kwargs["title"])
        return plot_image_attention(image, attention, path, **kwargs)

    monkeypatch.setattr(vision_hybrid, "plot_image_attention", plot)
    torch.manual_seed(0)
    model = HybridNet(dim=16)
    x = torch.rand(12, 1, 8, 8)  # (S, 1, 8, 8)
    y = torch.tensor([3, 1, 3, 0, 1, 2, 2, 0, 4, 4, 3, 1])  # (S,) classes 0..4
    pred = model.eval()(x).argmax(-1)
    paths = save_rollouts(model, x, y, tmp_path)
    assert [p.name for p in paths] == [f"rollout_class{c}.png" for c in range(5)]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    # the picked digit of class c is its first correct one (else its first one)
    for c in range(5):
        right = [i for i in range(12) if y[i] == c and pred[i] == c]
        first = right[0] if right else [i for i in range(12) if y[i] == c][0]
        assert f"(digit {first}: true {c}, predicted {int(pred[first])})" in titles[c]


def test_layer_scaled_gate_and_drop_path():
    """Gates at 0: the identity; forward and forward_with_weights agree in eval mode; in
    training, stochastic depth keeps or drops (rescaled) each sample's whole branch."""
    torch.manual_seed(0)
    layer = GraphTransformerLayer(16, 4, dim_feedforward=32, dropout=0.0)
    block = LayerScaled(layer, init=0.0, drop_path=0.5).eval()
    x = torch.randn(8, 16, 16)  # (B, N, D)
    assert torch.equal(block(x), x)
    torch.nn.init.constant_(block.gamma, 0.5)
    res = block.forward_with_weights(x)
    torch.testing.assert_close(res.out, block(x))
    full = x + 2.0 * 0.5 * (layer(x) - x)  # a kept branch, rescaled by 1 / (1 - 0.5)
    out = block.train()(x)
    kept = [torch.allclose(out[b], full[b], atol=1e-6) for b in range(8)]
    dropped = [torch.equal(out[b], x[b]) for b in range(8)]
    assert all(k != d for k, d in zip(kept, dropped, strict=True)) and any(kept) and any(dropped)
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())
