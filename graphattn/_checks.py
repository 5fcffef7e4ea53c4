"""Argument helpers of the core: the one integer check, and renamed keywords.

``check_int(name, value, ...)`` returns ``value`` or raises naming the argument and its value:
``TypeError`` when it is not an ``int`` (``bool`` and ``None`` included, unless ``None`` is
allowed), ``ValueError`` when it is out of range. ``renamed(...)`` keeps an old keyword
working for a while, with a ``FutureWarning`` naming the new one.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["check_int", "renamed"]


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
    ``optional``); ``hint`` is appended to the range message (e.g. why ``-1`` is refused)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
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
