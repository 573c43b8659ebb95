"""Rows and invocation records name the commit of the checkout whose code ran (``code_commit``)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from raysteal.provenance import PACKAGE_ROOT, code_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_this_checkouts_commit_is_named():
    try:
        head = _git(PACKAGE_ROOT, "rev-parse", "--short=12", "HEAD")
    except subprocess.CalledProcessError:
        pytest.skip("raysteal does not run from a git checkout here")
    assert code_commit().removesuffix("+dirty") == head


def test_a_changed_tracked_file_marks_the_commit_dirty_and_an_untracked_one_does_not(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "model.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(tmp_path, "rev-parse", "--short=12", "HEAD")
    (package / "notes.txt").write_text("untracked\n")
    assert code_commit.__wrapped__(package) == head
    (package / "model.py").write_text("x = 2\n")
    assert code_commit.__wrapped__(package) == head + "+dirty"


def test_outside_a_git_checkout_the_commit_is_empty(tmp_path):
    assert code_commit.__wrapped__(tmp_path) == ""
