"""``benchmarks.timing``: the alternating timer the benchmarks and the examples share."""

from __future__ import annotations

import doctest

import benchmarks.timing as timing
from benchmarks.timing import time_alternating


def test_docstring_examples() -> None:
    result = doctest.testmod(timing, report=True)
    assert result.attempted >= 1 and result.failed == 0


def test_calls_alternate_after_the_warmup() -> None:
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    t = time_alternating(fns, repeats=3, min_repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert t.repeats == 3 and all(len(v) == 3 for v in t.times_ms.values())
    assert t.warmup_ms["a"] and set(t.median_ms) == {"a", "b"}


def test_default_warmup_is_twice_for_fast_calls_and_none_is_allowed() -> None:
    calls: list[str] = []
    time_alternating({"a": lambda: calls.append("a")}, repeats=2, min_repeats=2)
    assert calls == ["a"] * 4  # two warm-up calls (each under a second), two timed
    calls.clear()
    t = time_alternating({"a": lambda: calls.append("a")}, repeats=4, warmup=0)
    assert calls == ["a"] * 4 and t.warmup_ms == {"a": []}
