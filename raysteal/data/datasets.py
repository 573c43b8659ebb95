"""The dataset registry: names -> where the files live, how to parse them, the paper's recipe.

``load_dataset(name, data_dir=None, preprocess="none")`` is the one entry point; files are
looked up under the data directory (:mod:`raysteal.paths`) in the dataset's folder, first
match wins. ``preprocess="paper"`` applies the recipe of Zhu et al. (2023) for that dataset.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysteal.data import formats
from raysteal.data.interactions import Interactions
from raysteal.data.preprocess import Preprocess, build_interactions
from raysteal.errors import ConfigError, DataFileError, UnknownNameError
from raysteal.paths import data_dir as resolve_data_dir
from raysteal.paths import data_dir_origin

Reader = Callable[[Path], pa.Table]


@dataclass(frozen=True)
class FetchSpec:
    """Where a dataset's official file lives and how to install it.

    ``kind="zip"``: the archive's members are extracted under ``target`` (a folder relative to
    the data directory; ``"."`` when the archive already holds a top folder like ``ml-1m/``).
    ``kind="file"``: the download is saved as ``target`` (a path relative to the data dir).
    ``sha256`` is ``None`` when no published hash is known: fetching then needs ``--sha256``.
    """

    url: str
    sha256: str | None
    kind: str
    target: str
    size: int | None = None
    hash_source: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    ``files``: candidate file names inside ``folder`` (relative to the data directory) with
    their parser, in order of preference. ``generator``: for generated datasets (no files),
    called with the loader's keyword options. ``paper``: the preprocessing recipe behind
    ``preprocess="paper"``. ``expected``: (interactions, users, items) per recipe for the
    reference copy in the project's shared data (checked by the realdata tests).
    """

    name: str
    description: str
    folder: str = ""
    files: tuple[tuple[str, Reader], ...] = ()
    paper: str = "none"
    fetch: FetchSpec | None = None
    generator: Callable[..., pa.Table] | None = None
    check_options: Callable[..., object] | None = None  # validates a generator's options without generating
    notes: str = ""
    expected: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def candidates(self, root: Path) -> list[Path]:
        """Every path looked at, in order of preference."""
        return [root / self.folder / fname for fname, _ in self.files]

    def find(self, root: Path) -> Path | None:
        """The first candidate file that exists, or ``None``."""
        for path in self.candidates(root):
            if path.is_file():
                return path
        return None

    def reader_for(self, path: Path) -> Reader:
        return dict(self.files)[path.name]


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec | type) -> DatasetSpec:
    """Add a dataset to the registry under its name; a decorator on a class whose attributes are
    the :class:`DatasetSpec`'s fields (each dataset is one such class in its own module of
    :mod:`raysteal.data.catalog`), or a call with the spec. Returns the spec."""
    if isinstance(spec, type):
        given = {f.name: getattr(spec, f.name) for f in fields(DatasetSpec) if hasattr(spec, f.name)}
        unknown = sorted(k for k in vars(spec) if not k.startswith("_") and k not in given)
        if unknown:
            raise ValueError(f"dataset class {spec.__name__}: {', '.join(unknown)} are not DatasetSpec fields")
        spec = DatasetSpec(**given)
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name`` (an error listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("dataset", name, sorted(_REGISTRY)) from None


def resolve_preprocess(name: str, preprocess: str | Preprocess | None = "none", kcore: int | None = None) -> Preprocess:
    """The recipe for dataset ``name``: ``"paper"`` is expanded to its registered recipe (it may
    be combined, e.g. ``"paper+kcore5"``); ``kcore`` overrides the k-core threshold."""
    spec = dataset_spec(name)
    if isinstance(preprocess, str):
        parts = [spec.paper if p.strip().lower() == "paper" else p for p in preprocess.split("+")]
        preprocess = "+".join(parts)
    return Preprocess.parse(preprocess).with_kcore(kcore)


def locate(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file dataset ``name`` would be loaded from; a clear :class:`DataFileError` if none exists."""
    spec = dataset_spec(name)
    if spec.generator is not None:
        raise ConfigError(f"dataset {name!r} is generated; it has no file")
    root = resolve_data_dir(data_dir)
    found = spec.find(root)
    if found is None:
        looked = ", ".join(str(p) for p in spec.candidates(root))
        how = f"run `raysteal data fetch {name}`" if spec.fetch else "copy the file there"
        raise DataFileError(
            f"dataset {name!r}: no data file found (looked for: {looked}; data directory {root} is "
            f"{data_dir_origin(data_dir)}). To get it, {how}, or copy one of those files into {root / spec.folder}."
        )
    return found


def load_table(name: str, data_dir: str | os.PathLike[str] | None = None, **options: Any) -> tuple[pa.Table, Path | None]:
    """The raw canonical table of dataset ``name`` (file order) and the file it came from."""
    spec = dataset_spec(name)
    if spec.generator is not None:
        return spec.generator(**options), None
    if options:
        raise ConfigError(f"dataset {name!r} takes no options (got {', '.join(sorted(options))})")
    path = locate(name, data_dir)
    return spec.reader_for(path)(path), path


def check_dataset_arguments(name: str, preprocess: str | Preprocess | None = "none", kcore: int | None = None, **options: Any) -> None:
    """Validate :func:`load_dataset`'s arguments without reading or generating anything: an unknown
    dataset or preprocessing step, options a file dataset does not take, a generator's bad options
    (``ConfigError`` / ``UnknownNameError`` naming them)."""
    spec = dataset_spec(name)
    resolve_preprocess(name, preprocess, kcore)
    if spec.generator is None:
        if options:
            raise ConfigError(f"dataset {name!r} takes no options (got {', '.join(sorted(options))})")
    elif spec.check_options is not None:
        spec.check_options(**options)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    preprocess: str | Preprocess | None = "none",
    kcore: int | None = None,
    **options: Any,
) -> Interactions:
    """Load dataset ``name`` as an :class:`Interactions` log.

    ``preprocess``: ``"none"`` (default: every row, dense ids, chronological), ``"paper"`` (the
    dataset's recipe from Zhu et al., see ``raysteal data list``), ``"dedupe"``, ``"kcoreN"`` or
    ``+``-joined combinations; ``kcore`` overrides the k-core threshold. ``options`` go to
    generated datasets (``load_dataset("synthetic", num_users=10_000, seed=3)``).
    """
    recipe = resolve_preprocess(name, preprocess, kcore)
    table, _ = load_table(name, data_dir, **options)
    return build_interactions(table, name=name, preprocess=recipe)


# ------------------------------------------------------------------ one file
_FORMATS = formats.FILE_FORMATS  # the readers registered with @formats.file_format


def file_formats() -> list[str]:
    """Formats :func:`load_file` understands."""
    return sorted(_FORMATS)


def _guess_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".inter"):
        return "recbole"
    if name == "ratings.dat":
        return "grouplens-dat"
    if name == "u.data":
        return "ml-100k"
    if name.endswith((".csv", ".tsv", ".parquet", ".pq")):
        return "table"
    raise ConfigError(f"{path}: cannot tell the file format from its name; pass format= one of {', '.join(file_formats())}")


OPTIONAL_TIME_OPTIONS = ("timestamp", "time_field")
"""File options naming a timestamp column; given empty, the file is read without one."""


def check_file_arguments(
    path: str | os.PathLike[str],
    format: str | None = None,
    preprocess: str | Preprocess | None = "none",
    kcore: int | None = None,
    **columns: Any,
) -> str:
    """Validate :func:`load_file`'s arguments without reading the file: it exists, its format is
    known (or guessable from the name), the parser takes ``columns``, the preprocessing parses.
    Returns the format."""
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, not an interaction file")
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    fmt = format or _guess_format(path)
    if fmt not in _FORMATS:
        raise UnknownNameError("file format", fmt, list(_FORMATS))
    try:
        bound = inspect.signature(_FORMATS[fmt]).bind(path, **columns)
    except TypeError as err:
        raise ConfigError(f"format {fmt!r} does not take those options ({err})") from None
    bound.apply_defaults()
    # an empty timestamp option means "no timestamp" (the readers' own reading of it)
    options = {
        key: value
        for key, value in list(bound.arguments.items())[1:]
        if value is not None and not (key in OPTIONAL_TIME_OPTIONS and value == "")
    }
    for key, value in options.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    named = {}  # source column -> the option naming it (every option but the separator names a column)
    for key, value in options.items():
        if key != "delimiter" and value in named:
            raise ConfigError(f"{named[value]} and {key} both name the column {value!r}: each needs a column of its own")
        named.setdefault(value, key)
    Preprocess.parse(preprocess).with_kcore(kcore)
    return fmt


def load_file(
    path: str | os.PathLike[str],
    format: str | None = None,
    preprocess: str | Preprocess | None = "none",
    name: str | None = None,
    kcore: int | None = None,
    **columns: Any,
) -> Interactions:
    """Load one interaction file of a known format (guessed from its name when ``format`` is None).

    ``columns`` go to the parser: for ``"table"`` (CSV/TSV/Parquet) ``user=``, ``item=``,
    ``timestamp=`` name the source columns and ``delimiter=`` the separator; for ``"recbole"``
    ``user_field=``, ``item_field=``, ``time_field=``. ``kcore`` overrides the k-core threshold
    of ``preprocess``.
    """
    fmt = check_file_arguments(path, format, preprocess, kcore, **columns)
    path = Path(path)
    table = _FORMATS[fmt](path, **columns)
    return build_interactions(table, name=name or path.name, preprocess=Preprocess.parse(preprocess).with_kcore(kcore))
