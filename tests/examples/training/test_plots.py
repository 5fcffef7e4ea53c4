"""Training curves are written as real pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from examples.training import plot_curves

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


def _assert_picture(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3]) > 0.5  # not a blank canvas
    assert (image[..., :3] < 0.5).mean() > 0.001  # some dark ink: axes, text, lines


def _records():
    records = []
    for step in range(1, 31):
        records.append({"kind": "train", "step": step, "loss": 2.0 / step, "lr": 0.1, "epoch": 0})
        if step % 10 == 0:
            records.append({"kind": "eval", "step": step, "loss": 2.5 / step, "acc": step / 40})
    return records


def test_plot_curves_from_jsonl(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _records()) + '{"cut sho')
    out = plot_curves(jsonl, tmp_path / "pics" / "curves.png", title="toy")
    assert out == tmp_path / "pics" / "curves.png"
    _assert_picture(out)


def test_plot_curves_from_records_and_dicts(tmp_path):
    _assert_picture(plot_curves(_records(), tmp_path / "a.png", names=["loss"]))
    curves = {"loss": [3.0, 2.0, 1.5, 1.2], "acc": [[0, 0.1], [5, 0.5], [10, 0.8]]}
    _assert_picture(plot_curves(curves, tmp_path / "b.png"))


def test_plot_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="no numeric curves"):
        plot_curves([{"step": 1, "kind": "train"}], tmp_path / "x.png")
    with pytest.raises(KeyError, match="not in the metrics"):
        plot_curves(_records(), tmp_path / "x.png", names=["bleu"])
    with pytest.raises(FileNotFoundError, match="existing file"):
        plot_curves(tmp_path / "missing.jsonl", tmp_path / "x.png")
