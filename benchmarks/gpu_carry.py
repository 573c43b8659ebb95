"""Build (and check) the folder that travels with a GPU run of ``benchmarks/gpu_suite.py``.

    python benchmarks/gpu_carry.py --teacher results/targets/sasrec-ml1m/checkpoint.pt

The lent GPU machine has Python 3.12 with torch, pandas and pyarrow, but no Ray, no pydantic and
no network, and the MovieLens files may not be committed. ``.carry/`` (ignored by git) holds:

- the wheels the machine lacks (Ray 2.60 without its Java jars, pydantic, jsonschema, ...), made by
  ``../shared/tools/gpu-carry.sh`` (``--wheels-script``), about 49 MiB;
- ``data/ml-1m/<file>``: the ML-1M file the loader reads (from ``--data-dir``, else
  ``$RAYSTEAL_DATA``, else the cache), about 2.6 MiB;
- ``teacher/<name>.pt``: the SASRec teacher for the DFME step (a ``raysteal train-target`` or
  ``benchmarks/targets.py --save-dir`` checkpoint), checked here to load, to be sequential and to
  know as many items as ML-1M under the paper's preprocessing;
- ``MANIFEST.json``: what is there (sizes, sha256, the teacher's config and metrics).

The travelling working tree (tracked and untracked-not-ignored files) plus the carry must stay
under 64 MiB; the script fails, naming the sizes, when it would not. ``--check`` only checks an
existing carry (what ``gpu_suite.py`` does first on the GPU machine, in a second).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "MANIFEST.json"
FORMAT = "raysteal-gpu-carry/1"
TRAVEL_LIMIT = 64 * 2**20
WHEELS = (
    "ray-2.60.0-",
    "pydantic-",
    "pydantic_core-",
    "jsonschema-",
    "referencing-",
    "rpds_py-",
    "annotated_types-",
    "typing_inspection-",
    "tensorboardx-",
    "typing_extensions-",
    "packaging-",
)
"""Name prefixes of the wheels the GPU machine lacks: ``gpu-carry.sh``'s, plus :data:`EXTRA_WHEELS`."""
EXTRA_WHEELS = ("typing_extensions>=4.16.0", "packaging>=24.2")
"""Small pure-Python wheels pydantic 2.14 / Ray 2.60 need newer than the GPU image may hold (pip
keeps an installed version that is new enough and takes these only otherwise)."""

DEFAULT_WHEELS_SCRIPT = REPO.parent / "shared" / "tools" / "gpu-carry.sh"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def travel_bytes(repo: Path = REPO) -> int:
    """Bytes of the working tree that travels to the GPU machine: tracked files and untracked files
    git does not ignore (carried folders are counted separately)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo, capture_output=True, check=True
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in filter(None, listed):
        path = repo / os.fsdecode(name)
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def missing_wheels(carry: Path) -> list[str]:
    return [prefix.rstrip("-") for prefix in WHEELS if not any(carry.glob(f"{prefix}*.whl"))]


def check_carry(carry: str | os.PathLike, need_wheels: bool = True) -> tuple[dict[str, Any] | None, list[str]]:
    """``(manifest, problems)`` of an existing carry folder, from file checks alone (no torch, no
    Ray: it runs in a second on a bare machine). ``need_wheels=False`` where Ray is already installed."""
    carry = Path(carry)
    if not carry.is_dir():
        return None, [
            f"carry folder {carry} is missing (build it here with `python benchmarks/gpu_carry.py --teacher PATH` "
            "and name it in the run's carry)"
        ]
    problems: list[str] = []
    manifest = None
    try:
        manifest = json.loads((carry / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            problems.append(f"{carry / MANIFEST}: not a {FORMAT} manifest")
    except (OSError, ValueError) as err:
        problems.append(f"{carry / MANIFEST} is missing or unreadable ({err.__class__.__name__}); rebuild with benchmarks/gpu_carry.py")
    if need_wheels:
        problems += [
            f"wheel {name} is missing from {carry} (run ../shared/tools/gpu-carry.sh or benchmarks/gpu_carry.py)"
            for name in missing_wheels(carry)
        ]
    if manifest:
        for what in ("dataset", "teacher"):
            entry = manifest.get(what) or {}
            path = carry / str(entry.get("file", ""))
            if not entry.get("file") or not path.is_file():
                problems.append(f"{what} file {path} is missing (manifest names {entry.get('file')!r})")
            elif path.stat().st_size != entry.get("bytes"):
                problems.append(f"{what} file {path} has {path.stat().st_size} bytes, the manifest says {entry.get('bytes')}")
    return manifest, problems


def download_wheels(carry: Path, specs: tuple[str, ...]) -> None:
    """``pip download`` pure-Python or manylinux wheels for the GPU machine's Python 3.12 (x86_64)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "-d",
        str(carry),
        *specs,
    ]
    subprocess.run(cmd, check=True)


def copy_dataset(carry: Path, name: str, data_dir: str | None) -> dict[str, Any]:
    """Copy the file dataset ``name`` is loaded from into ``carry/data/<folder>/``."""
    from raysteal.data.datasets import dataset_spec, locate

    source = locate(name, data_dir)
    folder = carry / "data" / dataset_spec(name).folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / source.name)
    dest = folder / source.name
    return {"name": name, "file": str(dest.relative_to(carry)), "source": str(source), "bytes": dest.stat().st_size, "sha256": sha256(dest)}


def copy_teacher(carry: Path, teacher: str | os.PathLike, dataset: str, preprocess: str) -> dict[str, Any]:
    """Check the teacher checkpoint against the carried dataset and copy it into ``carry/teacher/``."""
    from raysteal.data import load_dataset
    from raysteal.training import load_checkpoint

    teacher = Path(teacher).expanduser()
    if not teacher.is_file():
        raise SystemExit(
            f"teacher checkpoint {teacher} does not exist (train one with `raysteal train-target --dataset "
            f"{dataset} --preprocess {preprocess} --model sasrec --out DIR`, then pass DIR/checkpoint.pt)"
        )
    model, meta = load_checkpoint(teacher)
    if not model.sequential:
        raise SystemExit(f"teacher {teacher} is a {model.config.model} model: the DFME step needs a sequential teacher")
    log = load_dataset(dataset, data_dir=carry / "data", preprocess=preprocess)
    if model.num_items != log.num_items:
        raise SystemExit(
            f"teacher {teacher} knows {model.num_items} items; {dataset} (preprocess {preprocess}) has "
            f"{log.num_items}: it was trained on another log"
        )
    folder = carry / "teacher"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    dest = folder / f"{model.config.model}-{dataset}.pt"
    shutil.copyfile(teacher, dest)
    metrics = meta.get("metrics") or {}
    return {
        "file": str(dest.relative_to(carry)),
        "source": str(teacher.resolve()),
        "bytes": dest.stat().st_size,
        "sha256": sha256(dest),
        "model": model.config.model,
        "config": model.config.model_dump(mode="json"),
        "num_items": int(model.num_items),
        "preprocess": preprocess,
        "test": metrics.get("test") if isinstance(metrics.get("test"), dict) else None,
        "dataset_counts": {"users": int(log.num_users), "items": int(log.num_items), "interactions": int(log.num_interactions)},
    }


def build_carry(
    carry: str | os.PathLike,
    teacher: str | os.PathLike,
    data_dir: str | None = None,
    dataset: str = "ml-1m",
    preprocess: str = "paper",
    wheels: bool = True,
    wheels_script: str | os.PathLike = DEFAULT_WHEELS_SCRIPT,
    limit: int = TRAVEL_LIMIT,
    repo: Path = REPO,
) -> dict[str, Any]:
    """Fill ``carry`` (wheels, dataset file, teacher, manifest) and check what travels fits ``limit``."""
    carry = Path(carry).resolve()
    carry.mkdir(parents=True, exist_ok=True)
    if wheels:
        script = Path(wheels_script)
        if not script.is_file():
            raise SystemExit(f"wheels script {script} is missing: pass --wheels-script, or --no-wheels to skip the wheels")
        if carry != (repo / ".carry").resolve():
            raise SystemExit(f"{script.name} writes {repo / '.carry'}: build the carry there (or pass --no-wheels)")
        subprocess.run(["bash", str(script)], cwd=repo, check=True)
        download_wheels(carry, EXTRA_WHEELS)
        if missing_wheels(carry):
            raise SystemExit(f"{script} left wheels missing: {', '.join(missing_wheels(carry))}")
    data = copy_dataset(carry, dataset, data_dir)
    teacher_entry = copy_teacher(carry, teacher, dataset, preprocess)
    manifest = {"format": FORMAT, "dataset": data, "teacher": teacher_entry, "wheels": sorted(p.name for p in carry.glob("*.whl"))}
    carry_size = folder_bytes(carry)
    tree = travel_bytes(repo)
    manifest.update(carry_bytes=carry_size, tree_bytes=tree, travel_bytes=carry_size + tree, travel_limit_bytes=limit)
    (carry / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    total = folder_bytes(carry) + tree
    if total > limit:
        raise SystemExit(
            f"too large to travel: carry {folder_bytes(carry) / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB "
            f"= {total / 2**20:.1f} MiB > {limit / 2**20:.0f} MiB"
        )
    return manifest


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="SASRec teacher checkpoint trained on ML-1M (preprocess paper)")
    parser.add_argument("--carry", default=str(REPO / ".carry"))
    parser.add_argument("--data-dir", default=None, help="dataset directory (default: $RAYSTEAL_DATA, then the cache)")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--preprocess", default="paper", help="the teacher's preprocessing (default: paper)")
    parser.add_argument("--no-wheels", action="store_true", help="skip the wheels (a machine that has Ray)")
    parser.add_argument("--wheels-script", default=str(DEFAULT_WHEELS_SCRIPT))
    parser.add_argument("--check", action="store_true", help="only check an existing carry")
    args = parser.parse_args(argv)
    if args.check:
        manifest, problems = check_carry(args.carry, need_wheels=not args.no_wheels)
        for problem in problems:
            print(f"missing: {problem}", file=sys.stderr)
        if problems:
            raise SystemExit(2)
        total = folder_bytes(Path(args.carry)) + travel_bytes()
        print(f"{args.carry}: complete; carry + working tree = {total / 2**20:.1f} MiB of {TRAVEL_LIMIT / 2**20:.0f} MiB")
        return manifest or {}
    if not args.teacher:
        parser.error("--teacher PATH is required (or --check)")
    manifest = build_carry(
        args.carry, args.teacher, args.data_dir, args.dataset, args.preprocess, wheels=not args.no_wheels, wheels_script=args.wheels_script
    )
    print(
        f"{args.carry}: {manifest['dataset']['file']}, {manifest['teacher']['file']} ({manifest['teacher']['model']}), "
        f"{len(manifest['wheels'])} wheels; carry {manifest['carry_bytes'] / 2**20:.1f} MiB + working tree "
        f"{manifest['tree_bytes'] / 2**20:.1f} MiB = {manifest['travel_bytes'] / 2**20:.1f} MiB of "
        f"{TRAVEL_LIMIT / 2**20:.0f} MiB"
    )
    return manifest


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
