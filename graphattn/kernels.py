"""Kernel scores: attention whose weights factor through feature maps, computed in time
linear in the number of nodes on complete graphs.

A kernel score gives every pair the weight ``w_ij = phi(q_i) . phi(k_j)`` (``F`` features per
head), and the output ``out_i = sum_j w_ij v_j / sum_j w_ij``. On a complete graph the
``linear`` backend computes ``phi(Q) (phi(K)^T V)`` and ``phi(Q) (phi(K)^T 1)`` without
forming the ``Nd x Ns`` weights: time ``O(N F Dv)`` and memory ``O(N F + F Dv)`` per head.

=====================  ==============================================================
score                  weights
=====================  ==============================================================
:class:`FAVOR`         Performer's positive random features (FAVOR+, Choromanski et al.,
                       2021): an unbiased estimate of ``exp(scale q_i . k_j)``, i.e. of
                       softmax attention; the approximation improves with ``F``
:class:`SGFormer`      SGFormer's simple global attention (Wu et al., 2023; PyG's
                       ``SGFormerAttention``): ``q_hat_i . k_hat_j`` (L2-normalised) plus
                       a self weight ``N`` on ``i == j``; not a softmax, may be negative
=====================  ==============================================================

Positive kernels (:class:`FAVOR`) are also softmax scores: their logit is
``log(phi(q_i) . phi(k_j))``, so the edge backend serves them on any graph and gives the
linear backend's numbers on complete graphs. :class:`SGFormer` is served by the linear
backend only.

Axis legend: ``B`` batch, ``H`` heads, ``N`` nodes, ``D`` head dim, ``F`` features, ``n``
edges in a chunk.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from ._checks import check_int
from .scores import Score

__all__ = ["KernelScore", "FAVOR", "SGFormer"]


class KernelScore(Score):
    """Base class of kernel scores (see the module docstring).

    Subclasses implement :meth:`feature_map`; the linear backend calls it on whole
    ``(B, H, N, D)`` tensors.

    Attributes:
        kernel: always True: the linear backend serves the score on complete graphs.
        softmax: whether the weights are positive, so that ``log(w)`` is a logit and the
            softmax backends (edges) serve the score too.
        self_weight: whether target ``i`` also receives its own value with weight ``N`` (the
            number of real sources), as in SGFormer; needs ``Nd == Ns``.
    """

    kernel: ClassVar[bool] = True
    softmax: ClassVar[bool] = True
    self_weight: ClassVar[bool] = False

    def feature_map(self, x: Tensor, *, query: bool, pad: Tensor | None = None) -> Tensor:
        """Features of queries (``query=True``) or keys; rows where ``pad`` is True (padded
        keys) are zero and do not influence the others.

        Constant factors per query row, or per (batch, head) for keys, may be dropped: they
        cancel in ``out_i``.

        Shapes:
            - x: ``(B, H, N, D)``; pad: ``(B, N)`` bool or ``None``; returns ``(B, H, N, F)``
        """
        raise NotImplementedError


class FAVOR(KernelScore):
    """Performer's FAVOR+ (positive orthogonal random features) estimate of softmax
    attention ``softmax(scale q . k)``.

    ``phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(F)`` with ``x' = x sqrt(scale)`` and ``W``
    ``(F, D)`` orthogonal Gaussian rows (blocks of ``D`` orthogonal rows, each scaled to a
    chi-distributed norm), so that ``E[phi(q) . phi(k)] = exp(scale q . k)``. The estimate's
    error shrinks like ``1 / sqrt(F)``; ``benchmarks.bench_global`` measures it.

    Features are redrawn by :meth:`redraw`, and automatically every ``redraw_every`` calls
    made with gradients enabled (training steps; ``None``: never). Evaluation under
    ``torch.no_grad()`` keeps the current features, so it is deterministic.

    Args:
        num_features: ``F``, the number of random features per head.
        head_dim: ``D`` (the query/key head dim).
        scale: the softmax's scale (default ``1 / sqrt(D)``, as the dot product's); the
            call's ``scale=`` is not used.
        redraw_every: redraw after this many training calls (``None``: never).
        generator: the random generator for the features (default: torch's global one).
    """

    name = "favor"

    def __init__(
        self,
        num_features: int,
        head_dim: int,
        *,
        scale: float | None = None,
        redraw_every: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        check_int("num_features", num_features)
        check_int("head_dim", head_dim)
        check_int("redraw_every", redraw_every, optional=True)
        scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite positive number, got {scale!r}")
        self.num_features = num_features
        self.head_dim = head_dim
        self.scale = scale
        self.redraw_every = redraw_every
        self.generator = generator
        self.calls = 0
        self.projection = torch.empty(0)
        self.redraw()

    def redraw(self) -> None:
        """Draw new random features ``W`` ``(F, D)``."""
        d, f = self.head_dim, self.num_features
        blocks = []
        for _ in range(math.ceil(f / d)):
            g = torch.randn(d, d, generator=self.generator, dtype=torch.float64)
            q, _ = torch.linalg.qr(g)  # (D, D) orthonormal columns
            blocks.append(q.t())
        w = torch.cat(blocks)[:f]  # (F, D) orthonormal rows within each block
        norms = torch.randn(f, d, generator=self.generator, dtype=torch.float64).norm(dim=1)
        self.projection = (w * norms[:, None]).to(torch.float32)  # rows ~ N(0, I) in norm

    def check(self, q: Tensor, k: Tensor) -> None:
        for name, t in (("q", q), ("k", k)):
            if t.shape[-1] != self.head_dim:
                raise ValueError(
                    f"{name} has head dim {t.shape[-1]} but FAVOR was built for "
                    f"head_dim={self.head_dim}"
                )

    def step(self) -> None:
        """Count one call; redraw when ``redraw_every`` training calls have passed."""
        if self.redraw_every is None or not torch.is_grad_enabled():
            return
        self.calls += 1
        if self.calls % self.redraw_every == 0:
            self.redraw()

    def _projected(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``W x'`` ``(…, F)`` and ``-|x'|^2 / 2`` ``(…, 1)`` for ``x' = x sqrt(scale)``
        (the scale folded into ``W`` and the norm: no scaled copy of ``x``; the sign folded
        into the norm's factor, so that the backward negates an ``(…, 1)`` column, not the
        ``(…, F)`` gradient)."""
        w = self.projection.to(device=x.device, dtype=x.dtype) * math.sqrt(self.scale)
        neg_half = (-0.5 * self.scale) * x.square().sum(-1, keepdim=True)  # no sqrt to undo
        return torch.matmul(x, w.t()), neg_half  # (…, F), (…, 1)

    def feature_map(self, x: Tensor, *, query: bool, pad: Tensor | None = None) -> Tensor:
        wx, neg_half = self._projected(x)  # (B, H, N, F), (B, H, N, 1)
        z = wx.add_(neg_half)  # in place: the product's backward needs only its inputs
        if pad is not None:  # padded rows: exp(-inf) = 0, and out of the max below
            z = z.masked_fill_(pad[:, None, :, None], -math.inf)
        with torch.no_grad():  # the shift is a constant for autograd
            if query:  # a per-row constant cancels in out_i
                top = z.amax(-1, keepdim=True)
            else:  # a per-(batch, head) constant cancels too
                top = z.amax(dim=(-2, -1), keepdim=True)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return z.sub_(top).exp_()  # (B, H, N, F); 1 / sqrt(F) cancels as well

    def forward(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None) -> Tensor:
        """``log(phi(q_i) . phi(k_j))`` up to a constant, computed stably with
        ``logsumexp``."""
        if e_ij is not None:
            raise ValueError("FAVOR takes no edge features")
        wq, hq = self._projected(q_i)  # (n, H, F), (n, H, 1): hq = -|q'|^2 / 2
        wk, hk = self._projected(k_j)
        return torch.logsumexp(wq + wk, dim=-1) + hq[..., 0] + hk[..., 0]  # (n, H)

    def __repr__(self) -> str:
        return (
            f"FAVOR(num_features={self.num_features}, head_dim={self.head_dim}, "
            f"scale={self.scale:.4g}, redraw_every={self.redraw_every})"
        )


class SGFormer(KernelScore):
    """SGFormer's simple global attention (PyG's ``SGFormerAttention``), per head:
    ``out_i = (sum_j (q_hat_i . k_hat_j) v_j + N v_i) / (sum_j q_hat_i . k_hat_j + N)``
    with ``q_hat``, ``k_hat`` L2-normalised (exact zeros replaced by ``1e-6`` first, as PyG
    does) and ``N`` the number of real (unpadded) sources. Self-attention only
    (``Nd == Ns``): target ``i`` receives its own value. Not a softmax (weights may be
    negative): the linear backend serves it.

    With key padding, padded nodes are left out of the sums and of ``N``; PyG's layer zeroes
    their values but still counts their keys and their number in the normaliser, so the two
    agree exactly only without padding.
    """

    name = "sgformer"
    softmax = False
    self_weight = True

    def check(self, q: Tensor, k: Tensor) -> None:
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(
                f"SGFormer is self-attention: Nd ({q.shape[-2]}) must equal Ns ({k.shape[-2]})"
            )

    def feature_map(self, x: Tensor, *, query: bool, pad: Tensor | None = None) -> Tensor:
        x = torch.where(x == 0, 1e-6, x)
        x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (B, H, N, D)
        return x if pad is None else x.masked_fill(pad[:, None, :, None], 0.0)

    def forward(self, q_i: Tensor, k_j: Tensor, e_ij: Tensor | None) -> Tensor:
        raise NotImplementedError("SGFormer is not a softmax score: the linear backend serves it")
