"""Smoke test of ``examples.sentiment``: a few epochs on 200 real sentences."""

from __future__ import annotations

import json
import math
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


def test_word_ngrams_are_binarized_uni_and_bigrams() -> None:
    grams = sentiment.word_ngrams("A good , good film", 2)
    assert grams == {"a", "good", ",", "film", "a good", "good ,", ", good", "good film"}


def test_naive_bayes_ratios_on_a_toy_corpus() -> None:
    texts = ["good film", "good fun", "bad film", "bad bad plot"]
    labels = [1, 1, 0, 0]
    nb = sentiment.NaiveBayesPrior.fit(texts, labels, n_max=1, alpha=1.0)
    # binarized counts: p = good 2, film 1, fun 1; q = bad 2 (once per sentence), film 1, plot 1
    vocab = 5  # good film fun bad plot
    p_norm, q_norm = vocab + 4, vocab + 4
    expect = math.log(3 / p_norm) - math.log(1 / q_norm)
    assert nb.ratio("good") == pytest.approx(expect)
    assert nb.ratio("bad") == pytest.approx(-expect)
    assert nb.ratio("film") == pytest.approx(0.0)
    assert nb.ratio("unseen") == 0.0
    assert nb.score(["good film", "bad"]).tolist() == pytest.approx([expect, -expect])


def test_validation_split_is_carved_from_train_stratified() -> None:
    train, test = sentiment.load_rt_polarity(DATA, 64, limit=100)
    part, val = sentiment.carve_validation(train, 0.1, seed=1)
    assert len(part.labels) == 162 and len(val.labels) == 18 and int(val.labels.sum()) == 9
    assert not set(val.texts) & set(part.texts) and not set(val.texts) & set(test.texts)
    assert set(val.texts) | set(part.texts) == set(train.texts)


def test_prior_adds_a_scaled_log_odds_to_the_attention_logits() -> None:
    cfg = sentiment.SentimentConfig(
        hash_buckets=512, embed_dim=16, num_heads=2, nb_ngrams=2, nb_weight=0.5
    )
    model = sentiment.ByteClassifier(cfg).eval()
    tok = sentiment.ByteTokenizer()
    enc = tok.batch_encode(["a fine film .", "a dull mess ."])
    prior = torch.tensor([2.0, -1.0])  # (B,)
    with torch.no_grad():
        alone = model(enc.ids, enc.mask)  # (B, 2): the attention path
        both = model(enc.ids, enc.mask, prior)  # (B, 2)
        weighted, attentions = model.forward_with_weights(enc.ids, enc.mask, prior)
    diff = both - alone  # (B, 2)
    torch.testing.assert_close(diff[:, 1] - diff[:, 0], 0.5 * prior)
    torch.testing.assert_close(weighted, both)
    assert len(attentions) == cfg.num_layers
    off = sentiment.ByteClassifier(sentiment.SentimentConfig(hash_buckets=512, nb_ngrams=0))
    assert off.prior_scale is None and "prior_scale" not in off.state_dict()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in off.named_parameters()]


def test_negation_marks_the_naive_bayes_words_in_its_scope() -> None:
    grams = sentiment.word_ngrams("It isn't good , but fun", 1, negation=True)
    assert grams == {"it", "isn't", "NOT_good", ",", "but", "fun"}
    texts = ["good fun", "good", "not good", "not fun"]
    labels = [1, 1, 0, 0]
    plain = sentiment.NaiveBayesPrior.fit(texts, labels, n_max=1, alpha=1.0)
    marked = sentiment.NaiveBayesPrior.fit(texts, labels, n_max=1, alpha=1.0, negation=True)
    assert marked.ratio("good") > plain.ratio("good") > 0  # "not good" no longer counts
    assert marked.score(["not good"]).item() < 0 < marked.score(["good"]).item()
    assert marked.ratio("NOT_good") < 0 and "good" not in marked.neg


def test_ngram_dropout_acts_only_in_training() -> None:
    cfg = sentiment.SentimentConfig(hash_buckets=512, embed_dim=16, num_heads=2, ngram_dropout=0.5)
    model = sentiment.ByteClassifier(cfg)
    enc = sentiment.ByteTokenizer().batch_encode(["a fine film .", "a dull mess ."])
    model.eval()
    torch.testing.assert_close(model.nodes(enc.ids, enc.mask), model.nodes(enc.ids, enc.mask))
    full = model.nodes(enc.ids, enc.mask)  # (B, T, C)
    model.train()
    torch.manual_seed(0)
    dropped = model.nodes(enc.ids, enc.mask)  # (B, T, C)
    assert not torch.allclose(dropped, full)
    with pytest.raises(ValueError, match="ngram_dropout"):
        sentiment.ByteClassifier(sentiment.SentimentConfig(hash_buckets=512, ngram_dropout=1.0))


def test_ensemble_predictions() -> None:
    """An ensemble of one model predicts as the model; of two, by the mean of their
    attention logits with the naive-Bayes prior added once, and ``accuracies`` gives both
    accuracies of that from one pass; ensemble=0 is refused."""
    cfg = sentiment.SentimentConfig(hash_buckets=512, embed_dim=16, num_heads=2, limit=100)
    train, test = sentiment.load_rt_polarity(DATA, 96, limit=100)
    test.prior = torch.linspace(-3.0, 3.0, len(test.labels))
    torch.manual_seed(0)
    a, b = sentiment.ByteClassifier(cfg).eval(), sentiment.ByteClassifier(cfg).eval()
    assert sentiment.ensemble_predict([a], test).equal(sentiment.predict(a, test))
    with torch.no_grad():
        n = int(test.mask.sum(1).max())
        ids, mask = test.ids[:, :n], test.mask[:, :n]
        half = 0.5 * cfg.nb_weight * test.prior
        mean = (a(ids, mask) + b(ids, mask)) / 2 + torch.stack([-half, half], -1)
    assert sentiment.ensemble_predict([a, b], test).equal(mean.argmax(-1))
    assert sentiment.ensemble_predict([a, b], test, use_prior=False).equal(
        ((a(ids, mask) + b(ids, mask)) / 2).argmax(-1)
    )
    combined, alone = sentiment.accuracies([a, b], test)  # one pass, both figures
    labels = test.labels
    assert combined == float((mean.argmax(-1) == labels).float().mean())
    assert alone == float((((a(ids, mask) + b(ids, mask)) / 2).argmax(-1) == labels).float().mean())
    with pytest.raises(ValueError, match="ensemble must be at least 1, got 0"):
        sentiment.run(sentiment.SentimentConfig(ensemble=0, data_dir=str(DATA), limit=10))
