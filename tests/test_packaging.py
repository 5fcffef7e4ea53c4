"""The distribution as a user installs it, and the core's promise to need only torch.

- The wheel is built from a copy of the repository (so no build output lands in the work
  tree and no stale ``build/`` leaks into it), installed with ``--no-deps`` into a fresh
  virtual environment outside the repository, and imported there from a directory outside
  the repository: ``graphattn`` and ``modalities`` must come from that environment. The fresh
  environment reaches torch and the other dependencies through a ``.pth`` line naming this
  environment's site-packages, added after the install, so nothing is reinstalled.
- ``import graphattn`` works with numpy, matplotlib, scipy, torch_geometric and einops
  blocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
NOT_SHIPPED = ("tests/", "examples/", "benchmarks/", "docs/")
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "runs",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)


def _clean_env() -> dict[str, str]:
    """This process's environment without what would put the repository on ``sys.path``."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    dist = tmp_path / "dist"
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    (wheel,) = dist.glob("graphattn-*.whl")
    return wheel


def test_wheel_installs_into_a_fresh_environment_and_imports(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)

    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"  # graphattn-0.1.0.dist-info
    assert not [n for n in names if n.startswith(NOT_SHIPPED)], names
    assert {n.split("/")[0] for n in names} == {"graphattn", "modalities", dist_info}
    assert "License-Expression: MIT" in archive.read(f"{dist_info}/METADATA").decode()
    assert b"MIT License" in archive.read(f"{dist_info}/licenses/LICENSE")
    assert "graphattn/backends/_fused_cpu.cpp" in names  # the fused kernel builds from it

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=_clean_env(),
    ).stdout.strip()
    (Path(site) / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = textwrap.dedent("""
        import json
        import graphattn, modalities
        import torch
        x = torch.randn(2, 5, 8)
        y = graphattn.GraphAttention(8, 2)(x, graphattn.Graph.causal(5))
        print(json.dumps({"graphattn": graphattn.__file__, "modalities": modalities.__file__,
                          "shape": list(y.shape)}))
    """)
    out = subprocess.run(
        [str(python), "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=_clean_env(),
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    for package in ("graphattn", "modalities"):
        assert Path(found[package]).resolve().is_relative_to(venv.resolve()), found
        assert not Path(found[package]).resolve().is_relative_to(ROOT), found
    assert found["shape"] == [2, 5, 8]


BLOCKER = """
import importlib.abc
import sys

BLOCKED = {"numpy", "matplotlib", "scipy", "torch_geometric", "einops"}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Block())
"""


def test_import_graphattn_needs_only_torch(tmp_path: Path) -> None:
    probe = BLOCKER + textwrap.dedent("""
        import torch
        import graphattn
        from graphattn import Graph, GraphAttention

        y = GraphAttention(8, 2)(torch.randn(2, 5, 8), Graph.window(5, 1))
        loaded = BLOCKED & {m.split(".")[0] for m in sys.modules}
        assert not loaded, loaded
        print("ok", tuple(y.shape))
    """)
    env = {**_clean_env(), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("ok (2, 5, 8)")
