"""MkDocs hook: reference tables generated from the code at build time, so they cannot drift.

A page asks for a table with an HTML comment on a line of its own::

    <!-- gen:fields raysteal.experiment.config:SplitConfig -->
    <!-- gen:attacks -->

and :func:`on_page_markdown` replaces it with Markdown built from the pydantic models and the
registries (attacks, extraction recipes, models, datasets, file formats, Tune distributions,
the CLI). Every key of a config class gets its type, default, allowed values and description;
a field without a ``description=`` in the code takes its text from ``docs/field_notes.yml``.
``tests/test_docs.py`` checks that every config class is rendered on some page, that every field
has a description, and that no note names a field that no longer exists.

An unknown generator or class fails the build (``mkdocs build --strict`` in CI).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
NOTES_FILE = HERE / "field_notes.yml"
DOCS = Path(__file__).resolve().parent
MARKER = re.compile(r"^<!--[ \t]*gen:([a-z-]+)[ \t]*(.*?)[ \t]*-->[ \t]*$", re.MULTILINE)


# ----------------------------------------------------------------------------- helpers
def load_class(spec: str) -> type:
    """``"package.module:Class"`` -> the class."""
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"gen:fields needs 'module:Class', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def class_spec(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def field_notes() -> dict[str, str]:
    """``{"Class.field": text}`` for fields whose code carries no description."""
    if not NOTES_FILE.is_file():
        return {}
    return {str(k): str(v).strip() for k, v in (yaml.safe_load(NOTES_FILE.read_text(encoding="utf-8")) or {}).items()}


def rst_to_md(text: str) -> str:
    """Docstring/description text as Markdown: RST roles and double backticks to code spans."""
    text = re.sub(r":[a-z]+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    return " ".join(text.split())


def cell(text: str) -> str:
    """Text safe in a Markdown table cell: pipes escaped, ``<``/``>`` outside code spans as
    entities (``results/<experiment>`` would be read as an HTML tag)."""
    parts = re.split(r"(`[^`]*`)", text.replace("|", "\\|").replace("\n", " "))
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)


def type_text(tp: Any) -> str:
    """A field's annotation in words a YAML writer reads (no ``|``: table cells)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in parts)
        return f"{text} or null" if len(parts) < len(args) else text
    if origin is typing.Literal:
        return "string" if all(isinstance(a, str) for a in args) else "literal"
    if origin in (list, tuple, set, frozenset):
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(inner) > 1:
            return f"list of {len(inner)} {type_text(inner[0])}"
        return f"list of {type_text(inner[0])}" if inner else "list"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}" if args and args[1] is not Any else "mapping"
    if tp is Any:
        return "any"
    if isinstance(tp, type):
        from pydantic import BaseModel

        if issubclass(tp, BaseModel):
            return f"mapping ({tp.__name__})"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def literal_values(tp: Any) -> list[Any]:
    """The values a ``Literal`` (possibly inside ``Optional``) allows; empty for other types."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return list(args)
    if origin in (typing.Union, types.UnionType):
        return [v for a in args for v in literal_values(a)]
    return []


def value_text(value: Any) -> str:
    """A default as the YAML/JSON a user would write."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return "all defaults"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, default=str)}`"


def default_text(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        return value_text(field.default_factory())
    return value_text(field.default)


def constraint_text(field: Any) -> str:
    """Allowed values and bounds, from ``Literal`` types and ``Field`` constraints."""
    parts: list[str] = []
    allowed = literal_values(field.annotation)
    if allowed:
        parts.append("one of " + ", ".join(f"`{json.dumps(v)}`" for v in allowed))
    names = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    for meta in field.metadata:
        for attr, sign in names.items():
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None) is not None:
            parts.append(f"at least {meta.min_length} item{'s' if meta.min_length != 1 else ''}")
        if getattr(meta, "max_length", None) is not None:
            parts.append(f"at most {meta.max_length} long")
        if getattr(meta, "pattern", None):
            parts.append(f"matches `{meta.pattern}`")
    return ", ".join(parts)


def field_description(cls: type, name: str, field: Any, notes: dict[str, str] | None = None) -> str:
    """The field's ``description=``, else its note (looked up along the class's bases)."""
    if field.description:
        return rst_to_md(field.description)
    notes = field_notes() if notes is None else notes
    for base in cls.__mro__:
        note = notes.get(f"{base.__name__}.{name}")
        if note:
            return rst_to_md(note)
    return ""


def fields_table(cls: type, skip: tuple[str, ...] = ()) -> str:
    """One row per field of a pydantic model: key, type, default, allowed values, description."""
    notes = field_notes()
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        rows.append(
            f"| `{name}` | {cell(type_text(field.annotation))} | {cell(default_text(field))} | "
            f"{cell(constraint_text(field))} | {cell(field_description(cls, name, field, notes))} |"
        )
    return "\n".join(rows)


# ----------------------------------------------------------------------------- the classes
def documented_classes() -> list[type]:
    """Every config class whose keys a user writes in an experiment, tune or simulation file:
    the tests check that each is rendered by some page's ``gen:fields`` marker."""
    from raysteal.attacks.base import AttackConfig
    from raysteal.attacks.registry import get_recipe, recipe_names
    from raysteal.data.synthetic import SyntheticConfig
    from raysteal.experiment.config import DatasetEntry, ExperimentConfig, ReportEntry, SplitConfig, TargetEntry
    from raysteal.experiment.simulate_config import SimulationSettings
    from raysteal.experiment.tune_config import AshaSettings, Resources, TuneSettings
    from raysteal.models.base import model_class, model_names
    from raysteal.oracle import defenses
    from raysteal.training.config import TrainConfig

    classes: list[type] = [
        ExperimentConfig,
        DatasetEntry,
        TargetEntry,
        SplitConfig,
        ReportEntry,
        SyntheticConfig,
        AttackConfig,
        TrainConfig,
        TuneSettings,
        AshaSettings,
        Resources,
        SimulationSettings,
    ]
    classes += [get_recipe(name, "sequential").config_cls for name in recipe_names("sequential")]
    classes += [model_class(name).Config for name in model_names()]
    classes += list(typing.get_args(typing.get_args(defenses.DefenseSpec)[0]))
    unique: dict[str, type] = {}
    for cls in classes:
        unique.setdefault(class_spec(cls), cls)
    return list(unique.values())


# ----------------------------------------------------------------------------- registries
def attacks_table(_: str = "") -> str:
    """Zhu et al.'s attack recipes on collaborative targets (``raysteal.attacks`` registry)."""
    from raysteal.attacks.registry import attack_names, get_recipe

    rows = ["| `attack:` | needs | what it does |", "|---|---|---|"]
    for name in attack_names():
        recipe = get_recipe(name)
        needs = ", ".join(recipe.needs) or "nothing (calibration)"
        rows.append(f"| `{name}` | {cell(needs)} | {cell(rst_to_md(recipe.summary))} |")
    return "\n".join(rows)


def extractions_table(_: str = "") -> str:
    """Sequential extraction recipes (``raysteal.extraction`` registry)."""
    from raysteal.attacks.registry import get_recipe, recipe_names

    rows = ["| `attack:` | config class | real sequences | queries | resumes mid-run | what it does |", "|---|---|---|---|---|---|"]
    for name in recipe_names("sequential"):
        recipe = get_recipe(name, "sequential")
        cls = recipe.config_cls
        if "source" in cls.model_fields:
            real = "with `source: real`"
        else:
            real = "yes" if cls.uses_real_sequences else "no"
        rows.append(
            f"| `{name}` | `{cls.__name__}` | {real} | {'yes' if cls.uses_queries else 'no'} | "
            f"{'yes' if recipe.resumable else 'no'} | {cell(rst_to_md(recipe.summary))} |"
        )
    return "\n".join(rows)


def models_table(_: str = "") -> str:
    """Registered models, their config class and their training preset."""
    from raysteal.models.base import model_class, model_names
    from raysteal.training.presets import preset

    rows = ["| `model:` | kind | config class | preset (model) | preset (train) |", "|---|---|---|---|---|"]
    for name in model_names():
        cls = model_class(name)
        model_cfg, train_cfg = preset(name)
        extra = {k: v for k, v in model_cfg.items() if k != "model"}
        rows.append(
            f"| `{name}` | {'sequential' if cls.sequential else 'collaborative'} | `{cls.Config.__name__}` | "
            f"{cell(value_text(extra)) if extra else '–'} | {cell(value_text(train_cfg)) if train_cfg else '–'} |"
        )
    return "\n".join(rows)


def datasets_table(_: str = "") -> str:
    """Registered datasets: files looked for, the paper recipe, download."""
    from raysteal.data.datasets import dataset_names, dataset_spec

    rows = [
        "| `name:` | what | files looked for (under the data directory) | `preprocess: paper` | `raysteal data fetch` |",
        "|---|---|---|---|---|",
    ]
    for name in dataset_names():
        spec = dataset_spec(name)
        files = ", ".join(f"`{spec.folder}/{f}`" for f, _ in spec.files) if spec.files else "none (generated)"
        fetch = "yes, sha256-checked" if spec.fetch is not None else "no"
        what = spec.description + (f". {spec.notes}" if spec.notes else "")
        rows.append(f"| `{name}` | {cell(rst_to_md(what))} | {cell(files)} | `{spec.paper}` | {fetch} |")
    return "\n".join(rows)


def formats_table(_: str = "") -> str:
    """File formats of ``path:`` datasets and the ``columns:`` options each parser takes."""
    from raysteal.data import datasets, formats

    rows = ["| `format:` | parser | `columns:` options (default) |", "|---|---|---|"]
    for name in datasets.file_formats():
        fn = formats.FILE_FORMATS[name]
        params = list(inspect.signature(fn).parameters.values())[1:]
        options = ", ".join(f"`{p.name}` ({json.dumps(p.default)})" for p in params) or "none"
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0]
        rows.append(f"| `{name}` | {cell(rst_to_md(doc))} | {cell(options)} |")
    return "\n".join(rows)


def distributions_table(_: str = "") -> str:
    """Tune search-space distributions and the searchers."""
    from raysteal.experiment.tune_config import DISTRIBUTIONS, SEARCHER_UNSUPPORTED, SEARCHERS

    rows = ["| distribution | arguments |", "|---|---|"]
    rows += [f"| `{name}` | {cell(args)} |" for name, args in DISTRIBUTIONS.items()]
    rows += ["", "| `tune.searcher` | what | distributions it cannot sample |", "|---|---|---|"]
    rows += ["| `null` / `random` | random sampling, grid points crossed, seeded from `tune.seed` | – |"]
    for name, what in SEARCHERS.items():
        cannot = "; ".join(f"`{d}` ({why})" for d, why in SEARCHER_UNSUPPORTED.get(name, {}).items()) or "–"
        rows.append(f"| `{name}` | {cell(what)} | {cell(cannot)} |")
    return "\n".join(rows)


def tune_metrics_table(_: str = "") -> str:
    """The metrics a Tune trial reports, per epoch (ASHA) and at its end."""
    from raysteal.experiment.evaluation import EVALUATIONS

    def names(values: tuple[str, ...]) -> str:
        return ", ".join(f"`{v}`" for v in values)

    rows = ["| target | reported after every epoch (usable with ASHA) | reported at the end (FIFO only) |", "|---|---|---|"]
    for kind, evaluation in EVALUATIONS.items():
        end_only = tuple(m for m in evaluation.final_metrics if m not in evaluation.probe_metrics)
        rows.append(f"| {kind} | {names(evaluation.probe_metrics)} | {names(end_only)} |")
    return "\n".join(rows)


def cli_reference(_: str = "") -> str:
    """Every ``raysteal`` command with its arguments and options (from the Typer app)."""
    import typer.main

    from raysteal.cli import app

    root = typer.main.get_command(app)
    out: list[str] = []

    def walk(cmd: Any, path: list[str]) -> None:  # Typer's (vendored) click command objects
        if getattr(cmd, "commands", None):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], path + [name])
            return
        out.append(f"### `{' '.join(path)}`\n")
        out.append(rst_to_md((cmd.help or "").split("\n\n")[0]) + "\n")
        rows = ["| argument / option | help | default |", "|---|---|---|"]
        for param in cmd.params:
            if param.name == "help":
                continue
            if getattr(param, "param_type_name", "") == "argument":
                label = f"`{param.name.upper()}`"
            else:
                label = ", ".join(f"`{o}`" for o in param.opts + param.secondary_opts)
            default = param.default if not callable(param.default) else None
            shown = "" if default in (None, False, (), []) else f"`{default}`"
            rows.append(f"| {label} | {cell(rst_to_md(getattr(param, 'help', None) or ''))} | {cell(shown)} |")
        out.append("\n".join(rows) + "\n")

    walk(root, ["raysteal"])
    return "\n".join(out)


def report_tables(arg: str) -> str:
    """The tables of a committed report, ``<!-- gen:report results/bahsd/real-ml1m -->``: the
    ``report.md`` that ``raysteal report`` wrote, copied beside its ``results.parquet`` under
    ``docs/`` (so the page's numbers are the file's). Each table keeps its title, in bold."""
    path = DOCS / arg.strip() / "report.md"
    if not arg.strip() or not path.is_file():
        raise ValueError(f"gen:report needs a folder under docs/ holding report.md, got {arg!r}")
    out: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("### "):
            out += ["", f"**{line[4:].strip()}**", ""]
        elif line.startswith("|"):
            out.append(line)
    if not any(line.startswith("|") for line in out):
        raise ValueError(f"gen:report {arg}: {path} holds no table")
    return "\n".join(out)


def _figure(value: object, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def targets_table(arg: str) -> str:
    """The rows ``benchmarks/targets.py --json`` wrote, ``<!-- gen:targets results/targets/ml-100k.json -->``
    (a file under ``docs/``): each model's accuracy beside the popularity recommender's, the lift
    the guard reads, and how its training ended."""
    path = DOCS / arg.strip()
    if not arg.strip() or not path.is_file():
        raise ValueError(f"gen:targets needs a JSON file under docs/ written by benchmarks/targets.py, got {arg!r}")
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"gen:targets {arg}: {path} holds no rows")
    labelled = any("label" in row for row in rows)  # rows of one model under several settings
    head = (
        ("| settings " if labelled else "")
        + "| model | d | HR@10 (100 neg) | NDCG@10 (100 neg) | NDCG@10 full | popularity NDCG@10 full | lift | epochs (best) "
        "| epoch scale | last validation gain | train s |"
    )
    out = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in rows:
        gain = row.get("last_validation_gain")
        # closed-form references (benchmarks/reference_recommenders.py) train no epochs
        epochs = "–" if row.get("epochs_run") is None else f"{row['epochs_run']} ({row.get('best_epoch')})"
        model = row.get("model_config") or {}
        cells = [
            f"`{row['model']}`"
            + (", pre-trained parts" if model.get("pretrain") else "")
            + (", refit" if (row.get("train_config") or {}).get("refit") else ""),
            _figure(model.get("embedding_dim")),
            _figure(row.get("hr@10_100neg")),
            _figure(row.get("ndcg@10_100neg")),
            _figure(row.get("ndcg@10_full")),
            _figure(row.get("popularity_ndcg@10_full")),
            f"{row['target_lift']:.2f}×" if row.get("target_lift") is not None else "–",
            epochs,
            _figure(row.get("epoch_scale"), 2),
            "–" if gain is None else f"{gain:+.1%}",
            _figure(round(row["train_seconds"]) if row.get("train_seconds") is not None else None),
        ]
        if labelled:
            cells.insert(0, f"`{row['label']}`" if row.get("label") else "–")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def holdout_table(arg: str) -> str:
    """The rows ``benchmarks/holdout_protocol.py --json`` wrote, ``<!-- gen:holdout
    results/targets/ml-1m-holdout-protocol.json -->``: per split, test accuracy averaged over the
    last 10 epochs and its highest over all epochs (what choosing the epoch on test items would
    report), and the difference between the splits."""
    path = DOCS / arg.strip()
    if not arg.strip() or not path.is_file():
        raise ValueError(f"gen:holdout needs a JSON file under docs/ written by benchmarks/holdout_protocol.py, got {arg!r}")
    rows = json.loads(path.read_text())
    splits = list(dict.fromkeys(row["split"] for row in rows)) if isinstance(rows, list) else []
    if len(splits) != 2:
        raise ValueError(f"gen:holdout {arg}: {path} does not hold the two splits' rows")
    keys = ("hr@10_100neg", "ndcg@10_100neg", "hr@10_99neg", "ndcg@10_99neg")

    def figures(split: str) -> list[float]:
        mine = [row for row in rows if row["split"] == split]
        last = mine[-10:]
        return [sum(row[key] for row in last) / len(last) for key in keys] + [max(row[key] for row in mine) for key in keys[:2]]

    head = (
        "| split | epochs | HR@10 (100 neg) | NDCG@10 (100 neg) | HR@10 (99 neg) | NDCG@10 (99 neg) "
        "| highest HR@10 (100 neg) | highest NDCG@10 (100 neg) |"
    )
    out = [head, "|" + "---|" * 8]
    table = {split: figures(split) for split in splits}
    for split in splits:
        epochs = sum(row["split"] == split for row in rows)
        out.append(f"| `{split}` | {epochs} | " + " | ".join(_figure(v) for v in table[split]) + " |")
    diff = [b - a for a, b in zip(table[splits[0]], table[splits[1]])]
    out.append("| difference | | " + " | ".join(f"{v:+.4f}" for v in diff) + " |")
    return "\n".join(out)


GENERATORS: dict[str, Callable[[str], str]] = {
    "fields": lambda arg: fields_table(load_class(arg.split()[0]), tuple(arg.split()[1:])),
    "attacks": attacks_table,
    "extractions": extractions_table,
    "models": models_table,
    "datasets": datasets_table,
    "formats": formats_table,
    "distributions": distributions_table,
    "tune-metrics": tune_metrics_table,
    "cli": cli_reference,
    "report": report_tables,
    "targets": targets_table,
    "holdout": holdout_table,
}


def expand(markdown: str) -> str:
    """``markdown`` with every ``<!-- gen:NAME ARG -->`` line replaced by its generated text."""

    def replace(match: re.Match) -> str:
        name, arg = match.group(1), match.group(2)
        if name not in GENERATORS:
            raise ValueError(f"unknown generator gen:{name} (known: {', '.join(GENERATORS)})")
        return "\n" + GENERATORS[name](arg).strip("\n") + "\n"

    return MARKER.sub(replace, markdown)


def markers(markdown: str) -> list[tuple[str, str]]:
    """``(generator, argument)`` of every marker in ``markdown``."""
    return [(m.group(1), m.group(2)) for m in MARKER.finditer(markdown)]


# ----------------------------------------------------------------------------- MkDocs events
def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown)
