"""Smoke test of ``examples.sentiment``: a few epochs on 200 real sentences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

from examples import sentiment  # noqa: E402

pytestmark = [
    pytest.mark.skipif(
        not (DATA / "text" / "rt-polarity" / "rt-polarity.pos").is_file(),
        reason=f"rt-polarity not found under {DATA} (tests never download)",
    ),
    pytest.mark.usefixtures("one_thread"),  # tests/conftest.py: tiny models, one thread
]


def _tiny(out_dir: Path) -> sentiment.SentimentConfig:
    return sentiment.SentimentConfig(
        max_bytes=96,
        hash_buckets=4096,
        embed_dim=32,
        num_layers=2,
        num_heads=2,
        dropout=0.0,
        epochs=6,
        batch_size=16,
        lr=3e-3,
        warmup_steps=5,
        label_smoothing=0.0,
        limit=100,
        seeds=1,
        data_dir=str(DATA),
        out_dir=str(out_dir),
        results=str(out_dir / "results" / "sentiment.json"),
        progress=False,
    )


def test_split_is_stratified_and_fixed() -> None:
    train, test = sentiment.load_rt_polarity(DATA, 64, limit=100)
    assert len(train.labels) == 180 and len(test.labels) == 20
    assert int(test.labels.sum()) == 10
    again, _ = sentiment.load_rt_polarity(DATA, 64, limit=100)
    assert train.texts == again.texts
    assert not set(train.texts) & set(test.texts)


def test_sentiment_trains_and_writes(tmp_path: Path) -> None:
    summary = sentiment.run(_tiny(tmp_path / "run"))
    first, last = summary["runs"][0]["first_loss"], summary["runs"][0]["last_loss"]
    assert last < first - 0.1
    assert 0.0 <= summary["summary"]["mean"] <= 1.0
    saved = json.loads((tmp_path / "run" / "results" / "sentiment.json").read_text())
    assert saved["complete"] and len(saved["runs"]) == 1
    for kind in ("correct", "incorrect"):
        if kind in summary["pictures"]:
            assert Path(summary["pictures"][kind]["path"]).stat().st_size > 0
    assert summary["pictures"], "no heatmap written"
    assert (tmp_path / "run" / "sentiment_curves.png").stat().st_size > 0


def test_padding_does_not_change_logits() -> None:
    cfg = sentiment.SentimentConfig(hash_buckets=512, embed_dim=16, num_layers=2, num_heads=2)
    model = sentiment.ByteClassifier(cfg).eval()
    tok = sentiment.ByteTokenizer()
    enc = tok.batch_encode(["a fine film .", "a dull, overlong and tedious mess of a film ."])
    with torch.no_grad():
        batched = model(enc.ids, enc.mask)  # (2, 2)
        n = int(enc.mask[0].sum())
        alone = model(enc.ids[:1, :n], enc.mask[:1, :n])  # (1, 2)
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)


def test_ngram_buckets_depend_only_on_the_bytes() -> None:
    tok = sentiment.ByteTokenizer()
    enc = tok.batch_encode(["good film", "a good film !"])
    grams = sentiment.byte_ngram_buckets(enc.ids, enc.mask, 5, 1000)  # (2, T, 5)
    assert grams.shape == (*enc.ids.shape, 5)
    # "good " ends at byte 5 of the first (BOS at 0) and byte 7 of the second sentence
    assert torch.equal(grams[0, 5], grams[1, 7])
    assert grams[0, 5].unique().numel() == 5  # n = 1..5 land in different buckets here
    assert (grams[enc.mask] >= 0).all() and (grams < 1000).all()
    assert (grams[0, :4, 4] == 0).all() and (grams[0, 4, 4] > 0)  # 5-grams need 5 bytes
    assert (grams[~enc.mask] == 0).all()  # padding: the embedding's zero row
    assert (grams[enc.mask][:, 0] > 0).all()  # every real byte has its 1-gram
