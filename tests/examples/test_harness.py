"""``examples.harness``: the command line generated from each example's config, presets and
old spellings, the results JSON, the statistics, and the docstring examples."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch

import examples.harness as harness
from examples.harness import (
    Experiment,
    config_from_args,
    config_parser,
    parse_config,
    stats,
    summarize,
)

# every example with a config dataclass: (module, config class)
EXAMPLES = {
    "vision_hybrid": "VisionConfig",
    "sentiment": "SentimentConfig",
    "char_lm": "CharLMConfig",
    "spoken_digits": "SpokenDigitsConfig",
    "cross_modal_digits": "CrossModalConfig",
    "rl_cartpole": "CartPoleConfig",
    "rl_acrobot": "AcrobotConfig",
    "why_attention": "WhyAttentionConfig",
    "big_graph": "Config",
}
# the flags every example spells the same way, for the field behind each
COMMON = {
    "seeds": "--seeds",
    "seed": "--seed",
    "threads": "--threads",
    "data_dir": "--data-dir",
    "out_dir": "--out-dir",
    "results": "--results",
    "progress": "--no-progress",
}


def _example(name: str):
    pytest.importorskip("matplotlib")
    if name in ("rl_cartpole", "rl_acrobot"):
        pytest.importorskip("gymnasium")
    module = importlib.import_module(f"examples.{name}")
    return module, getattr(module, EXAMPLES[name])


def test_docstring_examples() -> None:
    result = doctest.testmod(harness, report=True)
    assert result.attempted >= 8 and result.failed == 0


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_gets_the_same_flags(name: str) -> None:
    module, cls = _example(name)
    presets = getattr(module, "PRESETS", None)
    parser = config_parser(cls, module.__doc__, presets, getattr(module, "ALIASES", None))
    flags = set(parser._option_string_actions)
    fields = {f.name for f in dataclasses.fields(cls)}
    for field, flag in COMMON.items():
        assert (flag in flags) == (field in fields), (name, flag)
    for field in fields:  # every field is a flag
        assert f"--{field.replace('_', '-')}" in flags, (name, field)
    if presets is not None:
        assert "--quick" in flags and "results" in fields
    # no flags: the dataclass defaults, exactly
    assert config_from_args(cls, parser.parse_args([]), presets) == cls()
    assert parser.format_help()  # every help text formats (a stray % would raise)


@pytest.mark.parametrize("name", ["vision_hybrid", "spoken_digits", "rl_cartpole", "rl_acrobot"])
def test_quick_preset_and_explicit_flags(name: str, tmp_path: Path) -> None:
    module, cls = _example(name)
    quick = parse_config(cls, ["--quick"], None, module.PRESETS)
    assert quick.seeds == 1 and quick.results is None  # a check: JSON in out_dir
    given = parse_config(
        cls,
        ["--quick", "--seeds", "2", "--results", str(tmp_path / "r.json"), "--out", "x"],
        None,
        module.PRESETS,
    )
    assert given.seeds == 2 and given.results == str(tmp_path / "r.json")
    assert given.out_dir == "x"  # --out: the old spelling of --out-dir


def test_old_spellings_and_types() -> None:
    module, cls = _example("rl_cartpole")
    cfg = parse_config(cls, ["--layers", "2", "--heads", "4"], None, None, module.ALIASES)
    assert (cfg.num_layers, cfg.num_heads) == (2, 4)
    with pytest.raises(SystemExit):  # what the config refuses is a usage error, not a trace
        parse_config(cls, ["--num-minibatches", "3"], None)
    module, cls = _example("spoken_digits")
    cfg = parse_config(cls, ["--holdout", "theo", "lucas", "--centre", "--threads", "none"], None)
    assert cfg.holdout == ("theo", "lucas") and cfg.centre and cfg.threads is None
    assert parse_config(cls, ["--holdout"], None).holdout == ()  # no hold-out runs
    with pytest.raises(SystemExit):  # a Literal's choices are checked
        parse_config(cls, ["--holdout", "nobody"], None)
    with pytest.raises(SystemExit):  # no abbreviations: --ep is not --epochs
        parse_config(cls, ["--ep", "3"], None)


def test_field_comments_become_help() -> None:
    @dataclass
    class Config:
        mode: Literal["a", "b"] = "a"  # which mode (100 % of the time)
        sizes: tuple[int, ...] = (1, 2)  # sizes to try,
        # continued here
        # --- a section header, not help
        limit: int | None = None

    text = config_parser(Config, "Demo.\n\nMore.").format_help()
    assert "which mode (100 % of the time) (default: a)" in text
    assert "sizes to try, continued here (default: 1 2)" in text
    assert "section header" not in text and "default: none" in text
    cfg = parse_config(Config, ["--mode", "b", "--sizes", "3", "--limit", "7"], None)
    assert cfg == Config("b", (3,), 7)

    @dataclass
    class Child(Config):  # a subclass changes defaults; the other fields keep their help
        limit: int | None = 3  # at most this many

    text = config_parser(Child, None).format_help()
    assert "which mode (100 % of the time) (default: a)" in text
    assert "at most this many (default: 3)" in text


def test_experiment_writes_after_every_run(tmp_path: Path, one_thread) -> None:
    @dataclass
    class Config:
        out_dir: str
        results: str | None = None
        threads: int | None = 1
        progress: bool = False

    exp = Experiment("demo", Config(str(tmp_path / "out")))
    assert exp.path == tmp_path / "out" / "demo.json" and torch.get_num_threads() == 1
    exp.add({"model": "a", "seed": 0, "acc": 0.5, "wall_s": 1.0}, "a seed 0")
    partial = json.loads(exp.path.read_text())
    assert partial["complete"] is False and len(partial["runs"]) == 1
    assert partial["config"] == {"out_dir": str(tmp_path / "out"), "results": None, "threads": 1}
    exp.add({"model": "a", "seed": 1, "acc": 0.7, "wall_s": 1.0}, "a seed 1")
    rows = summarize(exp.runs, "model", "acc")
    final = exp.finish("the table", summary=rows)
    saved = json.loads(exp.path.read_text())
    assert saved == json.loads(json.dumps(final)) and saved["complete"] is True
    assert saved["table"] == "the table" and saved["summary"][0]["seeds"] == 2
    assert saved["summary"][0]["mean"] == pytest.approx(0.6)


def test_stats_and_summary() -> None:
    assert stats([2.0])["std"] == 0.0
    with pytest.raises(ValueError):
        stats([])
    runs = [{"v": "x", "acc": 1.0, "wall_s": 1}, {"v": "y", "acc": 0.0, "wall_s": 2}]
    assert [r["v"] for r in summarize(runs, "v", "acc", groups=["y", "z", "x"])] == ["y", "x"]
