"""Dense attention for score functions without a fused kernel, one block of target rows at a
time (FlashAttention's recomputation, in plain torch).

The forward pass keeps only the output and the per-row log-sum-exp; the backward pass
recomputes each block's logits and weights from them. Nothing of size ``Nd x Ns`` is ever
stored, and the per-block temporaries stay small enough to be reused by the allocator (a
fresh ``Nd x Ns`` tensor per step costs page faults on CPU).

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``R`` rows in a block,
``D`` head dim, ``Dv`` value head dim.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..scores import Score

__all__ = ["blockwise_attention", "BLOCK_ELEMENTS"]

#: elements of one block's ``(B, H, R, Ns)`` logits
BLOCK_ELEMENTS = 1 << 19


def blockwise_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    *,
    score: Score,
    scale: float,
    is_causal: bool,
) -> Tensor:
    """``softmax(score(q, k) [* scale] + mask) @ v`` without storing the weights.

    Args:
        mask: boolean (``True`` = attend) or additive, broadcastable to ``(B, H, Nd, Ns)``,
            not requiring gradients. Rows that are entirely masked give zeros.

    Shapes:
        - q: ``(B, H, Nd, D)``; k: ``(B, H, Ns, D)``; v: ``(B, H, Ns, Dv)``
        - returns ``(B, H, Nd, Dv)``
    """
    return _Blockwise.apply(q, k, v, mask, score, float(scale), bool(is_causal), *score.tensors())


def _rows(q: Tensor, k: Tensor) -> int:
    b, h, _, _ = q.shape
    return max(1, BLOCK_ELEMENTS // max(1, b * h * k.shape[-2]))


def _masked(
    s: Tensor, mask: Tensor | None, r0: int, r1: int, is_causal: bool, scale: float, score: Score
) -> Tensor:
    """Scale and mask block logits ``(B, H, R, Ns)`` in place (``-inf`` where masked)."""
    if score.uses_scale and scale != 1.0:
        s.mul_(scale)
    if is_causal:
        rows = torch.arange(r0, r1, device=s.device)[:, None]
        cols = torch.arange(s.shape[-1], device=s.device)[None, :]
        s.masked_fill_(cols > rows, -math.inf)
    if mask is not None:
        mb = mask[..., r0:r1, :]
        if mb.dtype == torch.bool:
            s.masked_fill_(~mb, -math.inf)
        else:
            s.add_(mb)
    return s


class _Blockwise(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        score: Score,
        scale: float,
        is_causal: bool,
        *tensors: Tensor,
    ) -> Tensor:
        b, h, nd, _ = q.shape
        out = v.new_empty(b, h, nd, v.shape[-1])  # (B, H, Nd, Dv)
        lse = q.new_empty(b, h, nd, 1)  # log-sum-exp per row, -inf for empty rows
        step = _rows(q, k)
        for r0 in range(0, nd, step):
            r1 = min(r0 + step, nd)
            s = _masked(
                score.dense_logits(q[:, :, r0:r1], k), mask, r0, r1, is_causal, scale, score
            )
            m = s.amax(-1, keepdim=True)  # (B, H, R, 1)
            m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype, device=m.device))
            z = s.sub_(m).exp_().sum(-1, keepdim=True)  # (B, H, R, 1)
            lse[:, :, r0:r1] = m + z.log()
            z = torch.where(z > 0, z, torch.ones((), dtype=z.dtype, device=z.device))
            out[:, :, r0:r1] = torch.matmul(s, v).div_(z)  # (B, H, R, Dv)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.score, ctx.scale, ctx.is_causal = score, scale, is_causal
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        q, k, v, mask, out, lse = ctx.saved_tensors
        score, scale = ctx.score, ctx.scale
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        params = list(score.tensors())
        need_p = list(ctx.needs_input_grad[7:])
        nd = q.shape[2]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        dparams: list[Tensor | None] = [
            torch.zeros_like(p) if n else None for p, n in zip(params, need_p, strict=True)
        ]
        # exp(s - lse) is 0 for rows without any edge (lse = -inf): use +inf there
        lse = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, math.inf))
        step = _rows(q, k)
        for r0 in range(0, nd, step):
            r1 = min(r0 + step, nd)
            with torch.enable_grad():
                qb = q[:, :, r0:r1].detach().requires_grad_(need_q)
                kk = k.detach().requires_grad_(need_k)
                logits = score.dense_logits(qb, kk)  # (B, H, R, Ns)
            # the score's backward does not read its output: reuse it for the weights
            s = _masked(logits.detach(), mask, r0, r1, ctx.is_causal, scale, score)
            alpha = s.sub_(lse[:, :, r0:r1]).exp_()  # (B, H, R, Ns)
            go = grad_out[:, :, r0:r1]  # (B, H, R, Dv)
            if need_v:
                dv += torch.matmul(alpha.transpose(-2, -1), go)
            ds = torch.matmul(go, v.transpose(-2, -1))  # dL/d alpha, (B, H, R, Ns)
            delta = (go * out[:, :, r0:r1]).sum(-1, keepdim=True)  # sum_j alpha * dalpha
            ds.sub_(delta).mul_(alpha)
            if score.uses_scale and scale != 1.0:
                ds.mul_(scale)
            wrt = [
                t for t, n in zip([qb, kk, *params], [need_q, need_k, *need_p], strict=True) if n
            ]
            if not wrt:
                continue
            grads = iter(torch.autograd.grad(logits, wrt, ds, allow_unused=True))
            if need_q:
                g = next(grads)
                if g is not None:
                    dq[:, :, r0:r1] = g
            if need_k:
                g = next(grads)
                if g is not None:
                    dk += g
            for i, n in enumerate(need_p):
                if n:
                    g = next(grads)
                    if g is not None:
                        dparams[i] += g
        return (dq, dk, dv, None, None, None, None, *dparams)
