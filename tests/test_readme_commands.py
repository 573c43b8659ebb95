"""Every shell command the README shows runs: the lines of its ``bash`` blocks and the commands
in its inline code (``Run: `raysteal run experiments/quickstart.yaml```, ``raysteal data fetch
ml-1m``, ...). A command runs here as written, in the repository root — the quickstart with its
output and target cache in a temporary directory, and what reads ``results/quickstart`` pointed
there — unless :data:`SKIPPED` names it with the reason it cannot. The quickstart's run also
checks the story the README tells with it: each target clearly above the popularity recommender,
agreement ordered as Zhu et al. find (popularity floor < PTD < PTA < PTQ, PTAQ), and the table it
prints is the one the README shows."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART = "raysteal run experiments/quickstart.yaml"
QUICKSTART_OUT = "results/quickstart"
SHELL_FENCES = {"bash", "sh", "shell", "console"}
COMMAND_WORDS = ("raysteal", "python", "python3", "pip", "mkdocs", "ray", "kubectl", "docker", "helm")

SKIPPED = {
    "python -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'": "installs from PyPI into a fresh virtual environment: .ci/run runs this line word for word",
    "python -m pytest -q": "it is this test suite: .ci/run runs this line word for word",
    "pip install -e '.[docs]'": "installs from PyPI; test_the_docs_extra_holds_the_site_tools checks what it installs",
    "mkdocs serve": "a development server that never exits; `mkdocs build --strict` builds the same site",
    "mkdocs build --strict": "tests/test_docs.py::test_mkdocs_build_strict runs it (with --site-dir in a temporary directory)",
    "raysteal data fetch ml-1m": "downloads the GroupLens archive (network); nothing in the suite may depend on it",
}
"""README commands that do not run here, each with the reason."""

ATTACK_ORDER = ("popularity", "ptd", "pta")
"""The quickstart's story (Zhu et al.): each of these below the next, and PTA below PTQ and PTAQ."""
MIN_TARGET_LIFT = 1.5
"""How far above the popularity recommender (NDCG@10, full ranking) each quickstart target must be."""
README_TOLERANCE = 0.02
"""How far a printed mean may be from the README's (the run is seeded; this absorbs floating-point
differences between machines, not a changed experiment)."""


# ----------------------------------------------------------------------------- the README's commands
def _strip_comment(line: str) -> str:
    """``line`` less a trailing shell comment (a ``#`` outside quotes that starts a word)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def readme_commands(text: str | None = None) -> list[str]:
    """The shell commands the README shows, in order, each once: the non-empty lines of its
    ``bash``/``sh``/``shell``/``console`` blocks (comments and a ``$ `` prompt removed), then the
    inline code spans that start with a command (:data:`COMMAND_WORDS`)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found: list[str] = []
    for lang, body in re.findall(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.S | re.M):
        if lang in SHELL_FENCES:
            for line in body.splitlines():
                line = _strip_comment(line.removeprefix("$ "))
                if line:
                    found.append(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    words = "|".join(re.escape(word) for word in COMMAND_WORDS)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if re.match(rf"({words})(\s|$)", span.strip()):
            found.append(span.strip())
    return list(dict.fromkeys(found))


def _env(tmp: Path) -> dict[str, str]:
    """The commands' environment: this interpreter's scripts first on PATH, a Ray runtime of their
    own (never a cluster a ``RAY_ADDRESS`` names), caches under ``tmp``."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ADDRESS": "",
        "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _run(command: str, tmp: Path, timeout: float, **extra_env: str) -> str:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env={**_env(tmp), **extra_env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{output[-6000:]}"
    return output


def _in_sandbox(command: str, out: Path) -> str:
    """``command`` with the quickstart's results directory moved to ``out``."""
    return command.replace(QUICKSTART_OUT, str(out))


def _is_quickstart(command: str) -> bool:
    return command.startswith(QUICKSTART)


def _reads_quickstart_results(command: str) -> bool:
    return QUICKSTART_OUT in command and not _is_quickstart(command)


def _quick_commands() -> list[str]:
    return [c for c in readme_commands() if c not in SKIPPED and not _is_quickstart(c) and not _reads_quickstart_results(c)]


def test_the_readme_shows_its_commands():
    commands = readme_commands()
    assert any(_is_quickstart(c) for c in commands), "the README shows the quickstart's command"
    assert {"raysteal --help", "raysteal data list"} <= set(commands)
    stale = [c for c in SKIPPED if c not in commands]
    assert not stale, f"SKIPPED names commands the README no longer shows: {stale}"
    assert all(reason.strip() for reason in SKIPPED.values())


def test_commands_are_found_in_blocks_and_inline_code():
    text = (
        "Run: `raysteal run x.yaml` (see `raysteal/` and `python`)\n\n```bash\n$ raysteal data list   # datasets\n"
        "echo '# not a comment'\n\n```\n```text\nraysteal not-a-command\n```\n"
    )
    assert readme_commands(text) == ["raysteal data list", "echo '# not a comment'", "raysteal run x.yaml", "python"]


@pytest.mark.parametrize("command", _quick_commands())
def test_readme_command_runs(command, tmp_path):
    output = _run(command, tmp_path, timeout=300)
    assert output.strip(), f"`{command}` printed nothing"


# ----------------------------------------------------------------------------- the quickstart
@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The README's quickstart command, run once: ``(command, output, results directory)``."""
    command = next(c for c in readme_commands() if _is_quickstart(c))
    if command in SKIPPED:
        pytest.skip(SKIPPED[command])
    tmp = tmp_path_factory.mktemp("quickstart")
    out, cache = tmp / "out", tmp / "cache"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rqs-", dir="/tmp"))  # short: Ray's socket paths
    try:
        output = _run(
            f"{command} --out {shlex.quote(str(out))} --cache-dir {shlex.quote(str(cache))}",
            tmp,
            timeout=840,
            RAYSTEAL_RAY_TMP=str(ray_tmp),
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return command, output, out


def _table(text: str) -> tuple[list[str], dict[tuple[str, str], dict[str, float]]]:
    """The first Markdown results table of ``text``: its header and, per (target, attack), each
    metric's mean."""
    lines = [line for line in text.splitlines() if line.startswith("| dataset | target | attack |")]
    assert lines, "no results table"
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    body = text.splitlines()[text.splitlines().index(lines[0]) + 2 :]
    for line in body:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[(cells["target"], cells["attack"])] = {name: float(value.split("±")[0]) for name, value in cells.items() if "±" in value}
    return header, rows


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_the_quickstart_tells_the_story(quickstart):
    _, output, out = quickstart
    assert (out / "runs").is_dir() and len(list((out / "runs").glob("*.parquet"))) == 20
    lifts = dict(re.findall(r"^target (\S+)(?: \{.*?\})? on \S+ on .*?lift ([0-9.]+)x", output, re.M))
    assert set(lifts) == {"bpr", "neumf"}, output[-3000:]
    assert all(float(lift) >= MIN_TARGET_LIFT for lift in lifts.values()), f"a target is close to popularity: {lifts}"
    _, rows = _table(output)
    for target in lifts:
        agr = {attack: rows[(target, attack)]["agr@k"] for attack in ("popularity", "ptd", "pta", "ptq", "ptaq")}
        chain = [agr[a] for a in ATTACK_ORDER] + [min(agr["ptq"], agr["ptaq"])]
        assert chain == sorted(chain) and len(set(chain)) == len(chain), f"{target}: not floor < PTD < PTA < PTQ/PTAQ: {agr}"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_the_readme_shows_the_table_the_quickstart_prints(quickstart):
    _, output, _ = quickstart
    printed_header, printed = _table(output)
    shown_header, shown = _table(README.read_text(encoding="utf-8"))
    assert shown_header == printed_header, "the README's quickstart table has other columns than the command prints"
    assert shown.keys() == printed.keys()
    for cell, metrics in printed.items():
        for name, value in metrics.items():
            assert abs(shown[cell][name] - value) <= README_TOLERANCE, (
                f"README.md shows {name} {shown[cell][name]} for {cell}, the quickstart prints {value}: "
                f"paste the table it prints into the README (and docs/getting-started.md)"
            )
    guide = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert _table(guide) == (shown_header, shown), "docs/getting-started.md shows another quickstart table than README.md"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
@pytest.mark.parametrize("command", [c for c in readme_commands() if _reads_quickstart_results(c) and c not in SKIPPED])
def test_readme_command_on_the_quickstart_results_runs(command, quickstart, tmp_path):
    _, _, out = quickstart
    _run(_in_sandbox(command, out), tmp_path, timeout=300)
    if command.startswith("raysteal report"):
        assert list((out / "report").glob("*.md")), "raysteal report wrote no table"


# ----------------------------------------------------------------------------- the docs extra
def test_the_docs_extra_holds_the_site_tools():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomli = pytest.importorskip("tomli")
        tomllib = tomli
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.match(r"[A-Za-z0-9._-]+(\[[^\]]*\])?", req).group(0).lower() for req in requirements}

    docs = names(extras["docs"])
    assert {"mkdocs", "mkdocs-material", "mkdocstrings[python]"} <= docs
    dev = names(extras["dev"])
    assert docs <= dev or "raysteal[docs]" in dev, "the dev extra no longer installs the docs tools"
