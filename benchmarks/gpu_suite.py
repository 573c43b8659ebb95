"""Every headline speed figure on one GPU, in one prepared command of at most ~8 minutes.

On the lent GPU machine (Python 3.12 with torch, pandas, pyarrow; no Ray, no network), with
``.carry/`` built here by ``python benchmarks/gpu_carry.py --teacher PATH`` and carried along::

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --carry .carry --out $OUT --work /tmp/gpu-suite

Here, on the CPU, at toy size (what CI runs; a toy carry is made in the work folder)::

    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu-smoke

First, in seconds, it checks that everything is there (the carry's wheels, ML-1M file and SASRec
teacher, a GPU) and stops naming what is missing; then it installs Ray and pydantic from the
carried wheels when the machine lacks them (raysteal itself runs from the checkout through
``PYTHONPATH``), starts one Ray runtime, and runs each step in its own process under a time cap
drawn from the whole run's budget (``--budget-s``; a step stopped at its cap keeps the figures it
had written):

1. ``training``: BPR-MF triples/s at the preset's batch and at 65k, the generic trainer against
   the raw limit (the model's loss and an AdamW step on triples already on the GPU), fp32 and
   bf16, with both precisions' validation NDCG@10 after the same epochs;
2. ``serving``: black-box queries/s, MF (3,706 items, K=50, requests of 1,024 and 65,536) and
   SASRec (the carried teacher, L=200, K=100): raw score + top-k (fp32, bf16 and their top-k
   agreement) vs the in-process oracle vs the ``TargetServer`` actor with 1 / 8 / 64 clients;
3. ``table4``: one seed of Zhu et al.'s Table 4 on ML-1M (``experiments/zhu2023/table4-ml1m.yaml``,
   BPR target trained in the run, every attack), wall time;
4. ``tune``: four ``raysteal tune`` trials (PTAQ, fewer epochs) at a quarter GPU each, sharing the
   GPU (and the sweep's ``TargetServer``, which holds a quarter too);
5. ``dfme``: ``benchmarks/dfme.py`` in Yue et al.'s setting (5,000 autoregressive sequences of
   200 items against the carried teacher): synthesis time, seconds per epoch, time to
   Agr@10 >= 0.66, within what is left of the budget.

``OUT/gpu_suite.json`` holds every figure (value, the raw limit it is compared with, measured in
the same run, the ratio, the published H100 anchor) and every step's raw measurements;
``OUT/gpu_suite.md`` the same as Markdown tables; ``OUT/gpu_suite.log`` the whole output. Both
are rewritten after every step.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import gpu_carry  # noqa: E402
from _common import markdown_table, write_json  # noqa: E402  (the driver imports torch but never touches CUDA)

ORDER = ("training", "serving", "table4", "tune", "dfme")
CAPS = {"training": 45, "serving": 110, "table4": 150, "tune": 90, "dfme": 200}
"""Most seconds each step may take on the GPU. With ``--budget-s`` 470 the caps add up to more than
the budget: a step ending early leaves its time to the later ones, and DFME, last, gets what is
left (its time to Agr@10 >= 0.66 is capped so that the whole run fits; synthesis time and seconds
per epoch come first). Table 4 runs before Tune so that the sweep finds the BPR target cached."""
RESERVE = {"training": 20, "serving": 45, "table4": 60, "tune": 40, "dfme": 90}
"""Seconds kept back for each later step when a step's cap is set."""
SMOKE_CAP = 150

ANCHORS = {  # DESIGN.md "Practical facts" and the issue: one H100, raw torch, no Ray
    "mf_raw_fp32": 11e6,
    "mf_raw_bf16": 20e6,
    "sasrec_raw": 0.26e6,
    "bpr_raw_65536": 38e6,
    "bpr_raw_2048": 1.7e6,
    "yue_synthesis_s": 117.0,
    "yue_epoch_s": 325.0,
}
CPU_REFERENCE = {"table4_runs_per_min": 1.21}  # README: one seed, 15 runs (3 targets) in 744 s on the 2-core CPU


# ------------------------------------------------------------------------------------- preflight
def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_gpu(timeout: float = 60) -> tuple[int, str]:
    """How many GPUs torch sees (and their name), asked in a child process (the driver keeps no
    CUDA context)."""
    code = (
        "import torch; print(torch.__version__); "
        "print(f'{torch.cuda.device_count()}:{torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else '')"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 0, "torch did not answer within a minute"
    if done.returncode != 0:
        return 0, f"torch does not import: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    version, _, gpus = done.stdout.strip().partition("\n")
    count, _, name = gpus.partition(":")
    return int(count or 0), f"torch {version}" + (f", {name}" if name else ", no CUDA device")


def preflight(carry: Path, steps: list[str], smoke: bool, allow_cpu: bool) -> tuple[list[str], dict[str, Any]]:
    """Everything the run needs, from file checks and one torch import; ``(problems, facts)``."""
    need_wheels = not (have("ray") and have("pydantic") and have("jsonschema"))
    manifest, problems = gpu_carry.check_carry(carry, need_wheels=need_wheels)
    gpu, what = check_gpu()
    facts = {"torch": what, "gpu": gpu, "python": platform.python_version(), "ray_installed": not need_wheels, "manifest": manifest}
    if "torch does not import" in what:
        problems.append(what)
    elif not gpu and not (smoke or allow_cpu):
        problems.append(f"no GPU ({what}); pass --allow-cpu to measure on the CPU anyway")
    for needed in ("yaml", "pandas", "pyarrow", "numpy"):
        if not have(needed):
            problems.append(f"Python package {needed} is missing (the GPU image has it; carry a wheel if not)")
    for name in ("table4-ml1m.yaml", "tune-ptaq-ml1m.yaml"):
        if not (REPO / "experiments" / "zhu2023" / name).is_file() and {"table4", "tune"} & set(steps):
            problems.append(f"experiments/zhu2023/{name} is missing from the checkout")
    return problems, facts


def install(carry: Path) -> str:
    """Install Ray (with Tune) and pydantic from the carried wheels when they are missing; then
    check, in a fresh interpreter, that raysteal's Ray side imports."""
    wanted = [m for m in ("ray", "pydantic", "jsonschema") if not have(m)]
    if not wanted:  # nothing new: the first step's imports are the check
        return "Ray and pydantic already installed"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(carry), "ray[tune]==2.60.0", "pydantic"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"installing from {carry} failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    importlib.invalidate_caches()
    check = (
        "import ray, ray.tune, pydantic, yaml, raysteal.oracle.server, raysteal.distributed.tune, raysteal.distributed.experiment_runner"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=child_env(os.environ))
    if done.returncode != 0:
        raise SystemExit(f"after installing, raysteal's Ray side does not import:\n{done.stderr[-3000:]}")
    return f"installed {', '.join(wanted)} from {carry}"


def child_env(base: dict[str, str] | os._Environ) -> dict[str, str]:
    env = dict(base)
    paths = [str(REPO), str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in {
        "RAY_AUTH_MODE": "disabled",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
    }.items():
        env.setdefault(key, value)
    return env


# ------------------------------------------------------------------------------------- toy carry
def toy_carry(folder: Path) -> Path:
    """A carry for the smoke test: a small synthetic log saved as ``ml-1m.seq.tsv.gz`` (the GPU run's
    file name and format, so every step loads "ml-1m" exactly as it will there) and a tiny SASRec
    teacher trained on it for one epoch; no wheels (Ray is installed here)."""
    import gzip

    from raysteal.data import load_dataset
    from raysteal.data.splits import leave_one_out
    from raysteal.data.synthetic import generate
    from raysteal.training import fit, save_checkpoint, seeded_model

    carry = folder / "carry"
    if (carry / gpu_carry.MANIFEST).is_file():
        return carry
    source = folder / "toy-data"
    (source / "ml-1m").mkdir(parents=True, exist_ok=True)
    table = generate(num_users=600, num_items=200, min_len=8, max_len=60, seed=0)
    with gzip.open(source / "ml-1m" / "ml-1m.seq.tsv.gz", "wt") as fh:
        fh.write("user_id\tmovie_id\n")
        fh.writelines(f"{u}\t{i}\n" for u, i in zip(table["user"].to_numpy(), table["item"].to_numpy()))
    log = load_dataset("ml-1m", data_dir=source, preprocess="paper")
    teacher = seeded_model({"model": "sasrec", "embedding_dim": 8, "max_len": 20}, log.num_users, log.num_items, 0)
    fit(teacher, leave_one_out(log), {"epochs": 1, "batch_size": 256, "eval_users": 50}, progress=False)
    path = save_checkpoint(folder / "toy-teacher.pt", teacher)
    gpu_carry.build_carry(carry, path, data_dir=str(source), wheels=False)
    return carry


# ----------------------------------------------------------------------------------- step runner
class Tee:
    """The driver's output, also kept in ``OUT/gpu_suite.log``."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.fh.write(line + "\n")


def run_child(name: str, cmd: list[str], env: dict[str, str], timeout: float, say: Tee) -> dict[str, Any]:
    """Run a step's process, echoing its output; on its cap, stop its whole process group."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tail: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            del tail[:-40]
            say(f"  [{name}] {line}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    status = "ok"
    try:
        proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        status = "timeout"
        for sig, grace in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5)
    if status == "ok" and proc.returncode != 0:
        status = "failed"
    return {
        "status": status,
        "seconds": time.perf_counter() - started,
        "returncode": proc.returncode,
        "cap_s": timeout,
        "error_tail": tail[-15:] if status == "failed" else None,
    }


def step_timeout(name: str, remaining_steps: list[str], deadline: float, smoke: bool) -> float:
    if smoke:
        return SMOKE_CAP
    later = sum(RESERVE[s] for s in remaining_steps)
    return min(CAPS[name], deadline - time.perf_counter() - later)


# ------------------------------------------------------------------------------------ figures
def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if unit in ("s",):
            return f"{value:,.1f}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _ratio(value: float | None, limit: float | None) -> float | None:
    if value is None or not limit:
        return None
    return value / limit


def figure(
    rows: list[dict[str, Any]],
    group: str,
    name: str,
    value: Any,
    unit: str,
    limit: float | None = None,
    limit_what: str = "",
    anchor: float | None = None,
    note: str = "",
) -> None:
    rows.append(
        {
            "group": group,
            "figure": name,
            "value": value,
            "unit": unit,
            "raw_limit": limit,
            "raw_limit_is": limit_what,
            "ratio": _ratio(value, limit) if isinstance(value, (int, float)) else None,
            "h100_anchor": anchor,
            "note": note,
        }
    )


def training_figures(raw: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    by = {(r["batch"], r["precision"]): r["triples_per_s"] for r in raw.get("raw", [])}
    preset = raw.get("preset_batch")
    for r in raw.get("raw", []):
        anchor = {65536: ANCHORS["bpr_raw_65536"], 2048: ANCHORS["bpr_raw_2048"]}.get(r["batch"]) if r["precision"] == "fp32" else None
        limit = by.get((r["batch"], "fp32"))
        what = "the raw fp32 step, same batch" if r["precision"] == "bf16" else "itself (the raw limit)"
        note = "bf16 autocast not used (no CUDA bf16): an fp32 step" if r["precision"] == "bf16" and not r.get("amp_used") else ""
        figure(
            rows,
            "target training (BPR-MF)",
            f"raw step, batch {r['batch']:,}, {r['precision']}",
            r["triples_per_s"],
            "triples/s",
            limit,
            what,
            anchor,
            note,
        )
    fits = {(r["batch"], r["precision"]): r for r in raw.get("fit", [])}
    for r in raw.get("fit", []):
        tag = " (preset)" if r["batch"] == preset else ""
        note = f"valid NDCG@10 {_fmt(r.get('valid_ndcg@10'))} after {r['epochs']} epochs, loss {_fmt(r.get('last_loss'))}"
        if r["precision"] == "bf16" and (r["batch"], "fp32") in fits:
            base = fits[(r["batch"], "fp32")]
            speed = _ratio(r.get("triples_per_s"), base.get("triples_per_s"))
            note += f"; {_fmt(speed)}x fp32's speed" if speed else ""
            if r.get("valid_ndcg@10") is not None and base.get("valid_ndcg@10"):
                note += f", NDCG {_fmt(r['valid_ndcg@10'] / base['valid_ndcg@10'])}x fp32's"
            if not r.get("amp_used"):
                note += " (bf16 autocast was not used: no CUDA bf16)"
        figure(
            rows,
            "target training (BPR-MF)",
            f"raysteal fit, batch {r['batch']:,}{tag}, {r['precision']}",
            r.get("triples_per_s"),
            "triples/s",
            by.get((r["batch"], r["precision"])),
            f"the raw {r['precision']} step, same batch",
            note=note,
        )


def serving_figures(raw: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, float]:
    limits: dict[str, float] = {}
    for kind, entry in (raw.get("targets") or {}).items():
        label = {"mf": "MF (BPR)", "sasrec": "SASRec"}.get(kind, kind)
        group = f"black-box serving, {label}, K={entry['k']}"
        raws = entry.get("raw", [])
        if not raws:
            continue
        top = max(r["batch"] for r in raws)
        limit = next((r["qps"] for r in raws if r["batch"] == top and r["precision"] == "fp32"), None)
        if limit:
            limits[kind] = limit
        for r in raws:
            anchor = None
            if r["batch"] == top:
                anchor = {
                    ("mf", "fp32"): ANCHORS["mf_raw_fp32"],
                    ("mf", "bf16"): ANCHORS["mf_raw_bf16"],
                    ("sasrec", "fp32"): ANCHORS["sasrec_raw"],
                }.get((kind, r["precision"]))
            what = "itself (the raw limit)" if (r["batch"], r["precision"]) == (top, "fp32") else f"raw fp32 at batch {top:,}"
            note = "anchor is top-50 of a SASRec-like model" if kind == "sasrec" and anchor else ""
            figure(
                rows,
                group,
                f"raw score+top-{entry['k']}, batch {r['batch']:,}, {r['precision']}",
                r["qps"],
                "queries/s",
                limit,
                what,
                anchor,
                note,
            )
        agreement = entry.get("bf16_agreement")
        if agreement:
            figure(
                rows,
                group,
                f"bf16 vs fp32 top-{entry['k']} overlap",
                agreement["overlap@k"],
                "share",
                note=(f"same first item in {agreement['top1']:.4f} of {agreement['rows']:,} inputs; weights: {entry.get('weights')}"),
            )
        for c in entry.get("cases", []):
            who = "in-process oracle" if c["mode"] == "inprocess" else f"TargetServer actor, {c['clients']} client(s)"
            figure(
                rows,
                group,
                f"{who}, request {c['request']:,}, {c['precision']}",
                c["qps"],
                "queries/s",
                limit,
                f"raw fp32 at batch {top:,}",
            )
        if entry.get("server_batches"):
            b = entry["server_batches"]
            figure(
                rows,
                group,
                "server: mean rows per forward pass",
                b.get("mean_batch_rows"),
                "rows",
                note=f"{b.get('batches')} passes (dynamic batching across clients)",
            )
    return limits


def dfme_figures(raw: dict[str, Any], rows: list[dict[str, Any]], limits: dict[str, float]) -> None:
    group = "DFME (Yue et al.'s setting), SASRec teacher"
    if "synthesis_seconds" not in raw:
        return
    qps = raw.get("synthesis_queries_per_s")
    figure(
        rows,
        group,
        f"synthesis of {raw.get('sequences'):,} sequences ({raw.get('queries'):,} queries)",
        raw["synthesis_seconds"],
        "s",
        anchor=ANCHORS["yue_synthesis_s"],
        note="anchor: Yue et al.'s released code on an H100",
    )
    figure(
        rows,
        group,
        "synthesis queries/s (top-100 answers)",
        qps,
        "queries/s",
        limits.get("sasrec"),
        "raw SASRec fp32 score+top-k (serving step)",
    )
    epochs = raw.get("epochs") or []
    if epochs:
        seconds = [e["epoch_seconds"] for e in epochs]
        steady = seconds[1:] or seconds
        figure(
            rows,
            group,
            f"seconds per epoch (batch {raw.get('config', {}).get('batch_size')}, mean of epochs "
            f"{2 if len(seconds) > 1 else 1}..{len(seconds)})",
            sum(steady) / len(steady),
            "s",
            anchor=ANCHORS["yue_epoch_s"],
            note="anchor: Yue et al.'s code, batch 128, H100",
        )
        best = max(epochs, key=lambda e: e["agr@10"])
        target = raw.get("target_agr@10")
        if raw.get("reached_target"):
            figure(
                rows,
                group,
                f"time to Agr@10 >= {target}",
                raw.get("time_to_target_s"),
                "s",
                note=f"{raw.get('epochs_to_target')} epochs; synthesis included, evaluation excluded",
            )
        else:
            figure(
                rows,
                group,
                f"time to Agr@10 >= {target}",
                None,
                "s",
                note=f"not reached: best Agr@10 {best['agr@10']:.4f} after {len(epochs)} epochs"
                + ("" if raw.get("finished") else " (stopped at the step's cap)"),
            )
        figure(
            rows,
            group,
            "best Agr@10",
            best["agr@10"],
            "share",
            note=f"epoch {best['epoch']}; popularity floor {raw.get('popularity_floor', {}).get('agr@10', float('nan')):.4f}; "
            f"Yue et al. 0.662",
        )


def table4_figures(raw: dict[str, Any], rows: list[dict[str, Any]], out_runs: int | None) -> None:
    group = "Zhu et al. Table 4, ML-1M, BPR target, one seed"
    planned = raw.get("runs_planned")
    if raw.get("finished"):
        runs, wall = raw["runs"], raw["wall_s"]
        figure(
            rows,
            group,
            f"wall time, {runs} runs (every attack), target trained in the run",
            wall,
            "s",
            note=f"{60 * runs / wall:.2f} runs/min (CPU, 2 cores: {CPU_REFERENCE['table4_runs_per_min']} runs/min incl. 3 targets)",
        )
        for r in raw.get("rows", []):
            figure(
                rows,
                group,
                f"{r['attack']}: Agr@50 held-out (sanity)",
                r.get("agr@k/heldout"),
                "share",
                note=f"Agr@50 queried {_fmt(r.get('agr@k'))}; run {_fmt(r.get('wall_s'), 's')} s on {r.get('device')}",
            )
    elif planned:
        figure(rows, group, "wall time", None, "s", note=f"stopped at the cap after {out_runs or 0} of {planned} runs")


def tune_figures(raw: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    group = "Ray Tune, fractional GPUs"
    if not raw.get("finished"):
        if raw.get("trials_planned"):
            figure(rows, group, "trials at once", None, "trials", note="stopped at the step's cap")
        return
    n, fit = raw["trials"], raw.get("trials_that_fit", raw["trials"])
    devices = sorted({str(r.get("device")) for r in raw.get("rows", [])})
    share = raw.get("gpu_per_trial") or 0
    note = f"devices {', '.join(devices)}; {raw['completed']} completed"
    if share and fit < n:
        note += (
            f"; the sweep's TargetServer holds {raw.get('server_gpu', 0):g} of the {raw.get('cluster_gpus', 0):g} GPU(s), "
            f"so {fit} trials of {share:g} fit at once"
        )
    figure(
        rows,
        group,
        f"{n} PTAQ trials at {share:g} GPU each: most running at once",
        raw["max_concurrent_seen"],
        "trials",
        float(fit),
        f"trials that fit at once ({fit})",
        note=note,
    )
    figure(
        rows,
        group,
        "sweep wall time",
        raw["wall_s"],
        "s",
        note=f"trial seconds summed {raw['trial_seconds']:.1f} = {raw['trial_seconds'] / raw['wall_s']:.2f}x the wall"
        + ("; target from the cache" if raw.get("target_cached") else "; target trained in the sweep"),
    )


def assemble(state: dict[str, Any]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    parts = state["parts"]
    if "training" in parts:
        training_figures(parts["training"], rows)
    limits = serving_figures(parts.get("serving", {}), rows)
    if "dfme" in parts:
        dfme_figures(parts["dfme"], rows, limits)
    if "table4" in parts:
        table4_figures(parts["table4"], rows, state["steps"].get("table4", {}).get("runs_done"))
    if "tune" in parts:
        tune_figures(parts["tune"], rows)
    state["figures"] = rows
    return state


def markdown(state: dict[str, Any]) -> str:
    facts = state["facts"]
    head = [
        f"# GPU suite ({'smoke test, toy sizes, CPU' if state['smoke'] else 'full sizes'})",
        "",
        f"Device: **{state.get('device') or facts.get('torch')}**; Python {facts.get('python')}; {facts.get('torch')}; "
        f"Ray {state.get('ray_version', '?')}; started {state['started']}; wall {state.get('wall_s', 0):.0f} s of a "
        f"{state['budget_s']:.0f} s budget.",
        "",
    ]
    if state["smoke"]:
        head += ["Smoke run: toy data and models on the CPU; these numbers say the script works, not how fast a GPU is.", ""]
    steps = [[name, s["status"], _fmt(s.get("seconds"), "s"), _fmt(s.get("cap_s"), "s")] for name, s in state["steps"].items()]
    text = "\n".join(head) + "\n" + markdown_table(["step", "status", "seconds", "cap s"], steps) + "\n"
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in state.get("figures", []):
        groups.setdefault(row["group"], []).append(row)
    for group, rows in groups.items():
        table = [
            [
                r["figure"],
                _fmt(r["value"], r["unit"]),
                r["unit"],
                _fmt(r["raw_limit"], r["unit"]),
                r["raw_limit_is"] or "–",
                _fmt(r["ratio"]),
                _fmt(r["h100_anchor"], r["unit"]),
                r["note"] or "",
            ]
            for r in rows
        ]
        text += f"\n## {group}\n\n" + markdown_table(
            ["figure", "value", "unit", "raw limit (same run)", "limit is", "ratio", "H100 anchor", "note"], table
        )
    return text


def write_report(out: Path, state: dict[str, Any]) -> None:
    assemble(state)
    write_json(str(out / "gpu_suite.json"), state)
    (out / "gpu_suite.md").write_text(markdown(state))


# ----------------------------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--carry", default=None, help="carried folder (default: REPO/.carry; with --smoke a toy one in --work)")
    parser.add_argument("--out", default=str(REPO / "results" / "gpu-suite"), help="where gpu_suite.json/.md/.log go")
    parser.add_argument("--work", default=None, help="scratch: step parts, caches, runs (default OUT/work)")
    parser.add_argument("--budget-s", type=float, default=None, help="whole run, install included (default 470; smoke 600)")
    parser.add_argument("--steps", default=",".join(ORDER), help=f"comma-separated subset of {','.join(ORDER)}")
    parser.add_argument("--smoke", action="store_true", help="every step at toy size on the CPU (CI)")
    parser.add_argument("--allow-cpu", action="store_true", help="full sizes without a GPU (slow; for debugging)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        metavar="FIELD=JSON",
        help="override a size of gpu_steps.Sizes, e.g. --set dfme_sequences=2000 --set 'clients=[1,8]'",
    )
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(args.steps) - set(ORDER))
    if unknown:
        parser.error(f"unknown step(s) {unknown}; steps are {', '.join(ORDER)}")
    args.out = Path(args.out).resolve()
    args.work = Path(args.work).resolve() if args.work else args.out / "work"
    return args


def sizes_of(args: argparse.Namespace):
    """The run's sizes: the GPU run's or the smoke test's, with ``--set`` overrides."""

    import gpu_steps

    sizes = gpu_steps.SMOKE if args.smoke else gpu_steps.FULL
    known = {f.name for f in dataclasses.fields(sizes)}
    overrides = {}
    for item in args.sets:
        key, sep, raw = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--set {item!r}: expected FIELD=JSON with FIELD one of {', '.join(sorted(known))}")
        try:
            value = json.loads(raw)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {raw!r} is not JSON") from None
        overrides[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(sizes, **overrides)


def child(args: argparse.Namespace) -> None:
    import gpu_steps

    gpu_steps.run_step(args.step, sizes_of(args), args.part, args.work, Path(args.carry))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.step:
        child(args)
        return {}
    t0 = time.perf_counter()
    budget = args.budget_s or (600.0 if args.smoke else 470.0)
    deadline = t0 + budget
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in ("table4", "tune", "cache", "parts"):  # an earlier run's rows would be resumed, not re-timed
        shutil.rmtree(args.work / stale, ignore_errors=True)
    say = Tee(args.out / "gpu_suite.log")
    os.environ.update(child_env(os.environ))
    if args.smoke and not args.carry:
        sys.path.insert(0, str(REPO))
        carry = toy_carry(args.work)
    else:
        carry = Path(args.carry or REPO / ".carry").resolve()
    sizes = sizes_of(args)  # a bad --set stops here, before anything runs
    problems, facts = preflight(carry, args.steps, args.smoke, args.allow_cpu)
    if problems:
        for problem in problems:
            say(f"MISSING: {problem}")
        say(f"gpu_suite: stopped after {time.perf_counter() - t0:.1f} s: {len(problems)} thing(s) missing, nothing measured")
        raise SystemExit(2)
    say(f"preflight ok in {time.perf_counter() - t0:.1f} s: {facts['torch']}; carry {carry}")
    say(install(carry))
    os.environ["RAYSTEAL_DATA"] = str(carry / "data")
    os.environ.setdefault("RAYSTEAL_RAY_TMP", "/tmp/ray")
    state: dict[str, Any] = {
        "suite": "gpu_suite",
        "smoke": args.smoke,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "budget_s": budget,
        "facts": {k: v for k, v in facts.items() if k != "manifest"},
        "carry": facts.get("manifest"),
        "device": facts["torch"].partition(", ")[2] if facts["gpu"] else "CPU",
        "sizes": dataclasses.asdict(sizes),
        "overrides": list(args.sets),
        "steps": {},
        "parts": {},
        "anchors": ANCHORS,
    }
    sys.path.insert(0, str(REPO))
    from raysteal.distributed.runtime import init_ray

    # the GPUs torch sees, told to Ray (its own detection may miss them in a container)
    ray = init_ray(num_cpus=max(os.cpu_count() or 1, 4), object_store_mb=256 if args.smoke else 4096, num_gpus=facts["gpu"] or None)
    state["ray_version"] = ray.__version__
    env = child_env(os.environ)
    env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    say(
        f"Ray {ray.__version__} up ({ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs) "
        f"at {time.perf_counter() - t0:.1f} s"
    )
    try:
        steps = [s for s in ORDER if s in args.steps]
        for i, name in enumerate(steps):
            timeout = step_timeout(name, steps[i + 1 :], deadline, args.smoke)
            part = args.work / "parts" / f"{name}.json"
            part.unlink(missing_ok=True)
            if timeout < 10:
                state["steps"][name] = {"status": "skipped", "seconds": 0.0, "cap_s": timeout, "why": "no time left in the budget"}
                say(f"== {name}: skipped, {timeout:.0f} s left")
                continue
            say(f"== {name} (cap {timeout:.0f} s, {deadline - time.perf_counter():.0f} s of the budget left)")
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--step",
                name,
                "--part",
                str(part),
                "--carry",
                str(carry),
                "--out",
                str(args.out),
                "--work",
                str(args.work),
            ] + (["--smoke"] if args.smoke else [])
            cmd += [arg for item in args.sets for arg in ("--set", item)]
            result = run_child(name, cmd, env, timeout, say)
            if part.is_file():
                try:
                    state["parts"][name] = json.loads(part.read_text())
                except ValueError:
                    pass
            if name == "table4":
                result["runs_done"] = len(list((args.work / "table4" / "runs").glob("*.parquet")))
            state["steps"][name] = result
            say(f"== {name}: {result['status']} in {result['seconds']:.1f} s")
            state["wall_s"] = time.perf_counter() - t0
            write_report(args.out, state)
    finally:
        ray.shutdown()
    state["wall_s"] = time.perf_counter() - t0
    write_report(args.out, state)
    say(
        f"gpu_suite: {sum(s['status'] == 'ok' for s in state['steps'].values())}/{len(state['steps'])} steps ok in "
        f"{state['wall_s']:.0f} s -> {args.out / 'gpu_suite.json'}, {args.out / 'gpu_suite.md'}"
    )
    say("")
    say((args.out / "gpu_suite.md").read_text())
    return state


if __name__ == "__main__":
    main()
