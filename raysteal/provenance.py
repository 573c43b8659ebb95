"""Which code produced a result: the package version, and the git commit of the checkout it ran from.

``code_version`` (the package version) stays the same across every commit of a development
checkout; ``code_commit`` tells two runs of one version apart, e.g. rows written before and after
a change that draws random numbers differently."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


@functools.cache
def code_commit(package: Path = PACKAGE_ROOT) -> str:
    """The short commit of the git checkout holding ``package``, ``+dirty`` when its tracked files
    there differ from that commit; ``""`` outside a git checkout (an installed wheel) or without git.
    Cached: one lookup per process."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if changed else "")
