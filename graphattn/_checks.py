"""Argument helpers of the core: the one integer check, and renamed keywords.

``check_int(name, value, ...)`` returns ``value`` or raises naming the argument and its value:
``TypeError`` when it is not an ``int`` (``bool`` and ``None`` included, unless ``None`` is
allowed), ``ValueError`` when it is out of range. ``renamed(...)`` keeps an old keyword
working for a while, with a ``FutureWarning`` naming the new one. ``weights_flag(...)``
resolves the deprecated ``need_weights=True`` of a method whose ``*_with_weights`` sibling
now returns the weights, so that every method has one return type.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["WITH_WEIGHTS", "check_int", "renamed", "weights_flag"]


def renamed(new: str, value: Any, old: str, old_value: Any, default: Any) -> Any:
    """The value of keyword ``new``, or of its deprecated old name ``old`` (with a
    ``FutureWarning``); giving both is a ``TypeError``."""
    if old_value is None:
        return value
    if value is not default and value != default:
        raise TypeError(f"{old}= is the old name of {new}=; pass {new}= only")
    warnings.warn(
        f"{old}= is now called {new}= (one word per concept); the old name will be removed",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


class _WithWeights:
    """The ``need_weights`` value a ``*_with_weights`` method passes to its plain sibling:
    true, and not the user's deprecated ``True`` (so no warning)."""

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "WITH_WEIGHTS"


WITH_WEIGHTS: Any = _WithWeights()


def weights_flag(
    need_weights: Any, return_attention: bool | None, method: str, sibling: str
) -> bool:
    """Whether a call of ``method`` wants the attention weights.

    ``need_weights=True`` (or its older name ``return_attention=True``) still works for a
    while, with a ``FutureWarning`` that names ``sibling``, the method that returns them;
    :data:`WITH_WEIGHTS` is how that sibling asks, without a warning."""
    if need_weights is WITH_WEIGHTS:
        return True
    if return_attention is not None:
        if need_weights:
            raise TypeError("return_attention= is the old name of need_weights=; pass neither")
        need_weights = return_attention
    if need_weights:
        warnings.warn(
            f"{method}(..., need_weights=True) is deprecated (one return type per method): "
            f"call {sibling}(...), which returns the output and the weights",
            FutureWarning,
            stacklevel=3,
        )
    return bool(need_weights)


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    optional: bool = False,
    hint: str = "",
) -> Any:
    """``value`` if it is an ``int`` in ``[minimum, maximum]`` (or ``None`` when
    ``optional``); ``hint`` is appended to the range message (e.g. why ``-1`` is refused).
    A ``torch.SymInt`` (a size under ``torch.compile`` or ``torch.export``) counts as an int."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | torch.SymInt):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} ({value!r})")
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is not None:
            want = f"an int in [{minimum}, {maximum}]"
        elif minimum == 1:
            want = "a positive int"
        else:
            want = f"an int >= {minimum}"
        raise ValueError(f"{name} must be {want}{hint}, got {value!r}")
    return value
