"""An AdamW that also takes sparse gradients (``nn.Embedding(..., sparse=True)``).

Large hashed embedding tables (byte n-grams, feature hashing) touch a few hundred rows per
step. Dense AdamW reads and writes all of their moments every step; ``torch.optim.SparseAdam``
updates only the touched rows but refuses dense parameters, so a model with both needs two
optimizers, which :class:`~examples.training.Trainer` and the learning-rate schedulers do not
take. :class:`LazyAdamW` is one optimizer for both: dense gradients get exactly
``torch.optim.AdamW``'s update, sparse gradients ``torch.optim.SparseAdam``'s lazy one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["LazyAdamW", "Muon", "orthogonalize"]


class LazyAdamW(Optimizer):
    """AdamW for dense gradients, lazy Adam for sparse ones, in one optimizer.

    Dense parameters: decoupled weight decay ``p -= lr * wd * p``, then Adam with bias
    correction (``torch.optim.AdamW``, ``amsgrad=False``). Sparse gradients (rows of an
    embedding with ``sparse=True``): only the rows present in the gradient have their moments
    and values updated, as ``torch.optim.SparseAdam`` does; rows that were not looked up stay
    untouched and get no weight decay. The bias correction uses the parameter's step count.

    Args:
        params: parameters or parameter groups (each group may set ``lr``, ``betas``, ``eps``,
            ``weight_decay``).
        lr: learning rate (> 0).
        betas: Adam's moment decay rates, each in ``[0, 1)``.
        eps: added to the denominator (> 0).
        weight_decay: decoupled weight decay for dense parameters (>= 0).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must each be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _adam_update(p, self.state[p], group)
        return loss


def _adam_update(p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """One Adam step of ``p`` with the group's ``lr``, ``betas``, ``eps``, ``weight_decay``:
    ``torch.optim.AdamW``'s update for a dense gradient, ``SparseAdam``'s for a sparse one."""
    lr, (beta1, beta2) = group["lr"], group["betas"]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    step = float(state["step"])
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    m, v, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
    if grad.is_sparse:
        _sparse_update(p, grad, m, v, lr, beta1, beta2, group["eps"], bias1, bias2_sqrt)
        return
    p.mul_(1.0 - lr * group["weight_decay"])
    m.lerp_(grad, 1.0 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = (v.sqrt() / bias2_sqrt).add_(group["eps"])
    p.addcdiv_(m, denom, value=-lr / bias1)


def _sparse_update(
    p: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    bias1: float,
    bias2_sqrt: float,
) -> None:
    """SparseAdam's update of the rows present in ``grad`` (duplicates summed first).

    Shapes:
        p, m, v: ``(R, *F)``; grad: sparse ``(R, *F)`` with ``K`` distinct rows.
    """
    grad = grad.coalesce()
    rows = grad.indices()[0]  # (K,)
    g = grad.values()  # (K, *F)
    m_rows = m[rows].lerp_(g, 1.0 - beta1)  # (K, *F)
    v_rows = v[rows].mul_(beta2).addcmul_(g, g, value=1.0 - beta2)  # (K, *F)
    m[rows] = m_rows
    v[rows] = v_rows
    denom = v_rows.sqrt().add_(eps)  # (K, *F); SparseAdam puts eps here, unscaled
    p.index_add_(0, rows, m_rows / denom * (-lr * bias2_sqrt / bias1))


def orthogonalize(g: Tensor, steps: int = 5) -> Tensor:
    """Approximately the nearest semi-orthogonal matrix ``U V^T`` to ``g = U S V^T``.

    The quintic Newton-Schulz iteration of Muon (Jordan et al., 2024) with coefficients
    ``(3.4445, -4.7750, 2.0315)``: without an SVD it maps the singular values into roughly
    ``[0.7, 1.2]`` (singular values below ~1/500 of the norm stay small after 5 steps).

    Shapes:
        g: ``(R, K)``; returns ``(R, K)``.
    """
    if g.dim() != 2:
        raise ValueError(f"orthogonalize needs a matrix, got shape {tuple(g.shape)}")
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T  # (K, R): iterate on the smaller Gram matrix
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T  # (r, r)
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    return x.to(g.dtype)


class Muon(Optimizer):
    """Muon for the hidden weight matrices, AdamW for everything else, in one optimizer.

    Parameter groups with ``use_muon=True`` (2-D hidden weights: attention and feed-forward
    matrices) get SGD with Nesterov momentum whose update is orthogonalized
    (:func:`orthogonalize`) and scaled by ``sqrt(max(1, rows / cols))``, plus decoupled
    weight decay; the other groups (embeddings, output head, biases, norms) get AdamW with
    their own ``lr``. This is the "Muon with auxiliary Adam" design of Keller Jordan's
    reference implementation; it trains small transformers in fewer steps than AdamW.

    ``torch.optim.Muon`` (torch >= 2.9) makes the same update with ``nesterov=True`` and
    ``adjust_lr_fn="original"``, for matrices only, but runs Newton-Schulz in bfloat16: about
    2-3x faster on a CPU with AVX512-BF16, and each update differs from this float32 one by
    0.2-1.4% (relative norm; measured by the tests). This class keeps float32, so the char_lm
    results stay those it was measured with, and holds the AdamW groups in the same
    optimizer, so one learning-rate scheduler and :class:`~examples.training.Trainer` drive
    both.

    Args:
        param_groups: groups, each with ``params`` and ``use_muon`` (bool), optionally
            ``lr``, ``weight_decay``, and ``momentum`` (Muon) or ``betas``/``eps`` (AdamW).
        lr: default learning rate of Muon groups.
        momentum: Muon's momentum.
        adam_lr: default learning rate of AdamW groups.
        adam_betas: AdamW's moment decay rates.
        weight_decay: default decoupled weight decay.
        ns_steps: Newton-Schulz iterations.
    """

    def __init__(
        self,
        param_groups: Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        adam_lr: float = 3e-3,
        adam_betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        ns_steps: int = 5,
    ) -> None:
        groups = []
        for i, group in enumerate(param_groups):
            if "use_muon" not in group:
                raise ValueError(f"param group {i} needs 'use_muon' (True or False)")
            group = dict(group)
            group.setdefault("lr", lr if group["use_muon"] else adam_lr)
            if group["use_muon"]:
                for p in group["params"]:
                    if p.dim() != 2:
                        raise ValueError(
                            f"Muon group {i} holds a parameter of shape {tuple(p.shape)}; "
                            "only matrices can use Muon"
                        )
            groups.append(group)
        for name, value in (("lr", lr), ("adam_lr", adam_lr)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = {
            "momentum": momentum,
            "betas": adam_betas,
            "eps": 1e-8,
            "weight_decay": weight_decay,
            "ns_steps": ns_steps,
        }
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = _muon_update if group["use_muon"] else _adam_update
            for p in group["params"]:
                if p.grad is not None:
                    update(p, self.state[p], group)
        return loss


def _muon_update(p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """One Muon step of the matrix ``p``: Nesterov momentum, orthogonalized, scaled by
    ``sqrt(max(1, rows / cols))``, after decoupled weight decay."""
    lr = group["lr"]
    if not state:
        state["momentum_buffer"] = torch.zeros_like(p)
    buf = state["momentum_buffer"]
    buf.lerp_(p.grad, 1.0 - group["momentum"])
    update = p.grad.lerp(buf, group["momentum"])  # Nesterov
    update = orthogonalize(update, group["ns_steps"])
    scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
    p.mul_(1.0 - lr * group["weight_decay"])
    p.add_(update, alpha=-lr * scale)
