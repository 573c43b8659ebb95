"""The linter (ruff) and the type checker (pyright, standard mode) pass, as pyproject.toml
configures them (``[tool.ruff]``, ``[tool.pyright]``); both come with the ``dev`` extra."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each check covers: ruff the project's Python, pyright the package (as [tool.pyright] says).
RUFF_CHECKED = ["raysteal", "tests", "benchmarks", "docs/hooks.py"]
CHECKED = ["raysteal"]


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it comes with the dev extra: pip install -e '.[dev]')")


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_checked_paths_exist():
    assert [p for p in [*RUFF_CHECKED, *CHECKED] if not (ROOT / p).exists()] == []


def test_ruff_check_passes():
    _needs("ruff")
    # --no-cache: nothing written into the checkout
    result = _run("ruff", "check", "--no-cache", *RUFF_CHECKED, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_the_code_as_it_is():
    _needs("ruff")
    result = _run("ruff", "format", "--check", "--no-cache", *RUFF_CHECKED, timeout=120)
    assert result.returncode == 0, "run `ruff format` on:\n" + result.stdout + result.stderr


@pytest.mark.slow
def test_pyright_passes():
    _needs("pyright")
    if shutil.which("node") is None:  # the pyright wheel runs its bundled checker on Node.js
        pytest.skip("pyright needs Node.js (node on PATH); without it the pyright package would download one")
    result = _run("pyright", "--pythonpath", sys.executable, *CHECKED, timeout=540)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
