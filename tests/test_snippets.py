"""Every ```python block of README.md and docs/**/*.md runs on its own, and is formatted as
``ruff format`` formats the package (the lint step checks only .py files).

Each block is what a reader pastes into a fresh interpreter: it runs as a script in its own
subprocess, in an empty temporary directory, with the repository on ``PYTHONPATH`` and one
torch thread. The selected blocks start together, one per core, when the first of them is
asked for; each test then reports its own block. A block that imports a package named in
``OPTIONAL`` (stable-baselines3, the ``[sb3]`` extra; timm, the ``[timm]`` extra) is skipped,
saying so, where that package is not installed; any other missing import fails its block.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)
TIMEOUT_S = 120
IMPORT = re.compile(r"^(?:from|import)\s+(\w+)", re.M)
#: top-level module -> the distribution to name when it is missing
OPTIONAL = {"stable_baselines3": "stable-baselines3", "timm": "timm"}


def _blocks() -> dict[str, str]:
    blocks = {}
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks[f"{page.relative_to(ROOT)}:{line}"] = match.group(1)
    return blocks


BLOCKS = _blocks()


def _missing(code: str) -> str | None:
    """The optional distribution a block imports that is not installed, if any."""
    for module in dict.fromkeys(IMPORT.findall(code)):
        if module in OPTIONAL and importlib.util.find_spec(module) is None:
            return OPTIONAL[module]
    return None


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float


def _run(name: str, code: str, workdir: Path) -> Run:
    workdir.mkdir(parents=True)
    script = workdir / "snippet.py"
    script.write_text(code)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else err.stdout
        return Run(-1, f"{name}: no result after {TIMEOUT_S} s\n{out or ''}", TIMEOUT_S)
    return Run(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start)


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    """Run every selected block, ``os.cpu_count()`` at a time."""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    ]
    selected = [name for name in selected if _missing(BLOCKS[name]) is None]
    base = tmp_path_factory.mktemp("snippets")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {
            name: pool.submit(_run, name, BLOCKS[name], base / f"block{i}")
            for i, name in enumerate(selected)
        }
        return {name: future.result() for name, future in futures.items()}


def test_every_python_fence_is_found() -> None:
    """No block escapes the runner (an indented fence, a fence that never closes)."""
    fences = sum(page.read_text().count("```python") for page in PAGES)
    assert fences == len(BLOCKS)
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_runs_on_its_own(name: str, runs: dict[str, Run]) -> None:
    missing = _missing(BLOCKS[name])
    if missing is not None:
        pytest.skip(f"{missing} is not installed")
    run = runs[name]
    assert run.returncode == 0, f"{name} failed ({run.seconds:.1f} s):\n{run.output[-3000:]}"


def _ruff() -> str | None:
    """The ruff beside this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).with_name("ruff")
    return str(beside) if beside.exists() else shutil.which("ruff")


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_is_formatted(name: str) -> None:
    """What a reader copies looks like the package's code: ``ruff format`` with the
    project's settings (pyproject.toml) changes nothing in the block."""
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (the [dev] extra)")
    proc = subprocess.run(
        [ruff, "format", "--diff", "--stdin-filename", "snippet.py", "-"],
        input=BLOCKS[name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{name} is not formatted:\n{proc.stdout}{proc.stderr}"
