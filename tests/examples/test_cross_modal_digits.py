"""Smoke tests of ``examples.cross_modal_digits``: a few steps on slices of the real data,
with FSDD, and the images + text fallback when FSDD is not found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("torchaudio")

from examples.cross_modal_digits import CrossModalConfig, run  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _tiny(tmp_path: Path, **kw: object) -> CrossModalConfig:
    return CrossModalConfig(
        seeds=1,
        steps=20,
        batch_size=32,
        match_batch=16,
        lr=3e-3,
        image_train_limit=200,
        image_test_limit=60,
        eval_tuples=60,
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "cross_modal_digits.json"),
        progress=False,
        threads=1,  # small tensors: one thread is fastest
        **kw,
    )


def _check_outputs(result: dict, tmp_path: Path, variants: list[str]) -> None:
    assert [r["variant"] for r in result["runs"]] == variants
    for r in result["runs"]:
        assert r["last_loss"] < r["first_loss"], r
        assert all(0.0 <= v <= 1.0 for v in r["recall@1"].values())
        for table in r["modality_attention"].values():
            for row in table["layers"][-1]:  # every target modality's attention sums to 1
                assert sum(row) == pytest.approx(1.0, abs=1e-4)
    saved = json.loads((tmp_path / "cross_modal_digits.json").read_text())
    assert saved["summary"][0]["seeds"] == 1
    for variant in variants:
        for name in ("attention_graph.png", "modality_attention.png"):
            png = tmp_path / "runs" / variant / name
            assert png.is_file() and png.stat().st_size > 0
        assert (tmp_path / "runs" / variant / "seed0" / "curves.png").is_file()


@pytest.mark.skipif(
    not (DATA / "fsdd" / "recordings").is_dir(), reason=f"FSDD not found under {DATA}"
)
@pytest.mark.usefixtures("one_thread")
def test_three_modalities_train_and_write(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, data_dir=str(DATA), audio_per_class=1, variants=("paired", "zero_shot"))
    result = run(cfg)
    assert result["modalities"] == ["audio", "image", "text"] and result["note"] is None
    _check_outputs(result, tmp_path, ["paired", "zero_shot"])
    paired, zero = result["runs"]
    assert paired["modality_attention"]["audio+image+text"]["names"] == ["audio", "image", "text"]
    assert set(zero["modality_attention"]) == {"audio+image", "text+audio"}  # never text+image
    assert len(paired["recall@1"]) == 6 and "text->image" in zero["recall@1"]


@pytest.mark.usefixtures("one_thread")
def test_fallback_without_fsdd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _tiny(tmp_path, data_dir=str(tmp_path / "no-data-here"), variants=("paired", "zero_shot"))
    result = run(cfg)
    assert "FSDD not found" in capsys.readouterr().out
    assert result["modalities"] == ["image", "text"] and "FSDD not found" in result["note"]
    _check_outputs(result, tmp_path, ["paired"])  # zero_shot needs audio: skipped
    assert set(result["runs"][0]["recall@1"]) == {"image->text", "text->image"}


def test_fusion_projections_option_builds_the_fusion_block() -> None:
    """``shared`` (the default) keeps the GraphTransformer fusion block; ``per_modality``
    gives every modality its own attention projections and still matches and explains."""
    import torch

    from examples.cross_modal_digits import CrossModalNet
    from graphattn import GraphTransformer
    from modalities import ModalityTransformer, NodeSet

    small = {"dim": 16, "heads": 2}
    shared = CrossModalNet(("image", "text"), CrossModalConfig(**small))
    assert CrossModalConfig().fusion_projections == "shared"
    assert type(shared.fusion) is GraphTransformer
    torch.manual_seed(0)
    per = CrossModalNet(
        ("image", "text"), CrossModalConfig(fusion_projections="per_modality", **small)
    )
    assert isinstance(per.fusion, ModalityTransformer)
    assert per.fusion.modality_names == ("image", "text")
    assert per.fusion.layers[0].self_attn.in_proj.weight.shape == (2, 48, 16)  # one per modality
    mask = torch.ones(3, 4, dtype=torch.bool)
    sets = [NodeSet(torch.randn(3, 4, 16), mask, modality=m) for m in ("image", "text")]
    per.eval()
    logits, fused, attns = per.match_with_weights(sets)
    assert logits.shape == (3,)
    torch.testing.assert_close(per.match(sets), logits)  # with or without the weights
    rows = fused.modality_summary(attns[-1]).sum(1)
    torch.testing.assert_close(rows, torch.ones(2))
    with pytest.raises(ValueError, match="fusion_projections must be one of"):
        CrossModalConfig(fusion_projections="per_head")  # type: ignore[arg-type]


@pytest.mark.usefixtures("one_thread")
def test_per_modality_projections_train_and_write(tmp_path: Path) -> None:
    cfg = _tiny(
        tmp_path,
        data_dir=str(tmp_path / "no-data-here"),  # images + text: the fast path
        variants=("paired",),
        fusion_projections="per_modality",
    )
    result = run(cfg)
    _check_outputs(result, tmp_path, ["paired"])
    saved = json.loads((tmp_path / "cross_modal_digits.json").read_text())
    assert saved["config"]["fusion_projections"] == "per_modality"
