"""Shared set-up of the example smoke tests (``examples`` is importable through pytest's
``pythonpath = ["."]`` in pyproject.toml)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: the tiny models run fastest so, and CI machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
