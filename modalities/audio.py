"""Audio as nodes: log-mel frames (or AST-style time-frequency patches) with time positions.

Pipeline of :class:`AudioFrameAdapter`::

    waveform (B, T) or (B, C, T)
      -> downmix: mean over channels (stereo L/R -> (L + R) / 2)
      -> resample to target_rate with torchaudio.functional.resample (if it differs)
      -> torchaudio.transforms.MelSpectrogram(center=False) -> log(mel + eps)
      -> frames as nodes (Linear n_mels -> D), or (f, t) patches as nodes (Conv2d, AST)
      -> + fixed sin-cos position encoding; positions = window-centre times in seconds

``center=False`` means every frame is one whole window inside the signal: a clip needs at
least ``n_fft`` samples (after resampling) for one frame, and with per-sample ``lengths`` a
frame is real exactly when its window lies inside the real samples, so padding never changes
a real frame. :func:`load_wav` reads PCM WAV files with Python's :mod:`wave` (no FFmpeg).

Reference: Gong et al., "AST: Audio Spectrogram Transformer" (2021) for patches.

Axis legend: ``B`` batch, ``C`` channels, ``T`` samples, ``M`` mel bins, ``F`` frames,
``N`` nodes, ``D`` node feature size.
"""

from __future__ import annotations

import math
import os
import wave

import numpy as np
import torch
from torch import Tensor, nn

from graphattn.positional import sinusoidal_2d, sinusoidal_encoding

from ._common import check_positive_int, pair
from .nodes import NodeSet

__all__ = ["load_wav", "AudioFrameAdapter"]


def load_wav(path: str | os.PathLike) -> tuple[Tensor, int]:
    """Read a PCM WAV file without FFmpeg.

    Supports 8-bit (unsigned), 16-, 24- and 32-bit (signed) integer PCM; samples are
    scaled by ``1 / 2**(bits - 1)`` into ``[-1, 1)``.

    Args:
        path: the ``.wav`` file.

    Returns:
        ``(waveform, sample_rate)``, waveform ``(C, T)`` float32.

    Raises:
        ValueError: the file is not integer PCM (e.g. float or compressed WAV).
    """
    try:
        with wave.open(os.fspath(path), "rb") as f:
            channels, width = f.getnchannels(), f.getsampwidth()
            rate, frames = f.getframerate(), f.getnframes()
            raw = f.readframes(frames)
    except wave.Error as err:
        raise ValueError(
            f"{os.fspath(path)!r} is not an integer PCM WAV file readable by the wave module "
            f"({err}); convert it to 16-bit PCM"
        ) from None
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)  # sign-extend 24 bits
        data = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(
            np.float32
        )
    else:
        raise ValueError(f"{os.fspath(path)!r} has an unsupported sample width of {width} bytes")
    waveform = torch.from_numpy(data.reshape(-1, channels).T.copy())  # (C, T)
    return waveform, rate


def _check_rate(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of Hz, got {type(value).__name__}")
    if value <= 0 or int(value) != value:
        raise ValueError(f"{name} must be a positive whole number of Hz, got {value}")
    return int(value)


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
    ) -> None:
        super().__init__()
        import torchaudio

        self.sample_rate = _check_rate("sample_rate", sample_rate)
        self.target_rate = None if target_rate is None else _check_rate("target_rate", target_rate)
        self.dim = check_positive_int("dim", dim)
        self.n_mels = check_positive_int("n_mels", n_mels)
        self.n_fft = check_positive_int("n_fft", n_fft)
        self.hop_length = check_positive_int("hop_length", hop_length)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
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
        if not isinstance(waveform, Tensor):
            raise TypeError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
        if waveform.dim() == 3:
            waveform = waveform.mean(dim=1)  # (B, T): downmix channels by their mean
        elif waveform.dim() != 2:
            raise ValueError(
                f"waveform must have shape (B, T) or (B, C, T), got {tuple(waveform.shape)}"
            )
        if not waveform.is_floating_point():
            raise TypeError(
                f"waveform must be floating point in [-1, 1], got {waveform.dtype} "
                "(divide int16 PCM by 32768, or use load_wav)"
            )
        b, t = waveform.shape
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=waveform.device)
            if lengths.shape != (b,) or lengths.is_floating_point() or lengths.dtype == torch.bool:
                raise ValueError(
                    f"lengths must be an integer tensor of shape (B,) = ({b},), got "
                    f"{lengths.dtype} {tuple(lengths.shape)}"
                )
            if bool((lengths > t).any()) or bool((lengths < 0).any()):
                raise ValueError(f"lengths must lie in [0, T={t}], got {lengths.tolist()}")
            shortest = int(lengths.min()) if b else t
            pos = torch.arange(t, device=waveform.device)
            waveform = waveform * (pos < lengths[:, None]).to(waveform.dtype)  # zero padding
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

    def log_mel(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The log-mel spectrogram the nodes are made from, and its frame mask.

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
        return spec, mask

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> NodeSet:
        """Turn a batch of waveforms into audio nodes.

        Args:
            waveform: ``(B, T)`` or ``(B, C, T)`` float in ``[-1, 1]`` at ``sample_rate``.
            lengths: real samples per clip (the rest is padding), ``(B,)``.

        Shapes:
            - returns a :class:`NodeSet` ``(B, N, D)`` with time positions ``(B, N)``.
        """
        spec, frame_mask = self.log_mel(waveform, lengths)  # (B, M, F), (B, F)
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
