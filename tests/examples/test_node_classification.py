"""Smoke test of ``examples.node_classification`` on the real Cora and Minesweeper (a few
epochs), its ROC-AUC against scikit-learn's, and its argument errors."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("torch_geometric")
pytest.importorskip("scipy")  # Planetoid reads the raw files with scipy

from examples.node_classification import (  # noqa: E402
    MODELS,
    NodeConfig,
    load_dataset,
    roc_auc,
    run,
    settings,
    split_masks,
)
from examples.training import resolve_data_dir  # noqa: E402


def _data_dir() -> str:
    root = resolve_data_dir(None)
    if not (root / "planetoid" / "Cora" / "raw").is_dir():
        pytest.skip(f"Cora not found under {root} (tests never download)")
    if not (root / "heterophilous" / "minesweeper" / "raw").is_dir():
        pytest.skip(f"Minesweeper not found under {root} (tests never download)")
    return str(root)


@pytest.mark.usefixtures("one_thread")
def test_every_model_trains_on_cora_and_minesweeper(tmp_path):
    cfg = NodeConfig(
        datasets=("Cora", "Minesweeper"),
        quick=True,
        data_dir=_data_dir(),
        out_dir=str(tmp_path / "cache"),
        results=str(tmp_path / "nc.json"),
        threads=1,
    )
    result = run(cfg)
    seen = {(r["dataset"], r["model"]) for r in result["runs"]}
    assert seen == {(d, m) for d in cfg.datasets for m in MODELS}
    for r in result["runs"]:
        assert r["metric"] == ("accuracy" if r["dataset"] == "Cora" else "roc_auc")
        assert 0.0 <= r["test"] <= 1.0 and r["epoch_ms"] > 0 and r["epochs"] == 5, r
    saved = json.loads((tmp_path / "nc.json").read_text())
    assert saved["complete"] is True and "ms/epoch" in saved["table"].splitlines()[0]


def test_splits_and_presets(tmp_path):
    data = load_dataset("Minesweeper", _data_dir(), tmp_path)
    assert data.train_mask.shape == (10_000, 10)
    train, val, test = split_masks(data, 3)
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    with pytest.raises(ValueError, match="runs: the data set has 10 splits"):
        split_masks(data, 10)
    cfg = settings(NodeConfig(hidden=32), "Minesweeper")
    assert cfg.hidden == 32 and cfg.sep is True and cfg.layout == "residual"
    assert settings(NodeConfig(), "Cora").layout == "plain"
    with pytest.raises(ValueError, match="layout must be 'plain', 'residual' or 'deep', got 'x'"):
        settings(NodeConfig(layout="x"), "Cora")
    with pytest.raises(ValueError, match="global_in must be 'all' or 'last', got 'first'"):
        settings(NodeConfig(global_in="first"), "Cora")


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="datasets: unknown name 'Coraa'"):
        load_dataset("Coraa", None, tmp_path)
    with pytest.raises(ValueError, match="models: unknown model 'gcn'"):
        run(NodeConfig(models=("gcn",), out_dir=str(tmp_path), results=None))  # type: ignore[arg-type]


def test_roc_auc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (500,), generator=gen)
    scores = (torch.randn(500, generator=gen) + labels).round(decimals=1)  # with ties
    assert roc_auc(scores, labels) == pytest.approx(
        metrics.roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12
    )
    with pytest.raises(ValueError, match="needs both classes"):
        roc_auc(scores, torch.zeros(500))
