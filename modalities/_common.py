"""Private helpers shared by the adapters: argument checks and masked pooling.

Every check has the form ``check_<kind>(name, value, ...) -> value`` and fails with one
message shape, ``"<name> must be <what>, got <value>"``: a :class:`TypeError` when the value
has the wrong type (``None`` included), a :class:`ValueError` when it has the right type but
a wrong value. Values are shown by their (shortened) ``repr``; tensors and arrays by shape and
dtype.

Axis legend: ``B`` batch, ``N`` nodes, ``D`` feature size.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "short_repr",
    "arg_error",
    "check_int",
    "check_float",
    "check_bool",
    "check_choice",
    "check_str",
    "check_tensor",
    "check_mask",
    "check_sequence",
    "check_pair",
    "pair",
    "array_ndim",
    "numeric_tensor",
    "masked_mean",
]


class _ShortRepr(reprlib.Repr):
    """:mod:`reprlib` limits for strings and containers; any other object is cut at the end
    (``reprlib`` cuts it in the middle)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60
        self.maxlist = self.maxtuple = self.maxset = self.maxdict = 6

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:  # a broken __repr__ must not hide the real error
            return f"<{type(x).__name__} object>"
        return text if len(text) <= self.maxother else text[: self.maxother - 3] + "..."


_REPR = _ShortRepr()


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to about 60 characters; tensors and arrays as shape and dtype.

    Example:
        >>> short_repr("x" * 100)[:8], short_repr(torch.zeros(2, 3))
        ("'xxxxxxx", 'tensor of shape (2, 3) (torch.float32)')
    """
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} ({value.dtype})"
    return _REPR.repr(value)


def _shown_with_type(value: Any) -> str:
    """``short_repr`` plus the type name when the repr does not already say it."""
    text = short_repr(value)
    if value is None or isinstance(value, Tensor | np.ndarray):
        return text
    name = type(value).__name__
    return text if text.startswith(name) else f"{text} ({name})"


def arg_error(error: type[Exception], name: str, expected: str, value: Any) -> Exception:
    """``error("<name> must be <expected>, got <value>")``; a TypeError also names the type.

    Example:
        >>> arg_error(TypeError, "dim", "an int", "8")
        TypeError("dim must be an int, got '8' (str)")
    """
    got = _shown_with_type(value) if issubclass(error, TypeError) else short_repr(value)
    return error(f"{name} must be {expected}, got {got}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def check_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an ``int`` >= ``minimum`` (``None`` passes when ``optional``).

    ``bool`` is refused; NumPy integers are accepted and converted.
    """
    if value is None and optional:
        return None
    if not _is_int(value):
        raise arg_error(TypeError, name, "an int" + (" or None" if optional else ""), value)
    if value < minimum:
        raise arg_error(ValueError, name, "> 0" if minimum == 1 else f">= {minimum}", value)
    return int(value)


def check_float(name: str, value: Any, *, optional: bool = False) -> float | None:
    """``value`` as a finite ``float`` (ints accepted, ``bool`` refused)."""
    if value is None and optional:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        raise arg_error(TypeError, name, "a real number" + (" or None" if optional else ""), value)
    if not math.isfinite(value):
        raise arg_error(ValueError, name, "finite", value)
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (or a NumPy bool); ``None``, ints, strings are refused."""
    if not isinstance(value, bool | np.bool_):
        raise arg_error(TypeError, name, "a bool", value)
    return bool(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; a value of another type than every choice
    (``None``, a float for an int choice) is a :class:`TypeError`."""
    if len(choices) == 2:
        expected = f"{choices[0]!r} or {choices[1]!r}"
    else:
        expected = f"one of {tuple(choices)}"
    types = {type(c) for c in choices}
    if types == {int} and _is_int(value):
        value = int(value)  # a NumPy integer
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, tuple(types)):
        raise arg_error(TypeError, name, expected, value)
    if value not in choices:
        raise arg_error(ValueError, name, expected, value)
    return value


def check_str(name: str, value: Any) -> str:
    """``value`` if it is a non-empty ``str``."""
    if not isinstance(value, str):
        raise arg_error(TypeError, name, "a non-empty str", value)
    if not value:
        raise arg_error(ValueError, name, "a non-empty str", value)
    return value


def check_tensor(name: str, value: Any, what: str = "a torch.Tensor") -> Tensor:
    """``value`` if it is a :class:`torch.Tensor`; ``what`` describes the expected tensor."""
    if not isinstance(value, Tensor):
        raise arg_error(TypeError, name, what, value)
    return value


def check_mask(name: str, value: Any, shape: tuple[int, ...], what: str = "(B, N)") -> Tensor:
    """``value`` if it is a bool tensor of ``shape`` (``True`` = real node).

    Raises:
        TypeError: not a tensor, or not ``torch.bool``.
        ValueError: another shape.
    """
    if not isinstance(value, Tensor) or value.dtype != torch.bool:
        expected = f"a bool tensor of shape {what} = {tuple(shape)} (True = real)"
        raise arg_error(TypeError, name, expected, value)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have shape {what} = {tuple(shape)}, got {tuple(value.shape)}"
        )
    return value


def check_sequence(name: str, value: Any, of: str) -> list[Any]:
    """``value`` as a list; any iterable but a string or a mapping is accepted.

    Args:
        name: the argument.
        value: the value.
        of: what the items are, for the message (``"str"``, ``"NodeSet"``).
    """
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{name} must be a sequence of {of}, got a single {type(value).__name__} "
            f"{short_repr(value)}: wrap it in a list"
        )
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise arg_error(TypeError, name, f"a sequence of {of}", value)
    return list(value)


def check_pair(name: str, value: Any, *, minimum: int = 1) -> tuple[int, int]:
    """``value`` as ``(int, int)``, both >= ``minimum``; a tuple or list of two ints."""
    if not isinstance(value, tuple | list):
        raise arg_error(TypeError, name, "a pair of ints", value)
    if len(value) != 2:
        raise arg_error(ValueError, name, "a pair of ints", value)
    return (
        check_int(f"{name}[0]", value[0], minimum=minimum),
        check_int(f"{name}[1]", value[1], minimum=minimum),
    )


def pair(name: str, value: Any) -> tuple[int, int]:
    """``int`` or ``(int, int)`` -> ``(int, int)``, both checked > 0."""
    if isinstance(value, tuple | list):
        return check_pair(name, value)
    if not _is_int(value):
        raise arg_error(TypeError, name, "an int or a pair of ints", value)
    v = check_int(name, value)
    return v, v


def array_ndim(value: Any) -> int | None:
    """The number of dimensions of a tensor, array, number or nested list (``None`` if ragged
    or not an array at all: :func:`numeric_tensor` then names the problem).

    Example:
        >>> array_ndim(torch.zeros(2, 3)), array_ndim([[1, 2]]), array_ndim(5)
        (2, 2, 0)
    """
    if isinstance(value, Tensor):
        return value.dim()
    try:
        return np.ndim(value)
    except (TypeError, ValueError):  # ragged nested lists
        return None


def numeric_tensor(name: str, value: Any, device: torch.device | None = None) -> Tensor:
    """``value`` (a tensor, an array, a number or nested lists of numbers) as a tensor on
    ``device``, its bool, integer or floating dtype kept; strings, objects, ragged lists and
    complex numbers raise :class:`TypeError`.

    Example:
        >>> numeric_tensor("obs", [[1, 2]]).dtype
        torch.int64
    """
    what = "a tensor or array of numbers"
    if not isinstance(value, Tensor):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):  # ragged nested lists
            raise arg_error(TypeError, name, what, value) from None
        if array.dtype.kind not in "biuf":
            raise arg_error(TypeError, name, what, value)
        value = torch.as_tensor(array)
    if value.is_complex():
        raise arg_error(TypeError, name, what, value)
    return value if device is None else value.to(device)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the nodes where ``mask`` is ``True``; a sample without any real
    node gives zeros (never NaN).

    Padded nodes are left out with :func:`torch.where`, not multiplied by zero, so a padded
    node holding NaN or inf changes nothing (``nan * 0`` is NaN); its gradient is zero.

    Shapes:
        - x: ``(B, N, D)`` floating point; mask: ``(B, N)`` bool; returns ``(B, D)``.

    Example:
        >>> x = torch.tensor([[[1.0], [3.0], [float("nan")]]])  # (B=1, N=3, D=1)
        >>> masked_mean(x, torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    what = "a floating-point tensor of shape (B, N, D)"
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise arg_error(TypeError, "x", what, x)
    if x.dim() != 3:
        raise arg_error(ValueError, "x", what, x)
    check_mask("mask", mask, tuple(x.shape[:2]))
    keep = mask[..., None]  # (B, N, 1)
    total = torch.where(keep, x, x.new_zeros(())).sum(dim=1)  # (B, D)
    count = keep.sum(dim=1).clamp_min(1).to(x.dtype)  # (B, 1)
    return total / count
