"""Smoke test of ``examples.char_lm``: a few steps on the start of tiny-shakespeare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

from examples import char_lm  # noqa: E402

pytestmark = [
    pytest.mark.skipif(
        not (DATA / "text" / "tinyshakespeare" / "input.txt").is_file(),
        reason=f"tiny-shakespeare not found under {DATA} (tests never download)",
    ),
    pytest.mark.usefixtures("one_thread"),  # tests/conftest.py: tiny models, one thread
]


def _tiny(graph: str, out_dir: Path) -> char_lm.CharLMConfig:
    return char_lm.CharLMConfig(
        graph=graph,
        window_radius=4,
        num_layers=2,
        num_heads=2,
        embed_dim=32,
        context=16,
        batch_size=8,
        steps=60,
        lr=3e-3,
        warmup_steps=5,
        eval_every=30,
        eval_iters=4,
        final_eval_iters=4,
        train_chars=20_000,
        sample_chars=20,
        data_dir=str(DATA),
        out_dir=str(out_dir),
        results=str(out_dir / "char_lm.json"),
        progress=False,
    )


@pytest.mark.parametrize("graph", ["causal", "window"])
def test_char_lm_trains_and_writes(graph: str, tmp_path: Path) -> None:
    summary = char_lm.run(_tiny(graph, tmp_path))
    assert summary["val_loss"] < summary["initial_val_loss"] - 0.3
    assert summary["steps"] == 60 and summary["ms_per_step"] > 0
    assert len(summary["sample"]) == 20
    written = json.loads((tmp_path / graph / "summary.json").read_text())
    assert written["val_loss"] == summary["val_loss"]
    assert (tmp_path / graph / "curves.png").stat().st_size > 0
    merged = json.loads((tmp_path / "char_lm.json").read_text())
    assert merged["runs"][graph]["val_loss"] == summary["val_loss"]


def test_window_graph_sees_only_radius() -> None:
    cfg = char_lm.CharLMConfig(graph="window", context=8, window_radius=2)
    model = char_lm.CharLM(10, cfg)
    mask = model.graph.materialize()  # (N, N): target i, source j
    assert mask[5].nonzero().flatten().tolist() == [3, 4, 5]


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_future_characters_do_not_change_past_logits(positions: str) -> None:
    cfg = char_lm.CharLMConfig(
        context=12, num_layers=2, num_heads=2, embed_dim=16, positions=positions
    )
    model = char_lm.CharLM(10, cfg).eval()
    ids = torch.randint(0, 10, (2, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 10
    with torch.no_grad():
        a, b = model(ids), model(changed)  # (2, 12, 10)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_bad_positions_argument() -> None:
    with pytest.raises(ValueError, match="positions must be"):
        char_lm.CharLM(10, char_lm.CharLMConfig(positions="sinusoidal"))


def test_compare_speed_times_both_graphs(tmp_path: Path) -> None:
    cfg = _tiny("causal", tmp_path)
    speed = char_lm.compare_speed(cfg, steps=2, rounds=1)
    assert speed["causal"]["ms_per_step"] > 0 and speed["window"]["ms_per_step"] > 0
    assert speed["window"]["edges"] < speed["causal"]["edges"]
    merged = json.loads((tmp_path / "char_lm.json").read_text())
    assert merged["speed"]["window_over_causal"] == speed["window_over_causal"]
