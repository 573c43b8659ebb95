"""Time the ML-1M block of Zhu et al.'s Table 4 end to end and report runs per minute.

    python benchmarks/table4.py [--seeds 5] [--attacks ptd,ptq,pta,ptaq,qsd] [--out DIR] [--json PATH]

Runs ``experiments/zhu2023/table4-ml1m.yaml`` (3 targets x the chosen attacks x seeds) through
the same runner as ``raysteal run`` into a fresh directory (targets come from the target cache
when present; pass ``--cache-dir`` to a fresh folder to include their training). Prints the wall
time, runs per minute and the agreement table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import device_name, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--attacks", default="ptd,ptq,pta,ptaq,qsd", help="comma-separated subset of the file's attacks")
    parser.add_argument("--out", help="results directory (default: a fresh temporary one)")
    parser.add_argument("--cache-dir", help="target cache (default: the user cache)")
    parser.add_argument("--address", help="Ray cluster address")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import torch

    from raysteal.cli.run import save_experiment
    from raysteal.distributed.experiment_runner import run_experiment
    from raysteal.experiment.config import load_experiment, parse_experiment
    from raysteal.results.summary import summary_markdown

    config = load_experiment(REPO / "experiments" / "zhu2023" / "table4-ml1m.yaml", seeds=args.seeds)
    wanted = set(args.attacks.split(","))
    attacks = [a for a in config.attacks if a["attack"] in wanted]
    if not attacks:
        raise SystemExit(f"none of {sorted(wanted)} is in the experiment file")
    config = parse_experiment({**config.model_dump(mode="json"), "attacks": attacks}, source="table4-ml1m")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="table4-"))
    save_experiment(config, out)  # so `raysteal report OUT` shows the paper values
    started = time.perf_counter()
    store = run_experiment(config, out, address=args.address, cache_dir=args.cache_dir, progress=True)
    wall = time.perf_counter() - started
    frame = store.load()
    runs = len(frame)
    device = device_name("cuda" if torch.cuda.is_available() else "cpu")
    print(f"\nTable 4 (ML-1M): {runs} runs in {wall:.0f} s = {60 * runs / wall:.2f} runs/min on {device}\n")
    print(summary_markdown(frame, paper=config.paper))
    write_json(args.json, {"runs": runs, "wall_s": wall, "runs_per_minute": 60 * runs / wall, "device": device, "out": str(out)})


if __name__ == "__main__":
    main()
