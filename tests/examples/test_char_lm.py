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


@pytest.mark.parametrize("graph", ["causal", "window"])
@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_cached_generation_draws_what_recomputation_draws(graph: str, positions: str) -> None:
    cfg = char_lm.CharLMConfig(
        graph=graph,
        window_radius=2,
        context=12,
        num_layers=2,
        num_heads=2,
        embed_dim=16,
        positions=positions,
    )
    torch.manual_seed(0)
    model = char_lm.CharLM(10, cfg).eval()
    prompt = torch.randint(0, 10, (2, 3), generator=torch.Generator().manual_seed(1))
    # the window's receptive field (2 layers x radius 2) fits in the context: with rotary
    # positions the unbounded window cache equals the sliding recomputation past it too
    new = 40 if (graph, positions) == ("window", "rotary") else 9
    drawn = [
        model.generate(prompt, new, 1.0, 5, torch.Generator().manual_seed(2), use_cache=cached)
        for cached in (True, False)
    ]
    assert drawn[0].shape == (2, 3 + new)
    assert torch.equal(drawn[0], drawn[1])
    # past the context, a causal cache restarts from the last context // 2 characters
    longer = model.generate(prompt, 30, 1.0, 5, torch.Generator().manual_seed(2))
    assert longer.shape == (2, 33) and torch.equal(longer[:, :12], drawn[0][:, :12])


def test_model_options_of_the_tries() -> None:
    cfg = char_lm.CharLMConfig(
        context=8, num_layers=2, num_heads=2, embed_dim=16, activation="relu2", tie_head=False
    )
    model = char_lm.CharLM(10, char_lm.CharLMConfig(**{**char_lm.asdict(cfg), "zero_init": True}))
    assert model.head.weight is not model.token.weight
    assert model.body.layers[0].activation is char_lm.relu_squared
    assert not model.body.layers[1].linear2.weight.any()
    assert not model.body.layers[1].self_attn.out_proj.weight.any()
    opt = char_lm.make_optimizer(model, char_lm.CharLMConfig(muon_weight_decay=0.5))
    assert opt.param_groups[0]["use_muon"] and opt.param_groups[0]["weight_decay"] == 0.5


def test_sampler_refuses_bad_arguments() -> None:
    logits = torch.randn(2, 10)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        char_lm.sample_next(logits, temperature=0.0)
    with pytest.raises(ValueError, match="top_k must be None or an int >= 1, got 0"):
        char_lm.sample_next(logits, top_k=0)
    assert char_lm.sample_next(logits, top_k=1).flatten().tolist() == logits.argmax(-1).tolist()


def test_generate_and_compare_decoding_from_the_checkpoint(tmp_path: Path, capsys) -> None:
    flags = ["--graph", "window", "--window-radius", "4", "--num-layers", "2", "--num-heads"]
    flags += ["2", "--embed-dim", "32", "--context", "16", "--data-dir", str(DATA)]
    flags += ["--train-chars", "20000", "--out-dir", str(tmp_path), "--no-progress"]
    flags += ["--results", str(tmp_path / "char_lm.json")]
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
        char_lm.main([*flags, "--generate", "30"])
    char_lm.main([*flags, "--steps", "20", "--eval-every", "20", "--eval-iters", "2"])
    out = char_lm.main([*flags, "--generate", "30", "--prompt", "ROMEO:", "--top-k", "5"])
    assert len(out["text"]) == 30 and out["step"] == 20
    assert "ROMEO:" + out["text"] in capsys.readouterr().out
    cfg = char_lm.config_from_args(
        char_lm.CharLMConfig,
        char_lm.config_parser(char_lm.CharLMConfig, "", char_lm.PRESETS).parse_args(flags),
        char_lm.PRESETS,
    )
    res = char_lm.compare_decoding(cfg, contexts=(16, 24), rounds=1)
    for n in ("16", "24"):
        assert res[n]["same_text"] and res[n]["cached_chars_per_s"] > 0
        assert "step 20" in res[n]["weights"]
    merged = json.loads((tmp_path / "char_lm.json").read_text())
    assert merged["decoding_window"]["24"]["chars"] == 23
