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


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of each ``from raysteal... import`` inside a function of ``path``."""
    import ast

    tree = ast.parse(path.read_text())
    found = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raysteal"):
                    found.add((node.lineno, node.module))
    return sorted(found)


def test_imports_sit_at_the_top_unless_a_comment_says_why():
    """Outside the command line (whose commands import what they run, so that ``raysteal --help``
    loads neither torch nor Ray: raysteal/cli/__init__.py says so), an internal import inside a
    function has a comment on its line or the line above saying why (a heavy module, a cycle)."""
    unexplained = []
    for path in sorted((ROOT / "raysteal").rglob("*.py")):
        if path.parent.name == "cli":
            continue
        lines = path.read_text().splitlines()
        for line, module in _function_level_imports(path):
            if "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                unexplained.append(f"{path.relative_to(ROOT)}:{line} ({module})")
    assert unexplained == []


def test_the_command_line_starts_without_torch_or_ray():
    code = "import sys; import raysteal.cli; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
