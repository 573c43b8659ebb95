"""The documentation: a README that stays short and keeps the lines CI runs, a reference generated
from the code that covers every config field, and a site that builds with ``mkdocs build --strict``."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
INSTALL = "Install: `python -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'`"
TEST = "Test: `python -m pytest -q`"
MAX_README_LINES = 200


def _hooks():
    """``docs/hooks.py`` (the generator the MkDocs build runs), imported from its path."""
    spec = importlib.util.spec_from_file_location("raysteal_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in sorted(DOCS.rglob("*.md"))}


# ----------------------------------------------------------------------------- README
def test_readme_is_short_and_keeps_the_lines_ci_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES} (move detail into docs/)"
    # .ci/run executes the README's Install and Test lines: they stay word for word, at the top
    assert lines[2:4] == [INSTALL, TEST]
    assert [line for line in lines if line.startswith("Install:")] == [INSTALL]
    assert [line for line in lines if line.startswith("Test:")] == [TEST]
    assert lines[4].startswith("Run: `raysteal run experiments/quickstart.yaml`")


def test_readme_links_point_to_files_that_exist():
    text = README.read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://|#|mailto:", t)]
    assert targets, "the README links into the docs"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_experiment_is_the_quickstart_file():
    """The README shows experiments/quickstart.yaml less its comments and report: the same mapping."""
    block = re.search(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block, "the README shows an experiment file"
    shown = yaml.safe_load(block.group(1))
    assert 10 <= len(block.group(1).strip().splitlines()) <= 15
    quickstart = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text(encoding="utf-8"))
    expected = {key: value for key, value in quickstart.items() if key not in ("description", "report")}
    assert shown == expected, ("README.md's experiment file no longer matches experiments/quickstart.yaml: update the "
                               "README's file (and the table it prints) together with the quickstart")


def test_no_page_points_readers_outside_the_repository():
    for path, text in {README: README.read_text(encoding="utf-8"), **_pages()}.items():
        assert "../shared" not in text and "DESIGN.md" not in text, f"{path} points to files outside the repository"


# ----------------------------------------------------------------------------- generated reference
def test_every_config_field_is_rendered_with_a_description():
    """Each config class a user writes keys of (experiment, datasets, targets, split, report, every
    attack and extraction recipe, every model, training, every defense, Tune, simulation) is
    rendered by a ``gen:fields`` marker on some page, and each of its fields has a row with a
    type, a default and a description."""
    hooks = _hooks()
    rendered = {arg.split()[0] for text in _pages().values() for name, arg in hooks.markers(text) if name == "fields"}
    classes = hooks.documented_classes()
    assert len(classes) >= 25  # experiment sections, 9 attacks' configs, 8 models, 5 defenses, Tune, simulation
    missing = [hooks.class_spec(cls) for cls in classes if hooks.class_spec(cls) not in rendered]
    assert not missing, f"config classes no docs page renders (add <!-- gen:fields MODULE:CLASS --> to a page): {missing}"
    notes = hooks.field_notes()
    for cls in classes:
        table = hooks.fields_table(cls)
        for name, field in cls.model_fields.items():
            assert f"| `{name}` |" in table, f"{cls.__name__}.{name} has no row in the generated reference"
            assert hooks.field_description(cls, name, field, notes), (
                f"{cls.__name__}.{name} has no description: give it Field(description=...) in the code "
                f"(or a note in docs/field_notes.yml)")


def test_field_notes_name_existing_fields():
    hooks = _hooks()
    bases = {base.__name__: base for cls in hooks.documented_classes() for base in cls.__mro__ if hasattr(base, "model_fields")}
    stale = [key for key in hooks.field_notes()
             if key.partition(".")[0] not in bases or key.partition(".")[2] not in bases[key.partition(".")[0]].model_fields]
    assert not stale, f"docs/field_notes.yml describes fields that no longer exist: {stale}"


def test_every_generated_table_expands():
    hooks = _hooks()
    for path, text in _pages().items():
        assert not hooks.markers(hooks.expand(text)), path
    assert "`attacker_fraction`" in hooks.expand("<!-- gen:fields raysteal.experiment.config:SplitConfig -->")
    with pytest.raises(ValueError, match="unknown generator"):
        hooks.expand("<!-- gen:nothing -->")


def test_the_reference_lists_every_registered_name():
    from raysteal.attacks.registry import attack_names
    from raysteal.data import dataset_names
    from raysteal.extraction.registry import extraction_names
    from raysteal.models import model_names

    hooks = _hooks()
    tables = {"attacks": attack_names(), "extractions": extraction_names(), "models": model_names(), "datasets": dataset_names()}
    for generator, names in tables.items():
        text = hooks.GENERATORS[generator]("")
        assert all(f"| `{name}` |" in text for name in names), generator


# ----------------------------------------------------------------------------- the site
@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"{module} is not installed (pip install -e '.[dev]' installs mkdocs, mkdocs-material, mkdocstrings[python])")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert not [line for line in output.splitlines() if line.startswith("WARNING")], output[-6000:]
    reference = (site / "reference" / "experiment-file" / "index.html").read_text(encoding="utf-8")
    assert "attacker_fraction" in reference and "<table>" in reference
    assert (site / "concepts" / "faults" / "index.html").is_file()
    assert (site / "api" / "oracle" / "index.html").is_file()
