"""Smoke test of ``examples.spoken_digits``: a few steps on a slice of the real FSDD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("matplotlib")

from examples.harness import parse_config  # noqa: E402
from examples.spoken_digits import (  # noqa: E402
    PRESETS,
    SPEAKERS,
    AudioSet,
    CepstralSmoothing,
    SpokenDigitNet,
    SpokenDigitsConfig,
    adapt_grid,
    augment,
    change_speed,
    ensemble_proba,
    eval_warps,
    random_span_mask,
    run,
    speaker_statistics,
    stretch_frames,
)
from modalities import VTLP, SpecAugment, UtteranceNorm  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "fsdd" / "recordings").is_dir(), reason=f"FSDD not found under {DATA}"
)


@pytest.mark.usefixtures("one_thread")
def test_spoken_digits_trains_and_writes(tmp_path: Path) -> None:
    cfg = SpokenDigitsConfig(
        seeds=1,
        holdout=("theo",),
        epochs=6,
        dim=32,
        layers=2,
        batch_size=32,
        limit_per_class=1,  # 1 train + 1 test take per (speaker, digit): 60 + 60 recordings
        data_dir=str(DATA),
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "spoken_digits.json"),
        progress=False,
        threads=1,  # small tensors: one thread is fastest
    )
    result = run(cfg)
    assert result["official"]["train"] == 60 and result["official"]["test"] == 60
    for r in result["runs"]:
        assert r["last_loss"] < r["first_loss"], r
        assert 0.0 <= r["test_acc"] <= 1.0
        assert sum(map(sum, r["confusion"])) == r["test_size"]
    (held,) = [r for r in result["runs"] if r["split"] == "holdout"]
    assert held["speaker"] == "theo" and held["test_size"] == 20 and held["train_size"] == 100
    saved = json.loads((tmp_path / "spoken_digits.json").read_text())
    assert saved["official"]["seeds"] == 1
    for name in ("attention_frames", "attention_last_layer", "confusion_matrix"):
        png = tmp_path / "runs" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 0


def test_augment_keeps_lengths_consistent() -> None:
    torch.manual_seed(0)
    waves = torch.zeros(3, 1000)
    lengths = torch.tensor([1000, 600, 300])
    for i, n in enumerate(lengths.tolist()):
        waves[i, :n] = 0.5
    cfg = SpokenDigitsConfig(max_delay_ms=10.0, noise=0.0, gain_db=0.0)
    out, new = augment(waves, lengths, cfg)
    delay = new - lengths  # (3,)
    assert out.shape == (3, int(new.max())) and bool((delay >= 0).all())
    assert bool((delay <= 80).all())  # 10 ms at 8 kHz
    for i in range(3):
        d, n = int(delay[i]), int(lengths[i])
        assert torch.equal(out[i, d : d + n], waves[i, :n])
        assert not out[i, :d].any() and not out[i, d + n :].any()


def test_random_span_mask_keeps_a_real_node() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(64, 10, dtype=torch.bool)
    mask[:, :5] = True
    mask[0, :1] = True
    hidden = random_span_mask(mask, 0.9)
    assert bool((hidden <= mask).all())  # never unmasks padding
    assert bool((hidden.sum(1) >= 1).all())
    assert torch.equal(random_span_mask(mask, 0.0), mask)


def _small_holdout_config(tmp_path: Path, **options: Any) -> SpokenDigitsConfig:
    """A few-second run: theo held out, george and lucas dropped, one recording per class
    and speaker, a tiny model; ``options`` set the front end under test."""
    return SpokenDigitsConfig(
        seeds=0,
        holdout=("theo",),
        drop=("george", "lucas"),
        epochs=8,
        dim=16,
        layers=1,
        batch_size=32,
        limit_per_class=1,
        data_dir=str(DATA),
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "spoken_digits.json"),
        progress=False,
        threads=1,
        **options,
    )


@pytest.mark.usefixtures("one_thread")
def test_spoken_digits_log_mel_hook_options(tmp_path: Path) -> None:
    """Normalisation, SpecAugment, speed perturbation and a dropped speaker, end to end."""
    cfg = _small_holdout_config(
        tmp_path,
        norm="meanvar",
        freq_masks=2,
        time_masks=1,
        speed=0.1,
        tempo=0.3,
        cepstra=10,
    )
    result = run(cfg)
    (held,) = result["runs"]
    assert held["speaker"] == "theo" and held["test_size"] == 20 and held["train_size"] == 60
    assert held["last_loss"] < held["first_loss"] and 0.0 <= held["test_acc"] <= 1.0
    hooks = list(SpokenDigitNet(cfg).adapter.transforms)
    assert [type(t) for t in hooks] == [CepstralSmoothing, UtteranceNorm, SpecAugment]
    assert list(SpokenDigitNet(SpokenDigitsConfig()).adapter.transforms) == []  # default: none


@pytest.mark.usefixtures("one_thread")
def test_spoken_digits_speaker_norm_and_vtlp(tmp_path: Path) -> None:
    """Speaker-level CMVN and VTLP, end to end on a held-out speaker."""
    cfg = _small_holdout_config(
        tmp_path, norm="global", cepstra=13, speaker_norm="meanvar", vtlp=0.1
    )
    (held,) = run(cfg)["runs"]
    assert held["speaker"] == "theo" and held["test_size"] == 20 and held["train_size"] == 60
    assert held["last_loss"] < held["first_loss"] and 0.0 <= held["test_acc"] <= 1.0
    model = SpokenDigitNet(cfg)
    assert [type(t) for t in model.adapter.transforms] == [VTLP, CepstralSmoothing, UtteranceNorm]
    with pytest.raises(ValueError, match="speakers must be given with speaker_norm='meanvar'"):
        model(torch.randn(2, 4000), torch.tensor([4000, 3000]))
    with pytest.raises(ValueError, match="vtlp must lie in \\[0, 0.5\\), got 0.5"):
        SpokenDigitsConfig(vtlp=0.5)
    with pytest.raises(ValueError, match="speaker_norm must be 'none', 'mean' or 'meanvar'"):
        SpokenDigitsConfig(speaker_norm="x")  # type: ignore[arg-type]


@pytest.mark.usefixtures("one_thread")
def test_spoken_digits_ensemble_mixup_and_test_time_warps(tmp_path: Path) -> None:
    """An ensemble of two, mixup, test-time warps and the adapted warp of the new speaker."""
    cfg = _small_holdout_config(
        tmp_path,
        speaker_norm="meanvar",
        mixup=0.4,
        ensemble=2,
        tta_warp=0.05,
        adapt_warp=0.05,
    )
    (held,) = run(cfg)["runs"]
    assert held["speaker"] == "theo" and held["test_size"] == 20 and held["train_size"] == 60
    assert held["last_loss"] < held["first_loss"] and 0.0 <= held["test_acc"] <= 1.0
    assert len(held["member_acc"]) == 2 and 0.0 <= held["plain_acc"] <= 1.0
    assert list(held["test_warps"]) == ["theo"] and held["test_warps"]["theo"] in adapt_grid(cfg)
    assert (tmp_path / "runs" / "holdout" / "theo" / "member1").is_dir()
    assert eval_warps(cfg) == pytest.approx((0.95, 1.0, 1.05))
    assert eval_warps(SpokenDigitsConfig()) == (1.0,) and adapt_grid(SpokenDigitsConfig()) == [1.0]
    for name, bad, match in [
        ("ensemble", 0, "ensemble must be an int >= 1, got 0"),
        ("tta_warp", 0.5, "tta_warp must lie in \\[0, 0.5\\), got 0.5"),
        ("adapt_warp", -0.1, "adapt_warp must lie in \\[0, 0.5\\), got -0.1"),
        ("mixup", -1.0, "mixup must be >= 0, got -1.0"),
    ]:
        with pytest.raises(ValueError, match=match):
            SpokenDigitsConfig(**{name: bad})


def test_vtln_preset_sets_the_new_speaker_settings() -> None:
    cfg = parse_config(SpokenDigitsConfig, ["--vtln", "--ensemble", "2"], None, PRESETS)
    assert (cfg.speaker_norm, cfg.cepstra, cfg.vtlp) == ("meanvar", 13, 0.05)
    assert (cfg.ensemble, cfg.tta_warp, cfg.adapt_warp) == (2, 0.05, 0.1)  # flags override
    assert cfg.holdout == SPEAKERS and cfg.seeds == 3 and cfg.results is None


def test_ensemble_proba_adapts_only_new_speakers() -> None:
    """Averaged probabilities; the adapted warp is the one of lowest entropy, and speakers
    with training recordings keep warp 1."""
    torch.manual_seed(0)
    cfg = SpokenDigitsConfig(n_mels=20, dim=16, layers=1, heads=2, adapt_warp=0.05)
    models = [SpokenDigitNet(cfg).eval() for _ in range(2)]
    jackson, theo = SPEAKERS.index("jackson"), SPEAKERS.index("theo")
    data = AudioSet(
        torch.randn(4, 2000) * 0.1,
        torch.tensor([2000, 1500, 2000, 1800]),
        torch.zeros(4, dtype=torch.long),
        torch.tensor([jackson, jackson, theo, theo]),
    )
    probs, chosen = ensemble_proba(models, data, cfg, known=[jackson])
    assert probs.shape == (4, 10) and list(chosen) == ["theo"]
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    plain = ensemble_proba(models, data, SpokenDigitsConfig(n_mels=20, dim=16, layers=1, heads=2))
    torch.testing.assert_close(probs[:2], plain[0][:2])  # jackson is known: not warped
    assert plain[1] == {}
    rows = data.speakers == theo
    entropy = {}
    with torch.no_grad():
        for g in adapt_grid(cfg):
            p = (
                sum(
                    m(data.waves[rows], data.lengths[rows], data.speakers[rows], g).softmax(-1)
                    for m in models
                )
                / 2
            )
            entropy[g] = float(-(p * p.log()).sum(-1).mean())
    assert chosen["theo"] == min(entropy, key=entropy.__getitem__)


def test_speaker_statistics_use_training_recordings_else_test_ones() -> None:
    torch.manual_seed(0)
    model = SpokenDigitNet(SpokenDigitsConfig(n_mels=20, speaker_norm="meanvar"))
    waves = torch.randn(4, 2000) * torch.tensor([0.1, 0.1, 0.5, 1.0])[:, None]  # (S, T)
    lengths = torch.tensor([2000, 1200, 2000, 2000])  # (S,)
    waves[1, 1200:] = float("nan")  # padding never reaches the statistics
    jackson, theo = SPEAKERS.index("jackson"), SPEAKERS.index("theo")

    def audio(idx: list[int], speakers: list[int]) -> AudioSet:
        n = len(idx)
        return AudioSet(
            waves[idx], lengths[idx], torch.zeros(n, dtype=torch.long), torch.tensor(speakers)
        )

    train = audio([0, 1], [jackson, jackson])
    test = audio([2, 3], [jackson, theo])  # jackson's test recording is not used
    stats = speaker_statistics(model.adapter, train, test)  # (2, S, M)
    assert stats.shape == (2, len(SPEAKERS), 20) and torch.isfinite(stats).all()
    spec, frames = model.adapter.log_mel(train.waves.nan_to_num(), train.lengths)
    real = spec.transpose(1, 2)[frames]  # (real frames, M)
    torch.testing.assert_close(stats[0, jackson], real.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stats[1, jackson], real.std(0, unbiased=False), atol=1e-4, rtol=1e-4)
    spec3, _ = model.adapter.log_mel(waves[3:], lengths[3:])  # theo: held out, from its test
    torch.testing.assert_close(stats[0, theo], spec3[0].mean(-1), atol=1e-4, rtol=1e-4)
    george = SPEAKERS.index("george")  # in neither: the identity
    assert not stats[0, george].any() and bool((stats[1, george] == 1).all())
    model.set_speaker_stats(stats)
    model.eval()
    x, mask = model._nodes(train.waves.nan_to_num(), train.lengths, train.speakers)
    assert torch.isfinite(x).all() and mask.sum(1).tolist()[1] < mask.sum(1).tolist()[0]


def test_hook_options_are_checked() -> None:
    for norm, variance, per_bin in [
        ("mean", False, True),
        ("meanvar", True, True),
        ("global", True, False),
    ]:
        (hook,) = SpokenDigitNet(SpokenDigitsConfig(norm=norm)).adapter.transforms
        assert (hook.variance, hook.per_bin) == (variance, per_bin)
    with pytest.raises(ValueError, match=r"speakers \['theo'\] are both held out and dropped"):
        SpokenDigitsConfig(holdout=("theo",), drop=("theo",))
    with pytest.raises(ValueError, match="speed must lie in \\[0, 0.5\\), got 0.5"):
        SpokenDigitsConfig(speed=0.5)
    with pytest.raises(ValueError, match="freq_masks must be an int >= 0, got -1"):
        SpokenDigitsConfig(freq_masks=-1)
    with pytest.raises(
        ValueError, match="norm must be 'none', 'mean', 'meanvar' or 'global', got 'x'"
    ):
        SpokenDigitsConfig(norm="x")  # type: ignore[arg-type]


def test_change_speed_resamples_each_recording() -> None:
    t = torch.arange(1000, dtype=torch.float32)
    waves = torch.stack([t, t])  # (2, T): a ramp, so linear interpolation is exact
    waves[1, 600:] = 0
    lengths = torch.tensor([1000, 600])
    out, new = change_speed(waves, lengths, torch.tensor([2.0, 0.8]))
    assert new.tolist() == [500, 750] and out.shape == (2, 750)
    torch.testing.assert_close(out[0, :500], 2 * t[:500])  # twice as fast
    torch.testing.assert_close(out[1, :750], (0.8 * t[:750]).clamp(max=599))  # slower
    assert not out[0, 500:].any()  # zero after the new length
    same, same_len = change_speed(waves, lengths, torch.ones(2))
    assert torch.equal(same_len, lengths) and torch.equal(same[:, :1000], waves)


def test_stretch_frames_changes_the_tempo_inside_the_real_frames() -> None:
    spec = torch.arange(10.0)[None, None, :].repeat(2, 3, 1)  # (B, M, F): frame i holds i
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [6]])  # (B, F)
    out, new = stretch_frames(spec, mask, torch.tensor([2.0, 0.5]), min_frames=4)
    assert new.sum(1).tolist() == [5, 12] and out.shape == (2, 3, 12)
    torch.testing.assert_close(out[0, 0, :5], torch.tensor([0.0, 2, 4, 6, 8]))  # twice as fast
    half = torch.arange(12) * 0.5
    torch.testing.assert_close(out[1, 0], half.clamp(max=5.0))  # half as fast, never past 5
    assert not out[0, :, 5:].any()
    same, same_mask = stretch_frames(spec, mask, torch.ones(2))
    assert torch.equal(same_mask, mask) and torch.equal(same, spec * mask[:, None, :])
    _, short = stretch_frames(spec, mask, torch.tensor([4.0, 4.0]), min_frames=4)
    assert short.sum(1).tolist() == [4, 4]  # one node of 4 frames is kept


def test_cepstral_smoothing_keeps_the_envelope() -> None:
    torch.manual_seed(0)
    spec = torch.randn(2, 20, 7)
    torch.testing.assert_close(CepstralSmoothing(20, 20)(spec, None), spec)  # all kept
    smooth = CepstralSmoothing(20, 5)
    once = smooth(spec, None)
    torch.testing.assert_close(smooth(once, None), once, atol=1e-5, rtol=0)  # a projection
    flat = torch.full((1, 20, 3), 2.0)
    torch.testing.assert_close(smooth(flat, None), flat)  # a constant is the 0th coefficient
