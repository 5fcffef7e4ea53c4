"""The examples in the docstrings of ``examples.training`` run and give what they show.

pytest's ``--doctest-modules`` collects only the packages in ``testpaths`` (``tests`` and
``graphattn``), so the doctests of this package run here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import examples.training

MODULES = sorted(
    info.name for info in pkgutil.iter_modules(examples.training.__path__, "examples.training.")
)


def test_the_package_has_doctests() -> None:
    found = sum(
        len(doctest.DocTestFinder().find(importlib.import_module(name))) for name in MODULES
    )
    assert found >= 4  # BatchLoader, CheckpointManager, Trainer, the seed module, ...


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed"
