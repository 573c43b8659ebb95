"""Time the data layer on the real files: ML-1M load, its iterative 5-core, Ta-feng's paper recipe.

Usage: python benchmarks/data_load.py [--data-dir DIR] [--repeats N] [--json PATH]

Each figure is wall-clock seconds (min and median over ``--repeats`` runs, after one warm-up
run whose time is reported separately as ``first_call``: it includes Arrow's one-off
initialisation). "load" = parse the file + dense ids + chronological order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raysteal.data import load_table, resolve_preprocess  # noqa: E402
from raysteal.data.preprocess import build_interactions  # noqa: E402
from raysteal.paths import data_dir as resolve_data_dir  # noqa: E402


def timed(fn: Callable[[], object], repeats: int) -> dict:
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    counts = None
    if hasattr(result, "num_interactions"):
        counts = {"interactions": result.num_interactions, "users": result.num_users, "items": result.num_items}
    return {"first_call_s": first, "min_s": min(times), "median_s": statistics.median(times), "repeats": repeats, "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="data directory (default: $RAYSTEAL_DATA, else the cache)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    root = resolve_data_dir(args.data_dir)

    ml1m_table = load_table("ml-1m", root)[0]
    tafeng_table = load_table("tafeng", root)[0]

    def ml1m_load():
        return build_interactions(load_table("ml-1m", root)[0], "ml-1m")

    cases = {
        "ml-1m load (parse + ids + order)": ml1m_load,
        "ml-1m load + iterative 5-core": lambda: build_interactions(load_table("ml-1m", root)[0], "ml-1m", "kcore5"),
        "ml-1m 5-core only (table in memory)": lambda: build_interactions(ml1m_table, "ml-1m", "kcore5"),
        "tafeng parse (raw CSV.gz)": lambda: load_table("tafeng", root)[0],
        "tafeng parse + paper recipe (dedupe, 10-core)": lambda: build_interactions(
            load_table("tafeng", root)[0], "tafeng", resolve_preprocess("tafeng", "paper")
        ),
        "tafeng paper recipe only (table in memory)": lambda: build_interactions(
            tafeng_table, "tafeng", resolve_preprocess("tafeng", "paper")
        ),
    }
    report = {
        "data_dir": str(root),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "results": {},
    }
    for label, fn in cases.items():
        r = timed(fn, args.repeats)
        report["results"][label] = r
        counts = "" if r["counts"] is None else "  -> {interactions:,} rows / {users:,} users / {items:,} items".format(**r["counts"])
        print(f"{label:<48} min {r['min_s']:.3f} s  median {r['median_s']:.3f} s  (first {r['first_call_s']:.3f} s){counts}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
