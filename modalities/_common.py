"""Private helpers shared by the adapters: argument checks and masked pooling.

Axis legend: ``B`` batch, ``N`` nodes, ``D`` feature size.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = [
    "check_positive_int",
    "pair",
    "masked_mean",
]


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an ``int`` > 0, else raise naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    """``int`` or ``(int, int)`` -> ``(int, int)``, both checked positive."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return check_positive_int(f"{name}[0]", value[0]), check_positive_int(
            f"{name}[1]", value[1]
        )
    v = check_positive_int(name, value)
    return v, v


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the nodes where ``mask`` is ``True``; a sample without any real
    node gives zeros (never NaN).

    Shapes:
        - x: ``(B, N, D)``; mask: ``(B, N)`` bool; returns ``(B, D)``.
    """
    w = mask.to(x.dtype)[..., None]  # (B, N, 1)
    total = (x * w).sum(dim=1)  # (B, D)
    count = w.sum(dim=1).clamp_min(1.0)  # (B, 1)
    return total / count
