"""Audio as nodes: log-mel frames (or AST-style time-frequency patches) with time positions.

Pipeline of :class:`AudioFrameAdapter`::

    waveform (B, T) or (B, C, T)
      -> downmix: mean over channels (stereo L/R -> (L + R) / 2)
      -> resample to target_rate with torchaudio.functional.resample (if it differs)
      -> torchaudio.transforms.MelSpectrogram(center=False) -> log(mel + eps)
      -> the transform hook, if any: (spec, frame mask) -> spec, e.g. UtteranceNorm,
         SpecAugment, VTLP (both training only)
      -> frames as nodes (Linear n_mels -> D), or (f, t) patches as nodes (Conv2d, AST)
      -> + fixed sin-cos position encoding; positions = window-centre times in seconds

``center=False`` means every frame is one whole window inside the signal: a clip needs at
least ``n_fft`` samples (after resampling) for one frame, and with per-sample ``lengths`` a
frame is real exactly when its window lies inside the real samples, so padding never changes
a real frame. :func:`load_wav` reads integer PCM WAV files (no FFmpeg) and refuses an empty,
truncated or inconsistent file with a :class:`ValueError` that names the file and the fault.

Reference: Gong et al., "AST: Audio Spectrogram Transformer" (2021) for patches.

Axis legend: ``B`` batch, ``C`` channels, ``T`` samples, ``M`` mel bins, ``F`` frames,
``N`` nodes, ``D`` node feature size.
"""

from __future__ import annotations

import math
import numbers
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from graphattn.positional import sinusoidal_2d, sinusoidal_encoding

from ._common import (
    arg_error,
    check_bool,
    check_float,
    check_int,
    check_mask,
    check_tensor,
    pair,
)
from .nodes import NodeSet

__all__ = [
    "load_wav",
    "AudioFrameAdapter",
    "SpecTransform",
    "UtteranceNorm",
    "SpecAugment",
    "VTLP",
]


#: WAV format tags load_wav names when it refuses them (it reads integer PCM, tag 1, only).
_WAV_FORMATS = {
    0x0001: "integer PCM",
    0x0002: "Microsoft ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
    0xFFFE: "WAVE_FORMAT_EXTENSIBLE",
}


def _wav_error(path: str, problem: str) -> ValueError:
    return ValueError(f"cannot read WAV file {path!r}: {problem}")


def _parse_wav(path: str, data: bytes) -> tuple[int, int, int, memoryview]:
    """Walk the RIFF chunks of ``data``; return ``(channels, sample_width, rate, samples)``
    or raise :func:`_wav_error` saying what is missing, cut or inconsistent."""
    size = len(data)
    if size == 0:
        raise _wav_error(path, "the file is empty (0 bytes)")
    if size < 12:
        raise _wav_error(path, f"the file is {size} bytes, shorter than the 12-byte RIFF header")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _wav_error(
            path, f"it does not start with a RIFF/WAVE header (its first bytes are {data[:12]!r})"
        )
    fmt: tuple[int, int, int, int, int] | None = None
    pos = 12
    while True:
        if pos >= size:
            missing = "fmt and data chunks" if fmt is None else "data chunk"
            raise _wav_error(path, f"it has no {missing} (the file ends at byte {size})")
        if pos + 8 > size:
            raise _wav_error(
                path, f"the file ends inside a chunk header at byte {pos} (it is truncated)"
            )
        chunk_id, chunk_size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        present = size - body
        if chunk_id == b"data":
            if fmt is None:
                raise _wav_error(path, "its data chunk comes before any fmt chunk")
            break
        if chunk_size > present:  # a chunk before the samples is cut: so are the samples
            name = chunk_id.decode("latin-1").strip()
            raise _wav_error(
                path,
                f"the file ends inside its {name} chunk ({present} of {chunk_size} bytes "
                "present): it is truncated",
            )
        if chunk_id == b"fmt ":
            if chunk_size < 16:
                raise _wav_error(
                    path, f"its fmt chunk is {chunk_size} bytes, fewer than the 16 PCM needs"
                )
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = (tag, channels, rate, block_align, bits)
        pos = body + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    tag, channels, rate, block_align, bits = fmt
    if tag != 0x0001:
        name = _WAV_FORMATS.get(tag, "unknown")
        raise _wav_error(
            path,
            f"it is not an integer PCM WAV file (format tag {tag:#06x}, {name}); "
            "convert it to 16-bit PCM",
        )
    if channels == 0:
        raise _wav_error(path, "its fmt chunk declares 0 channels")
    if rate == 0:
        raise _wav_error(path, "its fmt chunk declares a sample rate of 0 Hz")
    width = (bits + 7) // 8
    if width not in (1, 2, 3, 4):
        raise _wav_error(
            path, f"unsupported sample width of {bits} bits (8, 16, 24 and 32-bit PCM are read)"
        )
    frame = channels * width
    if block_align != frame:
        raise _wav_error(
            path,
            f"its fmt chunk is inconsistent: block_align is {block_align} bytes but "
            f"{channels} channel(s) x {width} byte(s) per sample make {frame}",
        )
    if chunk_size > present:
        raise _wav_error(
            path,
            f"its data chunk declares {chunk_size} bytes but only {present} follow: the file "
            "is truncated (or its writer never filled in the final size)",
        )
    if chunk_size == 0:
        after = f" but {present} bytes follow it (its writer never filled in the size?)"
        raise _wav_error(
            path, "it holds no audio: its data chunk is empty" + (after if present else "")
        )
    if chunk_size % frame:
        raise _wav_error(
            path,
            f"its data chunk holds {chunk_size} bytes, not a whole number of {frame}-byte "
            f"frames ({channels} channel(s) x {width} byte(s)): the last frame is cut "
            "mid-sample",
        )
    return channels, width, rate, memoryview(data)[body : body + chunk_size]


def load_wav(path: str | os.PathLike[str]) -> tuple[Tensor, int]:
    """Read a PCM WAV file, with a small RIFF reader of its own (no FFmpeg).

    Supports 8-bit (unsigned), 16-, 24- and 32-bit (signed) integer PCM; samples are
    scaled by ``1 / 2**(bits - 1)`` into ``[-1, 1)``. Chunks other than ``fmt`` and
    ``data`` are skipped, and whatever follows the data chunk is ignored.

    A file is refused whole rather than read in part: the whole data chunk must be present
    and hold whole frames.

    Args:
        path: the ``.wav`` file.

    Returns:
        ``(waveform, sample_rate)``, waveform ``(C, T)`` float32 with ``T >= 1``.

    Raises:
        TypeError: ``path`` is not a ``str`` or path-like.
        OSError: the file cannot be opened (``FileNotFoundError``, ...).
        ValueError: the file is not integer PCM (float, compressed), or is empty, truncated
            (cut in its header, its fmt chunk or its samples) or inconsistent (0 channels,
            0 Hz, an unsupported sample width, a block size that does not match the
            channels, no data chunk or an empty one); the message names the file and what
            is wrong.
    """
    if not isinstance(path, str | os.PathLike) or not isinstance(os.fspath(path), str):
        raise arg_error(TypeError, "path", "a str or os.PathLike", path)
    name = os.fspath(path)
    with open(name, "rb") as f:
        data = f.read()
    channels, width, rate, raw = _parse_wav(name, data)
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)  # sign-extend 24 bits
        samples = ints.astype(np.float32) / float(1 << 23)
    else:
        samples = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(
            np.float32
        )
    waveform = torch.from_numpy(samples.reshape(-1, channels).T.copy())  # (C, T)
    return waveform, rate


def _check_rate(name: str, value: Any, *, optional: bool = False) -> int | None:
    """A sample rate: a positive whole number of Hz (an int, or a float such as 8000.0)."""
    if value is None and optional:
        return None
    what = "a positive whole number of Hz" + (" or None" if optional else "")
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        raise arg_error(TypeError, name, what, value)
    if not (math.isfinite(value) and value > 0 and int(value) == value):
        raise arg_error(ValueError, name, what, value)
    return int(value)


#: A transform of the log-mel spectrogram, called by :class:`AudioFrameAdapter` between the
#: log and the projection: ``(spec (B, M, F), frame mask (B, F), True = real) -> (B, M, F)``.
SpecTransform = Callable[[Tensor, Tensor], Tensor]


def _check_spec(spec: Any, mask: Any, mask_name: str = "mask") -> tuple[Tensor, Tensor]:
    """``spec`` ``(B, M, F)`` float and its frame ``mask`` ``(B, F)`` bool, or an error."""
    check_tensor("spec", spec, "a float tensor of shape (B, M, F)")
    if spec.dim() != 3 or not spec.is_floating_point():
        raise arg_error(ValueError, "spec", "a float tensor of shape (B, M, F)", spec)
    b, _, f = spec.shape
    return spec, check_mask(mask_name, mask, (b, f), "(B, F)")


class UtteranceNorm(nn.Module):
    """Per-utterance normalisation of the log-mel frames (cepstral mean and variance
    normalisation): subtract the mean over the utterance's real frames and, with
    ``variance``, divide by their standard deviation.

    A fixed colouring of the spectrum (a microphone, a room, a voice's overall timbre) and
    the recording level are constant offsets of the log-mel frames, so this removes them.
    The statistics are those of the real frames only (``mask``); padded frames do not change
    them and come out as 0. An utterance without real frames comes out as zeros.

    On short utterances (one word), the per-bin mean is also the word's average spectrum, so
    ``per_bin=True`` removes content along with the channel: on spoken digits (FSDD) it cost
    2-4 points of accuracy on known speakers, where ``per_bin=False`` (level and contrast
    only) cost none (``examples/spoken_digits.py``).

    Args:
        variance: also divide by the standard deviation (else subtract the mean only).
        per_bin: one mean (and deviation) per mel bin, over time (CMVN); ``False``: one for
            the whole utterance, over bins and time.
        eps: added to the variance before the square root.

    Shapes:
        - spec: ``(B, M, F)``; mask: ``(B, F)`` bool, True = real frame; returns
          ``(B, M, F)``, zero on the padded frames.

    Reference: Viikki and Laurila, "Cepstral domain segmental feature vector normalization
    for noise robust speech recognition" (1998); equivalent to, per utterance,
    ``(x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True)`` over the
    real frames.

    Example:
        >>> norm = UtteranceNorm()
        >>> spec, mask = torch.randn(2, 40, 30) * 3 + 5, torch.ones(2, 30, dtype=torch.bool)
        >>> out = norm(spec, mask)
        >>> out.mean(-1).abs().max() < 1e-4, (out.var(-1, unbiased=False) - 1).abs().max() < 1e-3
        (tensor(True), tensor(True))
    """

    def __init__(self, *, variance: bool = True, per_bin: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.variance = check_bool("variance", variance)
        self.per_bin = check_bool("per_bin", per_bin)
        self.eps = check_float("eps", eps)
        if self.eps <= 0:
            raise arg_error(ValueError, "eps", "> 0", eps)

    def forward(self, spec: Tensor, mask: Tensor) -> Tensor:
        """The normalised frames, zero on the padding.

        Shapes:
            - spec: ``(B, M, F)``; mask: ``(B, F)`` bool; returns ``(B, M, F)``.
        """
        spec, mask = _check_spec(spec, mask)
        real = mask[:, None, :]  # (B, 1, F)
        dims = (2,) if self.per_bin else (1, 2)
        count = real.sum(dims, keepdim=True).clamp(min=1)  # (B, 1, 1): real frames
        if not self.per_bin:
            count = count * spec.shape[1]  # (B, 1, 1): real cells
        # where, not a product: NaN or inf in the padding must not reach the statistics
        x = torch.where(real, spec, spec.new_zeros(()))  # (B, M, F)
        mean = x.sum(dims, keepdim=True) / count  # (B, M, 1) or (B, 1, 1)
        out = torch.where(real, x - mean, spec.new_zeros(()))  # (B, M, F)
        if self.variance:
            var = out.square().sum(dims, keepdim=True) / count  # (B, M, 1) or (B, 1, 1)
            out = out * torch.rsqrt(var + self.eps)  # (B, M, F)
        return out

    def extra_repr(self) -> str:
        return f"variance={self.variance}, per_bin={self.per_bin}, eps={self.eps}"


class SpecAugment(nn.Module):
    """SpecAugment masking of log-mel frames, in training mode only (identity in eval).

    ``freq_masks`` bands of up to ``freq_width`` mel bins and ``time_masks`` spans of up to
    ``time_width`` frames are set to ``mask_value``, drawn independently for every
    utterance, with :class:`torchaudio.transforms.FrequencyMasking` and
    :class:`torchaudio.transforms.TimeMasking` (``iid_masks=True``). Time masks fall inside
    each utterance's real frames and cover at most ``time_fraction`` of them.

    Put it after :class:`UtteranceNorm`, so that the default ``mask_value`` of 0 is the
    utterance's mean (on raw log-mel frames 0 is ``log 1``, a loud value).

    Args:
        freq_width: widest frequency mask ``F``, in mel bins (0: no frequency masks).
        time_width: widest time mask ``T``, in frames (0: no time masks).
        freq_masks: frequency masks per utterance ``mF``.
        time_masks: time masks per utterance ``mT``.
        time_fraction: a time mask covers at most this fraction of the real frames (``p``).
        mask_value: the value written into the masks.

    Shapes:
        - spec: ``(B, M, F)``; mask: ``(B, F)`` bool, True = real frame; returns ``(B, M, F)``.

    Reference: Park et al., "SpecAugment: A Simple Data Augmentation Method for Automatic
    Speech Recognition" (2019).

    Example:
        >>> aug = SpecAugment(freq_width=8, time_width=5, freq_masks=2)
        >>> spec, mask = torch.randn(4, 40, 30), torch.ones(4, 30, dtype=torch.bool)
        >>> torch.equal(aug.eval()(spec, mask), spec)
        True
    """

    def __init__(
        self,
        freq_width: int = 0,
        time_width: int = 0,
        *,
        freq_masks: int = 1,
        time_masks: int = 1,
        time_fraction: float = 1.0,
        mask_value: float = 0.0,
    ) -> None:
        super().__init__()
        import torchaudio

        self.freq_width = check_int("freq_width", freq_width, minimum=0)
        self.time_width = check_int("time_width", time_width, minimum=0)
        self.freq_masks = check_int("freq_masks", freq_masks, minimum=0)
        self.time_masks = check_int("time_masks", time_masks, minimum=0)
        self.time_fraction = check_float("time_fraction", time_fraction)
        if not 0.0 < self.time_fraction <= 1.0:
            raise arg_error(ValueError, "time_fraction", "in (0, 1]", time_fraction)
        self.mask_value = check_float("mask_value", mask_value)
        self.freq = torchaudio.transforms.FrequencyMasking(self.freq_width, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(
            self.time_width, iid_masks=True, p=self.time_fraction
        )

    def forward(self, spec: Tensor, mask: Tensor) -> Tensor:
        """The masked frames in training mode; ``spec`` itself in eval mode.

        Shapes:
            - spec: ``(B, M, F)``; mask: ``(B, F)`` bool; returns ``(B, M, F)``.
        """
        spec, mask = _check_spec(spec, mask)
        if not self.training:
            return spec
        if self.freq_width and self.freq_masks:
            for _ in range(self.freq_masks):
                spec = self.freq(spec, self.mask_value)  # (B, M, F)
        if self.time_width and self.time_masks:
            lengths = mask.sum(1).tolist()  # real frames per utterance
            parts = []
            for i, n in enumerate(lengths):  # inside the real frames of each utterance
                one = spec[i : i + 1, :, :n]  # (1, M, n)
                for _ in range(self.time_masks):
                    one = self.time(one, self.mask_value)
                parts.append(torch.cat([one, spec[i : i + 1, :, n:]], dim=2))  # (1, M, F)
            spec = torch.cat(parts) if parts else spec  # (B, M, F)
        return spec

    def extra_repr(self) -> str:
        return (
            f"freq_width={self.freq_width}, time_width={self.time_width}, "
            f"freq_masks={self.freq_masks}, time_masks={self.time_masks}, "
            f"time_fraction={self.time_fraction}, mask_value={self.mask_value}"
        )


class VTLP(nn.Module):
    """Vocal tract length perturbation of log-mel frames, in training mode only (identity
    in eval): the frequency axis of every utterance is warped by its own random factor
    ``alpha``, drawn uniformly from ``[1 - max_warp, 1 + max_warp]``, as a longer or shorter
    vocal tract moves the formants.

    The warp is Jaitly and Hinton's piecewise-linear one: a frequency ``f`` goes to
    ``alpha * f`` up to ``boundary * f_max * min(alpha, 1) / alpha``, and the rest of the
    band is stretched linearly so that ``f_max`` stays in place (no energy leaves the band).
    It is applied to the log-mel frames themselves: output bin ``i`` (centre frequency
    ``c_i``, HTK mel scale, as :class:`torchaudio.transforms.MelSpectrogram`) reads the input
    at frequency ``warp⁻¹(c_i)``, linearly interpolated between the neighbouring bins (the
    lowest and highest bins are repeated beyond the ends). Padded frames are returned as
    they came.

    Args:
        sample_rate: the rate of the audio the frames were computed at, Hz.
        n_mels: mel bins ``M`` of the frames.
        max_warp: ``alpha`` lies in ``[1 - max_warp, 1 + max_warp]``; in ``[0, 1)`` (0: off).
        boundary: where the linear part ends, a fraction of ``f_max`` (4.8 kHz of 8 kHz
            in the paper), in ``(0, 1)``.
        f_min: lowest frequency of the mel filterbank, Hz.
        f_max: highest frequency of the mel filterbank, Hz (``None``: ``sample_rate / 2``).

    Shapes:
        - spec: ``(B, M, F)``; mask: ``(B, F)`` bool, True = real frame; alpha (of
          :meth:`warp`): ``(B,)``; returns ``(B, M, F)``.

    Reference: Jaitly and Hinton, "Vocal Tract Length Perturbation (VTLP) improves speech
    recognition" (ICML workshop, 2013).

    Example:
        >>> vtlp = VTLP(8000, 40, max_warp=0.1)
        >>> spec, mask = torch.randn(4, 40, 30), torch.ones(4, 30, dtype=torch.bool)
        >>> vtlp(spec, mask).shape, torch.equal(vtlp.eval()(spec, mask), spec)
        (torch.Size([4, 40, 30]), True)
    """

    def __init__(
        self,
        sample_rate: int,
        n_mels: int,
        *,
        max_warp: float = 0.1,
        boundary: float = 0.6,
        f_min: float = 0.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        self.sample_rate = _check_rate("sample_rate", sample_rate)
        self.n_mels = check_int("n_mels", n_mels)
        self.max_warp = check_float("max_warp", max_warp)
        if not 0.0 <= self.max_warp < 1.0:
            raise arg_error(ValueError, "max_warp", "in [0, 1)", max_warp)
        self.boundary = check_float("boundary", boundary)
        if not 0.0 < self.boundary < 1.0:
            raise arg_error(ValueError, "boundary", "in (0, 1)", boundary)
        self.f_min = check_float("f_min", f_min)
        top = check_float("f_max", f_max, optional=True)
        self.f_max = self.sample_rate / 2 if top is None else top
        if not 0.0 <= self.f_min < self.f_max:
            raise ValueError(f"f_min ({f_min}) must lie in [0, f_max) = [0, {self.f_max})")
        lo, hi = self._mel(torch.tensor(self.f_min)), self._mel(torch.tensor(self.f_max))
        points = torch.linspace(float(lo), float(hi), self.n_mels + 2, dtype=torch.float64)
        self.register_buffer("centres", self._hz(points[1:-1]), persistent=False)  # (M,) Hz

    @staticmethod
    def _mel(hz: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)  # HTK mel scale

    @staticmethod
    def _hz(mel: Tensor) -> Tensor:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    def warp(self, spec: Tensor, mask: Tensor, alpha: Tensor) -> Tensor:
        """The frames warped by ``alpha`` per utterance (``alpha`` > 1: formants move up).

        Shapes:
            - spec: ``(B, M, F)``; mask: ``(B, F)`` bool; alpha: ``(B,)``; returns
              ``(B, M, F)``.
        """
        spec, mask = _check_spec(spec, mask)
        b, m, _ = spec.shape
        if m != self.n_mels:
            raise ValueError(f"spec must have n_mels={self.n_mels} bins, got {m}")
        check_tensor("alpha", alpha, f"a positive float tensor of shape (B,) = ({b},)")
        if alpha.shape != (b,) or not bool((alpha > 0).all()):
            raise arg_error(ValueError, "alpha", f"a positive tensor of shape (B,) = ({b},)", alpha)
        a = alpha.to(self.centres)[:, None]  # (B, 1)
        out_f = self.centres[None, :]  # (1, M): the frequency each output bin holds
        knee = self.boundary * self.f_max * a.clamp(max=1.0)  # (B, 1): warped end of the line
        src = torch.where(  # (B, M): the input frequency warp⁻¹(out_f)
            out_f <= knee,
            out_f / a,
            self.f_max - (self.f_max - knee / a) / (self.f_max - knee) * (self.f_max - out_f),
        )
        mel_lo, mel_hi = self._mel(torch.tensor(self.f_min)), self._mel(torch.tensor(self.f_max))
        step = (mel_hi - mel_lo) / (m + 1)
        pos = ((self._mel(src) - mel_lo) / step - 1).clamp(0, m - 1)  # (B, M) fractional bin
        left = pos.floor().long().clamp(max=m - 2) if m > 1 else pos.long()  # (B, M)
        right = (left + 1).clamp(max=m - 1)  # (B, M)
        frac = (pos - left).to(spec.dtype)[:, :, None]  # (B, M, 1)
        f = spec.shape[2]
        lo = torch.gather(spec, 1, left[:, :, None].expand(-1, -1, f))  # (B, M, F)
        hi = torch.gather(spec, 1, right[:, :, None].expand(-1, -1, f))  # (B, M, F)
        out = lo + frac * (hi - lo)  # (B, M, F)
        return torch.where(mask[:, None, :], out, spec)

    def forward(self, spec: Tensor, mask: Tensor) -> Tensor:
        """The warped frames in training mode; ``spec`` itself in eval mode.

        Shapes:
            - spec: ``(B, M, F)``; mask: ``(B, F)`` bool; returns ``(B, M, F)``.
        """
        spec, mask = _check_spec(spec, mask)
        if not self.training or self.max_warp == 0:
            return spec
        alpha = 1.0 + self.max_warp * (2 * torch.rand(len(spec), device=spec.device) - 1)
        return self.warp(spec, mask, alpha)  # (B, M, F)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, max_warp={self.max_warp}, "
            f"boundary={self.boundary}, f_min={self.f_min}, f_max={self.f_max}"
        )


class _SpecFunction(nn.Module):
    """A plain function used as a :data:`SpecTransform` (kept in a module list)."""

    def __init__(self, fn: SpecTransform) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, spec: Tensor, mask: Tensor) -> Tensor:
        return self.fn(spec, mask)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


class AudioFrameAdapter(nn.Module):
    """Waveforms -> log-mel frames (or time-frequency patches) -> nodes with time positions.

    Args:
        sample_rate: rate of the input waveforms, Hz.
        dim: node feature size ``D``.
        target_rate: resample to this rate first (``None``: keep ``sample_rate``).
        n_mels: mel bins ``M``.
        n_fft: window (and FFT) length in samples at the working rate.
        hop_length: samples between frames at the working rate.
        patch: ``None`` makes each frame a node; ``(f, t)`` makes each block of ``f`` mel
            bins by ``t`` frames a node (AST); ``n_mels`` must be divisible by ``f`` and
            trailing frames that do not fill a patch are dropped; ``dim`` must be divisible
            by 4 (2-D sin-cos positions).
        eps: added to the mel power before the log.
        transform: a hook between the log-mel and the projection: a :data:`SpecTransform`
            ``(spec (B, M, F), frame mask (B, F)) -> (B, M, F)``, or a sequence of them
            applied in order, e.g. ``[UtteranceNorm(), SpecAugment(8, 10)]``. Modules are
            registered as submodules (``transforms``), so ``train()``/``eval()`` and
            ``to()`` reach them. ``None`` (default): the log-mel frames are projected as
            they are.

    Multi-channel input ``(B, C, T)`` is downmixed by the mean over channels.

    Shapes:
        - waveform: ``(B, T)`` or ``(B, C, T)`` float; lengths: ``(B,)`` real samples
        - output (frames): :class:`NodeSet` ``(B, F, D)``, ``F = 1 + (T' - n_fft) //
          hop_length`` for ``T'`` samples at the working rate; time positions ``(B, F)``
          in seconds (window centres)
        - output (patches): ``(B, (M / f) * (F // t), D)`` in row-major order (mel-band rows,
          time columns), ``grid_shape = (M / f, F // t)``, time positions of patch centres

    Example:
        >>> adapter = AudioFrameAdapter(8000, 32, target_rate=16000)
        >>> nodes = adapter(torch.randn(2, 4000))  # 0.5 s at 8 kHz
        >>> nodes.features.shape
        torch.Size([2, 48, 32])
        >>> adapter = AudioFrameAdapter(8000, 32, transform=[UtteranceNorm(), SpecAugment(8, 5)])
        >>> adapter(torch.randn(2, 4000), torch.tensor([4000, 3000])).mask.sum(1).tolist()
        [23, 17]
    """

    def __init__(
        self,
        sample_rate: int,
        dim: int,
        *,
        target_rate: int | None = None,
        n_mels: int = 64,
        n_fft: int = 400,
        hop_length: int = 160,
        patch: tuple[int, int] | None = None,
        eps: float = 1e-6,
        transform: SpecTransform | Sequence[SpecTransform] | None = None,
    ) -> None:
        super().__init__()
        import torchaudio

        self.sample_rate = _check_rate("sample_rate", sample_rate)
        self.target_rate = _check_rate("target_rate", target_rate, optional=True)
        dim = self.dim = check_int("dim", dim)
        n_mels = self.n_mels = check_int("n_mels", n_mels)
        n_fft = self.n_fft = check_int("n_fft", n_fft)
        hop_length = self.hop_length = check_int("hop_length", hop_length)
        self.eps = check_float("eps", eps)
        if self.eps <= 0:
            raise arg_error(ValueError, "eps", "> 0", eps)
        self.patch = None if patch is None else pair("patch", patch)
        if self.patch is not None and n_mels % self.patch[0]:
            raise ValueError(
                f"n_mels ({n_mels}) must be divisible by the patch's mel size ({self.patch[0]})"
            )
        if self.patch is not None and dim % 4:
            raise ValueError(
                f"dim must be divisible by 4 for patches (2-D sin-cos positions), got {dim}"
            )
        self.rate = self.target_rate or self.sample_rate  # working rate
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            center=False,
        )
        if self.patch is None:
            self.proj: nn.Module = nn.Linear(n_mels, dim)
        else:
            self.proj = nn.Conv2d(1, dim, self.patch, stride=self.patch)
        if transform is None:
            chain: list[Any] = []
        elif callable(transform):
            chain = [transform]
        elif isinstance(transform, Sequence) and not isinstance(transform, str):
            chain = list(transform)
        else:
            raise arg_error(
                TypeError,
                "transform",
                "a callable (spec, mask) -> spec, a sequence of them or None",
                transform,
            )
        for i, t in enumerate(chain):
            if not callable(t):
                raise arg_error(TypeError, f"transform[{i}]", "a callable (spec, mask) -> spec", t)
        self.transforms = nn.ModuleList(
            t if isinstance(t, nn.Module) else _SpecFunction(t) for t in chain
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default PyTorch initialisation of the projection."""
        self.proj.reset_parameters()

    @property
    def frames_per_node(self) -> int:
        return 1 if self.patch is None else self.patch[1]

    @property
    def min_samples(self) -> int:
        """Fewest input samples (at ``sample_rate``) that give one node."""
        need = self.n_fft + (self.frames_per_node - 1) * self.hop_length  # at working rate
        if self.rate == self.sample_rate:
            return need
        # resampled length is ceil(T * rate / sample_rate) >= need
        return (need - 1) * self.sample_rate // self.rate + 1

    def _resampled_lengths(self, lengths: Tensor) -> Tensor:
        if self.rate == self.sample_rate:
            return lengths
        g = math.gcd(self.rate, self.sample_rate)
        new, orig = self.rate // g, self.sample_rate // g
        return -((-lengths * new) // orig)  # ceil(len * new / orig), as torchaudio does

    def _prepare(self, waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Check, downmix, zero the padding, resample. Returns ``(B, T')`` and lengths."""
        check_tensor("waveform", waveform, "a float tensor of shape (B, T) or (B, C, T)")
        if not waveform.is_floating_point():
            raise TypeError(
                f"waveform must be floating point in [-1, 1], got {waveform.dtype} "
                "(divide int16 PCM by 32768, or use load_wav)"
            )
        if waveform.dim() == 3:
            waveform = waveform.mean(dim=1)  # (B, T): downmix channels by their mean
        elif waveform.dim() != 2:
            raise ValueError(
                f"waveform must have shape (B, T) or (B, C, T), got {tuple(waveform.shape)}"
            )
        b, t = waveform.shape
        if lengths is not None:
            what = f"an integer tensor of shape (B,) = ({b},)"
            given = lengths
            try:
                lengths = torch.as_tensor(lengths, device=waveform.device)
            except (TypeError, ValueError, RuntimeError):
                raise arg_error(TypeError, "lengths", what, given) from None
            if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
                raise arg_error(TypeError, "lengths", what, given)
            if lengths.shape != (b,):
                raise arg_error(ValueError, "lengths", what, lengths)
            if bool((lengths > t).any()) or bool((lengths < 0).any()):
                raise ValueError(f"lengths must lie in [0, T={t}], got {lengths.tolist()}")
            shortest = int(lengths.min()) if b else t
            real = torch.arange(t, device=waveform.device) < lengths[:, None]  # (B, T)
            # where, not a product: NaN or inf in the padding must not survive (nan * 0 = nan)
            waveform = torch.where(real, waveform, waveform.new_zeros(()))  # zero padding
        else:
            shortest = t
        if shortest < self.min_samples:
            what = "one window" if self.patch is None else "one patch"
            rate = (
                f"sample_rate={self.sample_rate}"
                if self.rate == self.sample_rate
                else f"sample_rate={self.sample_rate} (resampled to {self.rate})"
            )
            raise ValueError(
                f"audio is too short: {shortest} samples, but {what} (n_fft={self.n_fft}, "
                f"hop_length={self.hop_length}) needs at least {self.min_samples} samples at "
                f"{rate}"
            )
        waveform = waveform.to(self.mel.spectrogram.window.dtype)
        if self.rate != self.sample_rate:
            import torchaudio

            waveform = torchaudio.functional.resample(waveform, self.sample_rate, self.rate)
            if lengths is not None:
                lengths = self._resampled_lengths(lengths)
        return waveform, lengths

    def log_mel(
        self, waveform: Tensor, lengths: Tensor | None = None, *, transformed: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The log-mel spectrogram the nodes are made from, and its frame mask.

        Args:
            waveform: ``(B, T)`` or ``(B, C, T)`` float in ``[-1, 1]`` at ``sample_rate``.
            lengths: real samples per clip (the rest is padding), ``(B,)``.
            transformed: pass it through the ``transform`` hook, as :meth:`forward` does
                (``False``: the log-mel frames themselves).

        Shapes:
            - waveform: ``(B, T)`` or ``(B, C, T)``; lengths: ``(B,)``
            - returns ``(B, M, F)`` and mask ``(B, F)`` bool (True = frame inside the
              real samples)
        """
        x, lengths = self._prepare(waveform, lengths)  # (B, T')
        spec = torch.log(self.mel(x) + self.eps)  # (B, M, F)
        b, _, n_frames = spec.shape
        if lengths is None:
            mask = torch.ones(b, n_frames, dtype=torch.bool, device=spec.device)
        else:
            valid = torch.div(lengths - self.n_fft, self.hop_length, rounding_mode="floor") + 1
            mask = torch.arange(n_frames, device=spec.device) < valid[:, None]  # (B, F)
        if transformed:
            spec = self.apply_transforms(spec, mask)  # (B, M, F)
        return spec, mask

    def apply_transforms(self, spec: Tensor, mask: Tensor) -> Tensor:
        """The ``transform`` hook: every transform in order (the identity without any).

        Shapes:
            - spec: ``(B, M, F)``; mask: ``(B, F)`` bool; returns ``(B, M, F)``.

        Raises:
            TypeError, ValueError: a transform returned something else than a tensor of
                the shape of ``spec``; the message names the transform.
        """
        for i, t in enumerate(self.transforms):
            out = t(spec, mask)
            if not isinstance(out, Tensor) or out.shape != spec.shape:
                error = ValueError if isinstance(out, Tensor) else TypeError
                raise arg_error(
                    error,
                    f"the output of transform[{i}] ({type(t).__name__})",
                    f"a tensor of the input's shape (B, M, F) = {tuple(spec.shape)}",
                    out,
                )
            spec = out
        return spec

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> NodeSet:
        """Turn a batch of waveforms into audio nodes.

        Args:
            waveform: ``(B, T)`` or ``(B, C, T)`` float in ``[-1, 1]`` at ``sample_rate``.
            lengths: real samples per clip (the rest is padding), ``(B,)``.

        Shapes:
            - returns a :class:`NodeSet` ``(B, N, D)`` with time positions ``(B, N)``.
        """
        spec, frame_mask = self.log_mel(waveform, lengths, transformed=True)  # (B, M, F), (B, F)
        return self.to_nodes(spec, frame_mask)

    def to_nodes(self, spec: Tensor, frame_mask: Tensor) -> NodeSet:
        """The second half of :meth:`forward`: project (transformed) log-mel frames into
        nodes with time positions. ``forward(w, lengths)`` is
        ``to_nodes(*log_mel(w, lengths, transformed=True))``; call the halves yourself to
        change the frames in a way the hook cannot (their number, say).

        Shapes:
            - spec: ``(B, M, F)``; frame_mask: ``(B, F)`` bool, True = real frame
            - returns a :class:`NodeSet` ``(B, N, D)`` with time positions ``(B, N)``.
        """
        spec, frame_mask = _check_spec(spec, frame_mask, "frame_mask")
        if spec.shape[1] != self.n_mels:
            raise ValueError(f"spec must have n_mels={self.n_mels} bins, got {spec.shape[1]}")
        b, _, n_frames = spec.shape
        hop, half = self.hop_length, self.n_fft / 2
        if self.patch is None:
            x = self.proj(spec.transpose(1, 2))  # (B, F, D)
            x = x + sinusoidal_encoding(n_frames, self.dim, device=x.device, dtype=x.dtype)
            frame = torch.arange(n_frames, device=x.device, dtype=x.dtype)
            times = ((frame * hop + half) / self.rate).expand(b, n_frames)  # (B, F)
            return NodeSet(x, frame_mask, times, "time", modality="audio")
        f, t = self.patch
        fmap = self.proj(spec[:, None])  # (B, D, M / f, F // t)
        rows, cols = fmap.shape[-2:]
        x = fmap.flatten(2).transpose(1, 2)  # (B, N, D), row-major (mel band, time)
        x = x + sinusoidal_2d(rows, cols, self.dim, device=x.device, dtype=x.dtype)
        col_real = frame_mask[:, : cols * t].reshape(b, cols, t).all(-1)  # (B, F // t)
        mask = col_real[:, None, :].expand(b, rows, cols).reshape(b, rows * cols)  # (B, N)
        centre = torch.arange(cols, device=x.device, dtype=x.dtype) * t + (t - 1) / 2
        times = ((centre * hop + half) / self.rate).repeat(rows).expand(b, rows * cols)
        return NodeSet(x, mask, times, "time", modality="audio", grid_shape=(rows, cols))

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, target_rate={self.target_rate}, dim={self.dim}, "
            f"n_mels={self.n_mels}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"patch={self.patch}"
        )
