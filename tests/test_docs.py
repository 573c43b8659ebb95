"""The documentation: a README that stays short and keeps the lines CI runs, a reference generated
from the code that covers every config field, and a site that builds with ``mkdocs build --strict``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import unicodedata
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


# ----------------------------------------------------------------------------- links
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (no links live there)."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def internal_links(text: str) -> list[str]:
    """The relative link targets of Markdown ``text`` (``[label](target)``), in order, each once."""
    targets = re.findall(r"\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)", _prose(text))
    return list(dict.fromkeys(t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)))


def _heading_text(raw: str) -> str:
    text = re.sub(r"\s*\{[^}]*\}\s*$", "", raw)  # attr_list
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    return re.sub(r"(\*\*|\*|~~)", "", text).strip()


def _mkdocs_slug(text: str) -> str:
    """Python-Markdown's ``toc`` slug (MkDocs' default)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _github_slug(text: str) -> str:
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str] | None:
    """The ``#fragments`` a link to ``path`` may name: its headings' ids (generated tables
    expanded, MkDocs' and GitHub's spellings, repeated headings numbered) and explicit ids;
    ``None`` for a page mkdocstrings fills (``::: module``), whose ids are not in the source."""
    text = path.read_text(encoding="utf-8")
    if re.search(r"^:::\s", text, re.M):
        return None
    hooks = _hooks()
    if hooks.markers(text):
        text = hooks.expand(text)
    found: set[str] = set(re.findall(r"""<a\s[^>]*(?:id|name)=["']([^"']+)["']""", text))
    seen: dict[str, int] = {}
    for raw in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", text), re.M):
        explicit = re.search(r"\{[^}]*#([\w-]+)[^}]*\}\s*$", raw)
        if explicit:
            found.add(explicit.group(1))
            continue
        words = _heading_text(raw)
        for slug, suffix in ((_mkdocs_slug(words), "_"), (_github_slug(words), "-")):
            n = seen.get(slug, 0)
            found.add(slug if n == 0 else f"{slug}{suffix}{n}")
        seen[_mkdocs_slug(words)] = seen.get(_mkdocs_slug(words), 0) + 1
        if _github_slug(words) != _mkdocs_slug(words):
            seen[_github_slug(words)] = seen.get(_github_slug(words), 0) + 1
    return found


def link_problem(page: Path, target: str, root: Path) -> str | None:
    """Why the link ``target`` of ``page`` is broken (``None``: it resolves). It must name a file
    or folder under ``root``; a ``#fragment`` on a Markdown file must be one of its :func:`anchors`."""
    path_part, _, fragment = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"outside {root.name or root}/"
    if not resolved.exists():
        return "no such file"
    if fragment and resolved.suffix == ".md":
        ids = anchors(resolved)
        if ids is not None and fragment not in ids:
            return f"no heading #{fragment} in {resolved.name}"
    return None


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
    """Every relative link of the README names a file of the repository, and a ``#fragment`` on a
    Markdown file one of its headings (as GitHub or MkDocs spells it)."""
    links = internal_links(README.read_text(encoding="utf-8"))
    assert links, "the README links into the docs"
    broken = [f"{target}: {problem}" for target in links if (problem := link_problem(README, target, ROOT))]
    assert not broken, f"README.md has broken links: {broken}"


def test_docs_internal_links_resolve():
    """Every relative link of every docs page names a file under docs/ (the site cannot serve one
    outside it) and, with a ``#fragment``, a heading of that page — generated tables included."""
    broken = []
    for path, text in _pages().items():
        for target in internal_links(text):
            problem = link_problem(path, target, DOCS)
            if problem:
                broken.append(f"{path.relative_to(ROOT)} -> {target}: {problem}")
    assert not broken, "broken links in docs/:\n" + "\n".join(broken)


def test_no_page_has_the_same_section_twice():
    """A page's ``##`` sections are unique: a section pasted twice (a stale copy beside its
    update) is an error, not a second anchor."""
    repeated = []
    for path, text in _pages().items():
        headings = [line.strip() for line in _FENCE.sub("", text).splitlines() if line.startswith("## ")]
        repeated += [f"{path.relative_to(ROOT)}: {h}" for h in sorted(set(headings)) if headings.count(h) > 1]
    assert not repeated, "sections written twice:\n" + "\n".join(repeated)


def test_mkdocs_nav_names_existing_pages():
    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name:... tags
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)

    def pages(entry):
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from pages(value)
        elif isinstance(entry, list):
            for item in entry:
                yield from pages(item)

    listed = [page for page in pages(config["nav"]) if not re.match(r"[a-z]+://", page)]
    assert listed
    missing = [page for page in listed if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"


def test_the_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## The `floor` (K = 20)\n\n### Custom { #own-id }\n", encoding="utf-8")
    page = tmp_path / "b.md"
    text = (
        "[ok](a.md) [ok](a.md#the-floor-k-20) [ok](a.md#own-id) [bad](a.md#nothing) [bad](missing.md) "
        "[web](https://example.org/x.md) `[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n"
    )
    links = internal_links(text)
    assert links == ["a.md", "a.md#the-floor-k-20", "a.md#own-id", "a.md#nothing", "missing.md"]
    problems = {target: link_problem(page, target, tmp_path) for target in links}
    assert [target for target, problem in problems.items() if problem] == ["a.md#nothing", "missing.md"]
    assert link_problem(page, "../outside.md", tmp_path)


def test_readme_experiment_is_the_quickstart_file():
    """The README shows experiments/quickstart.yaml less its comments and report: the same mapping."""
    block = re.search(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block, "the README shows an experiment file"
    shown = yaml.safe_load(block.group(1))
    assert 10 <= len(block.group(1).strip().splitlines()) <= 15
    quickstart = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text(encoding="utf-8"))
    expected = {key: value for key, value in quickstart.items() if key not in ("description", "report")}
    assert shown == expected, (
        "README.md's experiment file no longer matches experiments/quickstart.yaml: update the "
        "README's file (and the table it prints) together with the quickstart"
    )


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
                f"{cls.__name__}.{name} has no description: give it Field(description=...) in the code (or a note in docs/field_notes.yml)"
            )


def test_field_notes_name_existing_fields():
    hooks = _hooks()
    bases = {base.__name__: base for cls in hooks.documented_classes() for base in cls.__mro__ if hasattr(base, "model_fields")}
    stale = [
        key
        for key in hooks.field_notes()
        if key.partition(".")[0] not in bases or key.partition(".")[2] not in bases[key.partition(".")[0]].model_fields
    ]
    assert not stale, f"docs/field_notes.yml describes fields that no longer exist: {stale}"


def test_every_generated_table_expands():
    hooks = _hooks()
    for path, text in _pages().items():
        assert not hooks.markers(hooks.expand(text)), path
    assert "`attacker_fraction`" in hooks.expand("<!-- gen:fields raysteal.experiment.config:SplitConfig -->")
    with pytest.raises(ValueError, match="unknown generator"):
        hooks.expand("<!-- gen:nothing -->")
    with pytest.raises(ValueError, match="gen:report needs a folder under docs/ holding report.md"):
        hooks.expand("<!-- gen:report results/no-such-experiment -->")


def test_a_committed_reports_tables_reach_the_page_unchanged(tmp_path, monkeypatch):
    hooks = _hooks()
    folder = tmp_path / "results" / "area" / "exp"
    folder.mkdir(parents=True)
    (folder / "report.md").write_text("# raysteal report\n\n## exp\n\nwords\n\n### A title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    monkeypatch.setattr(hooks, "DOCS", tmp_path)
    assert hooks.expand("<!-- gen:report results/area/exp -->").split("\n") == [
        "",
        "**A title**",
        "",
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
        "",
    ]
    (folder / "report.md").write_text("# no table\n")
    with pytest.raises(ValueError, match="holds no table"):
        hooks.expand("<!-- gen:report results/area/exp -->")


def test_every_committed_report_shows_the_experiments_of_the_rows_beside_it():
    # a report rendered from more runs than the committed results.parquet holds would put figures
    # on the pages that no committed row backs (raysteal report now rewrites the file first)
    import pandas as pd

    checked = 0
    for report in sorted((DOCS / "results").rglob("report.md")):
        rows = report.parent / "results.parquet"
        text = report.read_text(encoding="utf-8")
        if not rows.is_file() or not text.startswith("# raysteal report"):
            continue
        sections = set(re.findall(r"^## (\S+)$", text, re.M))
        experiments = set(pd.read_parquet(rows, columns=["experiment"])["experiment"].astype(str))
        assert sections == experiments, f"{report.relative_to(ROOT)}: sections {sorted(sections)}, rows of {sorted(experiments)}"
        checked += 1
    assert checked >= 5


def test_a_committed_targets_json_reaches_the_page_as_a_table(tmp_path, monkeypatch):

    hooks = _hooks()
    folder = tmp_path / "results" / "targets"
    folder.mkdir(parents=True)
    row = {
        "model": "bpr",
        "model_config": {"embedding_dim": 64},
        "hr@10_100neg": 0.58641,
        "ndcg@10_100neg": 0.32149,
        "ndcg@10_full": 0.0398,
        "popularity_ndcg@10_full": 0.0255,
    }
    row.update(
        {
            "target_lift": 1.5608,
            "epochs_run": 230,
            "best_epoch": 155,
            "epoch_scale": 4.9,
            "last_validation_gain": -0.02,
            "train_seconds": 61.7,
        }
    )
    (folder / "tiny.json").write_text(json.dumps([row]))
    monkeypatch.setattr(hooks, "DOCS", tmp_path)
    table = hooks.expand("<!-- gen:targets results/targets/tiny.json -->").strip().split("\n")
    assert len(table) == 3 and table[0].count("|") == table[1].count("|") == table[2].count("|")
    assert table[2] == "| `bpr` | 64 | 0.5864 | 0.3215 | 0.0398 | 0.0255 | 1.56× | 230 (155) | 4.90 | -2.0% | 62 |"
    (folder / "tiny.json").write_text("[]")
    with pytest.raises(ValueError, match="holds no rows"):
        hooks.expand("<!-- gen:targets results/targets/tiny.json -->")
    with pytest.raises(ValueError, match="gen:targets needs a JSON file"):
        hooks.expand("<!-- gen:targets results/targets/none.json -->")


def test_the_holdout_table_averages_the_last_ten_epochs_and_marks_a_refit(tmp_path, monkeypatch):
    hooks = _hooks()
    folder = tmp_path / "results" / "targets"
    folder.mkdir(parents=True)
    keys = ("hr@10_100neg", "ndcg@10_100neg", "hr@10_99neg", "ndcg@10_99neg")
    rows = [
        {"split": split, "epoch": e, **dict.fromkeys(keys, base + e / 100)}
        for split, base in (("a", 0.1), ("b", 0.2))
        for e in range(1, 13)
    ]
    (folder / "h.json").write_text(json.dumps(rows))
    monkeypatch.setattr(hooks, "DOCS", tmp_path)
    table = hooks.expand("<!-- gen:holdout results/targets/h.json -->").strip().split("\n")
    assert len(table) == 5 and table[2].startswith("| `a` | 12 | 0.1750 | 0.1750 | 0.1750 | 0.1750 | 0.2200 | 0.2200 |")
    assert table[4] == "| difference | | +0.1000 | +0.1000 | +0.1000 | +0.1000 | +0.1000 | +0.1000 |"
    (folder / "h.json").write_text(json.dumps(rows[:12]))
    with pytest.raises(ValueError, match="two splits"):
        hooks.expand("<!-- gen:holdout results/targets/h.json -->")
    row = {"model": "bpr", "hr@10_100neg": 0.5, "target_lift": 1.5, "train_config": {"refit": True}}
    (folder / "t.json").write_text(json.dumps([row]))
    assert "| `bpr`, refit |" in hooks.expand("<!-- gen:targets results/targets/t.json -->")


def test_the_reference_lists_every_registered_name():
    from raysteal.attacks.registry import attack_names, recipe_names
    from raysteal.data import dataset_names
    from raysteal.models import model_names

    hooks = _hooks()
    tables = {"attacks": attack_names(), "extractions": recipe_names("sequential"), "models": model_names(), "datasets": dataset_names()}
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
            pytest.skip(
                f"{module} is not installed (pip install -e '.[docs]' installs mkdocs, mkdocs-material, mkdocstrings[python]; '.[dev]' includes it)"
            )
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert not [line for line in output.splitlines() if line.startswith("WARNING")], output[-6000:]
    reference = (site / "reference" / "experiment-file" / "index.html").read_text(encoding="utf-8")
    assert "attacker_fraction" in reference and "<table>" in reference
    assert (site / "concepts" / "faults" / "index.html").is_file()
    assert (site / "api" / "oracle" / "index.html").is_file()
