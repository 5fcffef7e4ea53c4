"""Audio: WAV loading, log-mel frames/patches checked against torchaudio, padding, errors."""

from __future__ import annotations

import os
import re
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from torch import Tensor

from graphattn import GraphAttention
from graphattn.positional import sinusoidal_2d
from modalities import VTLP, AudioFrameAdapter, SpecAugment, UtteranceNorm, load_wav

DATA = Path(
    os.environ.get("GRAPHATTN_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)
FSDD = DATA / "fsdd" / "recordings"


def write_wav(path: Path, ints: np.ndarray, width: int, rate: int = 8000) -> None:
    """Write integer samples ``(T, C)`` as PCM with ``width`` bytes per sample."""
    frames = ints.shape[0]
    with wave.open(str(path), "wb") as f:
        f.setnchannels(ints.shape[1])
        f.setsampwidth(width)
        f.setframerate(rate)
        if width == 3:
            u = ints.astype(np.int64).reshape(-1) & 0xFFFFFF
            raw = np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], -1).astype(np.uint8)
            f.writeframes(raw.tobytes())
        else:
            dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
            f.writeframes(ints.astype(dtype).tobytes())
    assert frames > 0


@pytest.mark.parametrize(
    ("width", "ints", "scale", "offset"),
    [
        (1, np.array([[0, 255], [128, 64]]), 128.0, 128),
        (2, np.array([[-32768, 32767], [0, -1]]), 32768.0, 0),
        (3, np.array([[-(1 << 23), (1 << 23) - 1], [0, -5]]), float(1 << 23), 0),
        (4, np.array([[-(1 << 31), (1 << 31) - 1], [0, 12345]]), float(1 << 31), 0),
    ],
)
def test_load_wav_pcm_widths(tmp_path: Path, width: int, ints, scale: float, offset: int) -> None:
    path = tmp_path / f"x{width}.wav"
    write_wav(path, ints, width, rate=22050)
    waveform, rate = load_wav(path)
    assert rate == 22050 and waveform.dtype == torch.float32 and waveform.shape == (2, 2)
    want = torch.tensor((ints.T.astype(np.float64) - offset) / scale, dtype=torch.float32)
    torch.testing.assert_close(waveform, want)
    assert waveform.min() >= -1.0 and waveform.max() <= 1.0


def test_load_wav_refuses_float_wav(tmp_path: Path) -> None:
    from scipy.io import wavfile

    path = tmp_path / "float.wav"
    wavfile.write(path, 8000, np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="not an integer PCM WAV file"):
        load_wav(path)


def riff(*chunks: bytes) -> bytes:
    """A RIFF/WAVE file of the given chunks (the RIFF size is filled in)."""
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def chunk(chunk_id: bytes, body: bytes, size: int | None = None) -> bytes:
    """One chunk; ``size`` overrides the declared size (for broken files)."""
    pad = b"\0" * (len(body) & 1)
    return chunk_id + struct.pack("<I", len(body) if size is None else size) + body + pad


def fmt(
    channels: int = 2, bits: int = 16, rate: int = 8000, tag: int = 1, align: int | None = None
) -> bytes:
    """A 16-byte PCM fmt chunk; ``align`` overrides the block size."""
    width = (bits + 7) // 8
    align = channels * width if align is None else align
    return chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits))


SAMPLES = struct.pack("<8h", 0, 1, -1, 2, 100, -100, 32767, -32768)  # 4 stereo 16-bit frames
GOOD = riff(fmt(), chunk(b"data", SAMPLES))  # 44-byte header + 16 bytes of samples


def test_load_wav_skips_other_chunks_and_reads_only_the_data_chunk(tmp_path: Path) -> None:
    """Chunks before the data (odd-sized, so padded) are skipped; what follows is ignored."""
    path = tmp_path / "chunks.wav"
    path.write_bytes(
        riff(chunk(b"LIST", b"odd"), fmt(), chunk(b"fact", b"1234"), chunk(b"data", SAMPLES))
        + chunk(b"id3 ", b"trailing metadata")
    )
    waveform, rate = load_wav(path)
    want = torch.tensor([[0, -1, 100, 32767], [1, 2, -100, -32768]]) / 32768.0
    assert rate == 8000 and torch.equal(waveform, want)


BROKEN_WAVS = {
    "zero bytes": (b"", r"the file is empty \(0 bytes\)"),
    "cut in the RIFF header": (GOOD[:10], "10 bytes, shorter than the 12-byte RIFF header"),
    "not RIFF": (b"ID3\x04" + GOOD[4:], "does not start with a RIFF/WAVE header"),
    "cut in a chunk header": (GOOD[:16], "ends inside a chunk header at byte 12"),
    "cut in the fmt chunk": (GOOD[:30], r"ends inside its fmt chunk \(10 of 16 bytes"),
    "fmt chunk too small": (
        riff(chunk(b"fmt ", b"\0" * 8), chunk(b"data", SAMPLES)),
        "fmt chunk is 8 bytes, fewer than the 16",
    ),
    "cut in another chunk": (
        riff(fmt(), chunk(b"LIST", b"info", size=100)),
        r"ends inside its LIST chunk \(4 of 100 bytes",
    ),
    "no fmt chunk": (riff(chunk(b"LIST", b"info")), "has no fmt and data chunks"),
    "no data chunk": (GOOD[:36], "has no data chunk"),
    "data before fmt": (riff(chunk(b"data", SAMPLES), fmt()), "data chunk comes before any fmt"),
    "cut in the samples": (GOOD[:-3], "data chunk declares 16 bytes but only 13 follow"),
    "data size larger than the file": (
        riff(fmt(), chunk(b"data", SAMPLES, size=0xFFFFFFFF)),
        "declares 4294967295 bytes but only 16 follow: the file is truncated",
    ),
    "cut mid-sample": (
        riff(fmt(), chunk(b"data", SAMPLES[:-1])),
        "holds 15 bytes, not a whole number of 4-byte frames .* cut mid-sample",
    ),
    "empty data chunk": (
        riff(fmt(), chunk(b"data", b"")),
        "holds no audio: its data chunk is empty$",
    ),
    "empty data chunk, samples after it": (
        riff(fmt(), chunk(b"data", b"", size=0)) + SAMPLES,
        "data chunk is empty but 16 bytes follow it",
    ),
    "zero channels": (riff(fmt(channels=0), chunk(b"data", SAMPLES)), "declares 0 channels"),
    "zero sample rate": (riff(fmt(rate=0), chunk(b"data", SAMPLES)), "sample rate of 0 Hz"),
    "0-bit samples": (riff(fmt(bits=0), chunk(b"data", SAMPLES)), "sample width of 0 bits"),
    "48-bit samples": (riff(fmt(bits=48), chunk(b"data", SAMPLES)), "sample width of 48 bits"),
    "block size not channels x width": (
        riff(fmt(align=2), chunk(b"data", SAMPLES)),
        "block_align is 2 bytes but 2 channel.* make 4",
    ),
    "float samples": (
        riff(fmt(bits=32, tag=3), chunk(b"data", SAMPLES)),
        r"not an integer PCM WAV file \(format tag 0x0003, IEEE float\)",
    ),
    "extensible format": (
        riff(fmt(tag=0xFFFE), chunk(b"data", SAMPLES)),
        "format tag 0xfffe, WAVE_FORMAT_EXTENSIBLE",
    ),
    "compressed": (riff(fmt(tag=0x55), chunk(b"data", SAMPLES)), "format tag 0x0055, MP3"),
}


@pytest.mark.parametrize("case", list(BROKEN_WAVS))
def test_load_wav_refuses_broken_files_naming_path_and_fault(tmp_path: Path, case: str) -> None:
    """A truncated, empty or inconsistent file is a ValueError with the path and the fault,
    never partial audio."""
    data, fault = BROKEN_WAVS[case]
    path = tmp_path / "broken.wav"
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        load_wav(path)
    message = str(info.value)
    assert message.startswith(f"cannot read WAV file {str(path)!r}: "), message
    assert re.search(fault, message), message


def test_load_wav_refuses_a_file_cut_by_the_wave_writer(tmp_path: Path) -> None:
    """A file from the wave module, cut at every 7th byte (header and samples): always a
    ValueError, never partial audio."""
    path = tmp_path / "whole.wav"
    write_wav(path, np.arange(-50, 50).reshape(50, 2), width=2)
    whole = path.read_bytes()
    assert load_wav(path)[0].shape == (2, 50)
    cut = tmp_path / "cut.wav"
    for end in range(len(whole) - 1, 0, -7):
        cut.write_bytes(whole[:end])
        with pytest.raises(ValueError, match="cannot read WAV file .*cut.wav"):
            load_wav(cut)


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD recordings not found at {FSDD}")
def test_load_wav_real_fsdd_recording() -> None:
    from scipy.io import wavfile

    path = FSDD / "0_jackson_0.wav"
    waveform, rate = load_wav(path)
    ref_rate, ref = wavfile.read(path)  # independent reader: int16 samples
    assert rate == ref_rate == 8000 and waveform.shape == (1, len(ref))
    torch.testing.assert_close(waveform[0], torch.from_numpy(ref.astype(np.float32) / 32768))
    adapter = AudioFrameAdapter(rate, 16, target_rate=16000, n_mels=32)
    nodes = adapter(waveform)  # (C=1, T) read as a batch of one mono clip
    assert torch.isfinite(nodes.features).all() and nodes.num_nodes > 10


def test_log_mel_matches_torchaudio_directly() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3000) * 0.1
    adapter = AudioFrameAdapter(8000, 8, n_mels=32, n_fft=256, hop_length=80)
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=8000, n_fft=256, hop_length=80, n_mels=32, center=False
    )(x)
    spec, mask = adapter.log_mel(x)
    torch.testing.assert_close(spec, torch.log(ref + 1e-6))
    assert spec.shape == (2, 32, 1 + (3000 - 256) // 80) and mask.all()


def test_resampling_matches_torchaudio_directly() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3001) * 0.1
    adapter = AudioFrameAdapter(8000, 8, target_rate=16000, n_mels=40)
    resampled = torchaudio.functional.resample(x, 8000, 16000)
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, hop_length=160, n_mels=40, center=False
    )(resampled)
    spec, _ = adapter.log_mel(x)
    torch.testing.assert_close(spec, torch.log(ref + 1e-6))


def test_frame_nodes_shapes_and_time_positions() -> None:
    adapter = AudioFrameAdapter(16000, 12, n_mels=16)
    nodes = adapter(torch.randn(3, 1600))
    frames = 1 + (1600 - 400) // 160
    assert nodes.features.shape == (3, frames, 12) and nodes.mask.all()
    assert nodes.position_kind == "time" and nodes.modality == "audio"
    want = (torch.arange(frames) * 160 + 200) / 16000  # window centres in seconds
    torch.testing.assert_close(nodes.positions[0], want)


def test_stereo_is_downmixed_by_channel_mean() -> None:
    torch.manual_seed(0)
    adapter = AudioFrameAdapter(8000, 8, n_mels=16)
    stereo = torch.randn(2, 2, 1000)
    torch.testing.assert_close(adapter(stereo).features, adapter(stereo.mean(1)).features)


@pytest.mark.parametrize("target_rate", [None, 16000])
def test_lengths_mask_and_padding_invariance(target_rate: int | None) -> None:
    """Garbage after ``lengths`` never changes real frames; batch equals one by one."""
    torch.manual_seed(0)
    adapter = AudioFrameAdapter(8000, 16, target_rate=target_rate, n_mels=16)
    attn = GraphAttention(16, 2).eval()
    clips = [torch.randn(1800) * 0.1, torch.randn(1200) * 0.1]
    batch = torch.randn(2, 1800) * 5  # garbage padding
    batch[0], batch[1, :1200] = clips[0], clips[1]
    nodes = adapter(batch, lengths=torch.tensor([1800, 1200]))
    out = attn(nodes.features, nodes.graph())
    for i, clip in enumerate(clips):
        single = adapter(clip[None])
        n = single.num_nodes
        assert int(nodes.mask[i].sum()) == n
        torch.testing.assert_close(nodes.features[i, :n], single.features[0], atol=1e-4, rtol=1e-4)
        ref = attn(single.features, single.graph())[0]
        torch.testing.assert_close(out[i, :n], ref, atol=1e-4, rtol=1e-4)


def test_patch_nodes_ast_style() -> None:
    adapter = AudioFrameAdapter(8000, 8, n_mels=16, patch=(4, 3))
    x = torch.randn(2, 3000)
    frames = 1 + (3000 - 400) // 160  # 17 -> 5 time patches, last 2 frames dropped
    nodes = adapter(x, lengths=torch.tensor([3000, 1000]))
    assert nodes.grid_shape == (4, 5) and nodes.features.shape == (2, 20, 8)
    real_cols = (1 + (1000 - 400) // 160) // 3
    assert nodes.mask[1].view(4, 5).sum(0).tolist() == [4] * real_cols + [0] * (5 - real_cols)
    assert frames // 3 == 5
    centre = (torch.arange(5) * 3 + 1.0) * 160 + 200
    torch.testing.assert_close(nodes.positions[0, :5], centre / 8000)
    torch.testing.assert_close(nodes.positions[0, 5:10], centre / 8000)  # row-major
    # the patch conv sees exactly the log-mel blocks
    spec, _ = adapter.log_mel(x)
    block = spec[0, 4:8, 3:6].reshape(-1)  # mel rows 4..7, frames 3..5 -> node (1, 1)
    w = adapter.proj.weight.reshape(8, -1)
    want = w @ block + adapter.proj.bias + sinusoidal_2d(4, 5, 8)[6]
    torch.testing.assert_close(nodes.features[0, 6], want)


def test_too_short_audio_gives_minimum_length() -> None:
    with pytest.raises(ValueError, match="399 samples, but one window .* at least 400 samples"):
        AudioFrameAdapter(16000, 8)(torch.randn(1, 399))
    up = AudioFrameAdapter(8000, 8, target_rate=16000)
    assert up.min_samples == 200
    up(torch.randn(1, 200))  # exactly enough: one frame
    with pytest.raises(ValueError, match="at least 200 samples at sample_rate=8000 \\(resampled"):
        up(torch.randn(1, 199))
    with pytest.raises(ValueError, match="one patch .* at least 720 samples"):
        AudioFrameAdapter(16000, 8, patch=(8, 3))(torch.randn(1, 719))
    with pytest.raises(ValueError, match="300 samples, but one window"):
        AudioFrameAdapter(16000, 8)(torch.randn(2, 1000), lengths=torch.tensor([1000, 300]))


def test_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match="sample_rate must be a positive whole number of Hz, got 0"
    ):
        AudioFrameAdapter(0, 8)
    with pytest.raises(ValueError, match="target_rate must be a positive .* got -8000"):
        AudioFrameAdapter(8000, 8, target_rate=-8000)
    with pytest.raises(ValueError, match=r"n_mels \(64\) must be divisible .* \(5\)"):
        AudioFrameAdapter(8000, 8, patch=(5, 2))
    with pytest.raises(ValueError, match="dim must be divisible by 4 for patches .* got 10"):
        AudioFrameAdapter(8000, 10, patch=(8, 2))
    adapter = AudioFrameAdapter(8000, 8)
    with pytest.raises(TypeError, match="floating point in \\[-1, 1\\], got torch.int16"):
        adapter(torch.zeros(1, 1000, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\(B, T\) or \(B, C, T\), got \(1000,\)"):
        adapter(torch.zeros(1000))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=1000\]"):
        adapter(torch.zeros(1, 1000), lengths=torch.tensor([1001]))
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor of shape \(B,\)"):
        adapter(torch.zeros(2, 1000), lengths=torch.tensor([1000]))


@pytest.mark.parametrize("patch", [None, (8, 2)])
def test_every_parameter_gets_a_gradient(patch) -> None:
    adapter = AudioFrameAdapter(8000, 8, n_mels=16, patch=patch)
    adapter(torch.randn(2, 1200)).features.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


# ----------------------------------------------------------------------------- log-mel hook
def test_transform_hook_sits_between_log_mel_and_projection() -> None:
    torch.manual_seed(0)
    x, lengths = torch.randn(2, 2000) * 0.1, torch.tensor([2000, 1200])
    seen: list[tuple[Tensor, Tensor]] = []

    def record(spec: Tensor, mask: Tensor) -> Tensor:
        seen.append((spec, mask))
        return spec * 0  # (B, M, F): the projection then gives its bias

    def add_one(spec: Tensor, mask: Tensor) -> Tensor:
        return spec + 1

    adapter = AudioFrameAdapter(8000, 8, n_mels=16, transform=[record, add_one])
    plain = AudioFrameAdapter(8000, 8, n_mels=16)
    plain.load_state_dict(adapter.state_dict())  # the hook holds no parameters
    nodes = adapter(x, lengths)
    ((spec, mask),) = seen
    want_spec, want_mask = plain.log_mel(x, lengths)
    torch.testing.assert_close(spec, want_spec)  # called on the log-mel frames and their mask
    assert torch.equal(mask, want_mask) and torch.equal(nodes.mask, want_mask)
    # applied in order, then projected: zeros + 1 -> W @ 1 + b, plus the positions
    ones = adapter.proj(torch.ones(16))  # (D,)
    pos = nodes.features - ones  # (B, F, D)
    torch.testing.assert_close(pos[0], pos[1])
    torch.testing.assert_close(adapter.log_mel(x, lengths, transformed=True)[0], spec * 0 + 1)
    # no hook (default) and an empty one are the same adapter
    halves = adapter.to_nodes(*adapter.log_mel(x, lengths, transformed=True))
    torch.testing.assert_close(halves.features, nodes.features)  # forward's two halves
    assert torch.equal(halves.mask, nodes.mask) and torch.equal(halves.positions, nodes.positions)
    with pytest.raises(ValueError, match="spec must have n_mels=16 bins, got 8"):
        adapter.to_nodes(spec[:, :8], mask)
    empty = AudioFrameAdapter(8000, 8, n_mels=16, transform=[])
    empty.load_state_dict(plain.state_dict())
    torch.testing.assert_close(empty(x, lengths).features, plain(x, lengths).features)


def test_transform_modules_follow_train_and_eval() -> None:
    aug = SpecAugment(4, 4)
    adapter = AudioFrameAdapter(8000, 8, n_mels=16, patch=(4, 2), transform=aug)
    assert list(adapter.transforms) == [aug] and "SpecAugment" in repr(adapter)
    adapter.eval()
    assert not aug.training
    x = torch.randn(3, 2000)
    torch.testing.assert_close(adapter(x).features, adapter(x).features)  # eval: no masks
    adapter.train()
    assert aug.training


def test_utterance_norm_zero_mean_unit_variance_over_real_frames() -> None:
    torch.manual_seed(0)
    spec = torch.randn(3, 16, 20) * 4 + 7  # (B, M, F)
    lengths = [20, 13, 1]
    mask = torch.arange(20)[None, :] < torch.tensor(lengths)[:, None]  # (B, F)
    garbage = torch.where(mask[:, None, :], spec, torch.full_like(spec, float("nan")))
    out = UtteranceNorm()(garbage, mask)
    assert torch.isfinite(out).all() and not out[~mask[:, None, :].expand_as(out)].any()
    for i, n in enumerate(lengths[:2]):
        real = out[i, :, :n]  # (M, n)
        torch.testing.assert_close(real.mean(-1), torch.zeros(16), atol=1e-5, rtol=0)
        torch.testing.assert_close(real.var(-1, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)
        ref = spec[i, :, :n]  # the utterance alone, without its padding
        ref = (ref - ref.mean(-1, keepdim=True)) / ref.std(-1, unbiased=False, keepdim=True)
        torch.testing.assert_close(real, ref, atol=1e-4, rtol=1e-4)
    assert not out[2].any()  # one frame: zero deviation, all zeros
    mean_only = UtteranceNorm(variance=False)(spec, mask)
    torch.testing.assert_close(mean_only[0], spec[0] - spec[0].mean(-1, keepdim=True))
    whole = UtteranceNorm(per_bin=False)(spec, mask)[1, :, :13]  # one mean for bins and time
    torch.testing.assert_close(whole.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(whole.var(unbiased=False), torch.tensor(1.0), atol=1e-3, rtol=0)
    empty = torch.zeros(1, 20, dtype=torch.bool)
    assert not UtteranceNorm()(spec[:1], empty).any()  # no real frame: zeros, not NaN


def test_spec_augment_masks_in_training_only_inside_real_frames() -> None:
    torch.manual_seed(0)
    spec = torch.rand(64, 16, 20) + 1  # (B, M, F), never 0
    lengths = torch.randint(3, 21, (64,))
    mask = torch.arange(20)[None, :] < lengths[:, None]  # (B, F)
    aug = SpecAugment(6, 5, freq_masks=2, time_masks=1)
    out = aug(spec, mask)
    zero = out == 0  # (B, M, F)
    assert zero.any() and torch.equal(out[~zero], spec[~zero])  # masks are set to 0
    full_bins = zero.all(-1)  # (B, M): frequency masks span all frames
    assert full_bins.any(1).float().mean() > 0.5  # most recordings lose a band
    assert (full_bins.sum(1) <= 12).all()  # 2 bands of at most 6 bins
    cols = zero.all(1) & ~full_bins.all(1, keepdim=True)  # (B, F) time-masked frames
    assert cols.any() and not (cols & ~mask).any()  # never in the padding
    assert (cols.sum(1) <= 5).all()
    aug.eval()
    assert aug(spec, mask) is spec  # identity in eval mode
    assert SpecAugment()(spec, mask) is spec  # no masks asked for


def test_spec_transform_errors_name_the_argument() -> None:
    with pytest.raises(TypeError, match="transform must be a callable .* got 3 \\(int\\)"):
        AudioFrameAdapter(8000, 8, transform=3)
    with pytest.raises(TypeError, match=r"transform\[1\] must be a callable .* got 'x' \(str\)"):
        AudioFrameAdapter(8000, 8, transform=[UtteranceNorm(), "x"])
    bad = AudioFrameAdapter(8000, 8, n_mels=16, transform=lambda spec, mask: spec[:, :8])
    with pytest.raises(ValueError, match=r"output of transform\[0\] \(_SpecFunction\) must be"):
        bad(torch.randn(1, 1000))
    with pytest.raises(ValueError, match="freq_width must be >= 0, got -1"):
        SpecAugment(-1)
    with pytest.raises(TypeError, match="time_width must be an int, got 2.5"):
        SpecAugment(4, 2.5)
    with pytest.raises(ValueError, match=r"time_fraction must be in \(0, 1\], got 0.0"):
        SpecAugment(4, 4, time_fraction=0.0)
    with pytest.raises(ValueError, match="eps must be > 0, got 0"):
        UtteranceNorm(eps=0)
    with pytest.raises(TypeError, match="variance must be a bool, got 1"):
        UtteranceNorm(variance=1)
    with pytest.raises(TypeError, match=r"mask must be a bool tensor of shape \(B, F\) = \(2, 5\)"):
        UtteranceNorm()(torch.zeros(2, 3, 5), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"spec must be a float tensor of shape \(B, M, F\)"):
        SpecAugment(2)(torch.zeros(3, 5), torch.ones(3, 5, dtype=torch.bool))


def test_vtlp_moves_formants_with_alpha_and_only_in_training() -> None:
    torch.manual_seed(0)
    vtlp = VTLP(8000, 40, max_warp=0.1)
    spec = torch.randn(3, 40, 12)  # (B, M, F)
    mask = torch.arange(12)[None, :] < torch.tensor([[12], [7], [1]])  # (B, F)
    same = vtlp.warp(spec, mask, torch.ones(3))
    torch.testing.assert_close(same, spec, atol=1e-5, rtol=0)  # alpha 1: the identity
    bump = torch.zeros(2, 40, 1)
    bump[:, 10] = 1.0  # one formant at bin 10
    one = torch.ones(2, 1, dtype=torch.bool)
    out = vtlp.warp(bump, one, torch.tensor([0.9, 1.1]))[:, :, 0]  # (2, M)
    centre = (out * torch.arange(40.0)).sum(1) / out.sum(1)  # (2,) centre of mass in bins
    assert centre[0] < 10 < centre[1]  # a longer tract lowers it, a shorter one raises it
    ramp = torch.arange(40.0)[None, :, None]  # (1, M, 1): the bin index itself
    up = vtlp.warp(ramp, one[:1], torch.tensor([1.1]))[0, :, 0]  # reads lower bins
    shift = ramp[0, :, 0] - up  # (M,) how many bins lower each output reads
    assert bool((up[1:] >= up[:-1]).all()) and bool((shift[1:] > 0).all())  # monotonic
    assert shift[-1] < shift[29] / 2  # above the boundary the shift shrinks: f_max is kept
    warped = vtlp(spec, mask)  # training mode: a random alpha per utterance
    pad = ~mask[:, None, :].expand_as(spec)  # (B, M, F)
    assert torch.equal(warped[pad], spec[pad]) and not torch.allclose(warped, spec)
    assert vtlp.eval()(spec, mask) is spec  # identity in eval mode
    assert VTLP(8000, 40, max_warp=0.0)(spec, mask) is spec  # no warp asked for
    adapter = AudioFrameAdapter(8000, 8, n_mels=40, n_fft=256, hop_length=80, transform=vtlp)
    assert list(adapter.transforms) == [vtlp] and "VTLP" in repr(adapter)


def test_vtlp_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"max_warp must be in \[0, 1\), got 1.0"):
        VTLP(8000, 40, max_warp=1.0)
    with pytest.raises(ValueError, match=r"boundary must be in \(0, 1\), got 0"):
        VTLP(8000, 40, boundary=0)
    with pytest.raises(TypeError, match="n_mels must be an int, got 2.5"):
        VTLP(8000, 2.5)
    vtlp = VTLP(8000, 40)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="spec must have n_mels=40 bins, got 20"):
        vtlp.warp(torch.zeros(2, 20, 5), mask, torch.ones(2))
    with pytest.raises(ValueError, match=r"alpha must be a positive tensor of shape \(B,\)"):
        vtlp.warp(torch.zeros(2, 40, 5), mask, torch.tensor([1.0, -1.0]))
