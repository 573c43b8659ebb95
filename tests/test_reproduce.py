"""``raysteal reproduce PAPER --out DIR``: a folder of experiment files run one after the other,
killed and resumed, narrowed with ``--only``, fed from another results directory with ``--from``,
and one report with the paper's values; and the paper values filled in for Zhu et al."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raysteal.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATASET = {"name": "synthetic", "options": {"num_users": 400, "num_items": 300, "max_len": 60, "seed": 1}}
TARGET = {"model": "bpr", "train": {"epochs": 4, "batch_size": 512}}
TABLE = {
    "experiment": "tiny-table",
    "description": "A two-seed table.",
    "seeds": 2,
    "datasets": [DATASET],
    "targets": [TARGET],
    "attacks": [
        {"attack": "popularity"},
        {"attack": "ptd", "epochs": 4, "batch_size": 256},
        {"attack": "ptq", "epochs": 4, "finetune_epochs": 4, "batch_size": 256},
    ],
    "split": {"attacker_fraction": 0.3},
    "k": 10,
    "paper": {"synthetic/bpr/ptd": 0.5, "synthetic/bpr/ptq": 0.6, "synthetic/bpr/pta": 0.7},
    "report": [{"kind": "table", "title": "Tiny table", "metrics": ["agr@k", "agr@k/heldout"]}],
}
FIGURE = {
    "experiment": "tiny-figure",
    "seeds": 1,
    "datasets": [DATASET],
    "targets": [TARGET],  # the table's target: trained once, for both files
    "attacks": [{"attack": "popularity"}, {"attack": "ptq", "epochs": 4, "finetune_epochs": 4, "batch_size": 256}],
    "split": {"attacker_fraction": 0.3},
    "grid": {"k": [5, 10]},
    "paper": {"synthetic/bpr/ptq[k=10]": 0.6},
    "report": [{"kind": "curve", "x": "k", "series": "attack", "metric": "agr@k", "title": "Tiny figure"}],
}


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tinypaper"
    folder.mkdir()
    (folder / "tiny-table.yaml").write_text(yaml.safe_dump(TABLE, sort_keys=False))
    (folder / "tiny-figure.yaml").write_text(yaml.safe_dump(FIGURE, sort_keys=False))
    (folder / "tune-tiny.yaml").write_text(yaml.safe_dump({**TABLE, "experiment": "tune-tiny", "search_space": {}}))
    return folder


def _stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/runs/*.parquet")}


@pytest.mark.ray
def test_reproduce_runs_each_file_resumes_after_a_kill_and_reports(ray_session, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import raysteal.distributed.experiment_runner as runner_module
    from raysteal.cli import app

    folder, out, cache = _folder(tmp_path), tmp_path / "out", tmp_path / "cache"
    base = [str(folder), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    runner = CliRunner()

    # the first sitting is killed while its second file runs
    real = runner_module.run_experiment
    calls = []

    def killed_on_the_second_file(config, *args, **kwargs):
        calls.append(config.experiment)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, *args, **kwargs)

    monkeypatch.setattr(runner_module, "run_experiment", killed_on_the_second_file)
    result = runner.invoke(app, ["reproduce", *base])
    assert result.exit_code == 130, result.output
    assert "resume with: raysteal reproduce" in result.output and "--cache-dir" in result.output
    first, second = calls  # cheap files first: the figure's 4 one-seed runs before the table's 6
    assert (first, second) == ("tiny-figure", "tiny-table")
    assert len(list((out / "tiny-figure" / "runs").glob("*.parquet"))) == 4
    assert not list((out / "tiny-table" / "runs").glob("*.parquet"))
    assert json.loads((out / "tiny-table" / "reproduce.json").read_text())["sittings"][-1]["status"] == "interrupted"
    assert not (out / "tune-tiny").exists()  # Tune files are not run
    monkeypatch.setattr(runner_module, "run_experiment", real)

    # resumed: the finished file is skipped, the killed one runs
    before = _stamps(out)
    result = runner.invoke(app, ["reproduce", *base])
    assert result.exit_code == 0, result.output
    after = _stamps(out)
    assert {k: after[k] for k in before} == before and len(after) == 4 + 6
    assert "[1/2] tiny-figure" not in result.output and "tiny-table: 6 run(s)" in result.output

    # once more: nothing new runs, nothing is rewritten
    result = runner.invoke(app, ["reproduce", *base])
    assert result.exit_code == 0, result.output
    assert _stamps(out) == after and "run(s) ->" not in result.output
    assert len(json.loads((out / "tiny-table" / "reproduce.json").read_text())["sittings"]) == 2

    report = (out / "report.md").read_text()
    assert "### Tiny table" in report and "### Tiny figure" in report
    table = report[report.index("### Tiny table") :]
    assert "| dataset | target | attack | agr@k | paper | Δ | agr@k/heldout | floor (agr@k) |" in table
    ptd = next(line for line in table.splitlines() if line.startswith("| synthetic | bpr | ptd |"))
    assert "| 0.5000 |" in ptd and ptd.count("±") == 2  # the paper's value beside ours (2 seeds)
    assert "`synthetic/bpr/pta` 0.7000" in table  # a paper cell with no run is named
    figure_table = report[report.index("### Tiny figure") : report.index("## tiny-table")]
    assert "| 0.6000 |" in figure_table and "(tiny-figure-0-curve.png)" in figure_table
    assert (out / "tiny-figure-0-curve.png").stat().st_size > 5000
    files = report[report.index("## Files") : report.index("## tiny-figure")]
    for stem, runs in (("tiny-figure", "4 / 4"), ("tiny-table", "6 / 6")):
        line = next(line for line in files.splitlines() if f"[{stem}]" in line)
        cells = [c.strip() for c in line.split("|")]
        assert runs in cells and cells[8] not in ("–", "0:00:00") and cells[9] == "–" and cells[11] == "done", line  # wall time here
    assert "**Runs:** 6 of the 6 at 2 seeds finished, 6 row(s) shown; 6 ran here (wall time" in report

    # published for the documentation: the page and its PNGs, each file's rows and own report; no logs
    docs = tmp_path / "docs" / "zhu"
    result = runner.invoke(app, ["reproduce", *base, "--report-only", "--publish", str(docs)])
    assert result.exit_code == 0, result.output
    assert (docs / "report.md").read_text() == (out / "report.md").read_text() and (docs / "tiny-figure-0-curve.png").is_file()
    for stem, runs in (("tiny-figure", 4), ("tiny-table", 6)):
        assert len(pd.read_parquet(docs / stem / "results.parquet")) == runs
        assert (docs / stem / "report.md").read_text().startswith("# raysteal report")
        assert json.loads((docs / stem / "reproduce.json").read_text())["sittings"]  # the wall times travel with the rows
    assert not [p for p in docs.rglob("*") if "query" in p.name or "ledger" in p.name or p.suffix == ".pt"]

    # --only one file, its rows taken from the directory above: nothing runs, the page says where they came from
    fresh = tmp_path / "fresh"
    result = runner.invoke(
        app,
        ["reproduce", str(folder), "--out", str(fresh), "--cache-dir", str(cache), "--quiet", "--only", "tiny-table", "--from", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "tiny-table: 6 finished run(s) taken from" in result.output and "run(s) ->" not in result.output
    assert not (fresh / "tiny-figure").exists()
    assert (fresh / "tiny-table" / "results.parquet").is_file()
    page = (fresh / "report.md").read_text()
    assert f"6 imported from `{out.resolve() / 'tiny-table'}`" in page and "| imported |" in page
    line = next(
        line for line in page.splitlines() if line.startswith("| 1 | [tiny-table](#tiny-table) | tiny-table | 2 | 6 / 6 | 0 | 6 | – |")
    )
    assert line.split("|")[9].strip() not in ("–", "0:00:00"), line  # no wall time here; the sittings that ran them, elsewhere
    assert "over 2 sittings there)" in page
    assert "_No results yet (4 runs to go)._" in page

    # a fresh checkout: --report-only --from the published directory takes in every file's rows and
    # the sittings that ran them (once, however often it is repeated), and publishes them back
    again = tmp_path / "again"
    for _ in range(2):
        result = runner.invoke(
            app, ["reproduce", str(folder), "--out", str(again), "--quiet", "--from", str(docs), "--report-only", "--publish", str(docs)]
        )
        assert result.exit_code == 0, result.output
    assert "run(s) ->" not in result.output
    for stem, runs, held in (("tiny-figure", 4, 1), ("tiny-table", 6, 2)):
        assert len(pd.read_parquet(docs / stem / "results.parquet")) == runs
        record = json.loads((again / stem / "reproduce.json").read_text())
        assert len(record["imported_sittings"]) == held and all(
            s["from"] == str((docs / stem).resolve()) for s in record["imported_sittings"]
        )
        assert json.loads((docs / stem / "reproduce.json").read_text()) == record
    files = (again / "report.md").read_text().split("## Files")[1]
    for stem in ("tiny-figure", "tiny-table"):
        cells = [c.strip() for c in next(line for line in files.splitlines() if f"[{stem}]" in line).split("|")]
        assert cells[8] == "–" and cells[9] != "–", cells  # nothing ran here; the sittings there are kept

    result = runner.invoke(app, ["reproduce", str(folder), "--out", str(fresh), "--only", "tiny-tabel"])
    assert isinstance(result.exception, ConfigError)
    assert "--only tiny-tabel: no such experiment file; the folder's are: tiny-figure, tiny-table" in str(result.exception)


def test_an_unknown_paper_is_one_line_listing_the_folders(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "raysteal", "reproduce", "nosuch", "--out", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no experiments folder 'nosuch'"), done.stderr
    for name in ("bahsd", "yue2021", "zhu2023"):
        assert name in lines[0]
    assert "simulate" not in lines[0]  # no experiment file to reproduce there
    assert not (tmp_path / "o").exists()


def _fake_rows(config, seeds: int = 1) -> list[dict]:
    """One results row per run of ``config``'s grid, with the columns the paper keys look at."""
    from raysteal.experiment.run import expand_runs

    rows = []
    for i, run in enumerate(expand_runs(config, seeds=seeds)):
        attack = run.spec["attack"]
        row = {
            "run_id": run.id,
            "experiment": run.experiment,
            "dataset": run.dataset.name,
            "preprocess": run.dataset.preprocess,
            "target": run.target.model,
            "target_params": "{}",
            "attack": attack["attack"],
            "clone": attack.get("clone", run.target.model),
            "seed": run.seed,
            "k": run.k,
            "defense": json.dumps(run.defense_settings),
            "budget": -1 if run.budget is None else run.budget,
            "attacker_fraction": run.split.attacker_fraction,
            "auxiliary_size": run.split.auxiliary_size,
            "item_overlap": run.split.item_overlap,
            "query_fraction": run.split.query_fraction,
            "target_training": run.split.target_training,
            "attacker_unit": run.split.attacker_unit,
            "queries": 0,
            "wall_s": 1.0,
        }
        for metric in (
            "agr@k",
            "agr@k/heldout",
            "agr@k/served",
            "agr@10",
            "agr@k/known",
            "agr@10/head",
            "agr@10/tail",
            "clone_ndcg@k",
            "target_ndcg@k",
            "target_recall@k/defended",
            "clone_recall@k",
        ):
            row[metric] = 0.1 + (i % 7) / 10
        row.update({f"hp/{key}": value for key, value in attack.items() if key not in ("attack", "k")})
        rows.append(row)
    return rows


# the cells of Zhu et al.'s tables, and the paper values no run of the file's grid has
PAPER_CELLS = {
    "table4-ml1m": 15,
    "table4-tafeng": 15,
    "table4-steam": 15,
    "table5-ml1m": 12,
    "table5-tafeng": 12,
    "table5-steam": 12,
    "table7-ml1m": 36,
    "table8-ml1m": 27,
}
NOT_RUN: dict[str, int] = {}  # paper values no run of the file's grid has (every table's cells are run)


def test_zhu2023_paper_values_fill_every_table_cell_and_render(tmp_path):
    """Every cell Zhu et al.'s tables print has its key; every key names a cell of its file's grid
    (Fig. 9's points sit at the paper's 302 queries, off the grid); the whole report renders."""
    from raysteal.cli.reproduce import load_entries
    from raysteal.report.reproduction import render_reproduction
    from raysteal.results.reproduction import experiment_files, plan, resolve_paper
    from raysteal.results.store import ResultStore
    from raysteal.results.summary import parse_paper_key, unmatched_paper_keys

    folder = resolve_paper("zhu2023", REPO / "experiments")
    files = experiment_files(folder)
    assert {p.stem for p in files} == {
        "table4-ml1m",
        "table4-tafeng",
        "table4-steam",
        "table5-ml1m",
        "table5-tafeng",
        "table5-steam",
        "table7-ml1m",
        "table8-ml1m",
        "fig2-list-length",
        "fig3-target-data",
        "fig4-aux-size",
        "fig5-item-overlap",
        "fig6-architectures",
        "fig7-8-defense",
        "fig9-query-budget",
        "protocol-ml1m",
    }
    entries = plan(load_entries(files, tmp_path / "out"))
    assert entries[-1].stem == "table8-ml1m"  # the sequential targets' hours come last
    assert {entries[0].stem, entries[1].stem} == {"table4-steam", "table5-steam"}  # the smallest dataset first
    import pandas as pd

    for entry in entries:
        frame = pd.DataFrame(_fake_rows(entry.config))
        keys = [parse_paper_key(k) for k in entry.config.paper]
        if entry.stem in PAPER_CELLS:
            assert len(keys) == PAPER_CELLS[entry.stem], entry.stem
        else:
            assert keys, f"{entry.stem}: no paper value to overlay"
        missing = unmatched_paper_keys(entry.config.paper, frame)
        if entry.stem == "fig9-query-budget":
            assert all(dict(parse_paper_key(k).conditions) == {"budget": "302"} for k in missing) and len(missing) == 9
        else:
            assert len(missing) == NOT_RUN.get(entry.stem, 0), (entry.stem, missing)
        store = ResultStore(entry.out_dir)
        for row in frame.to_dict("records"):
            store.write_row(row["run_id"], row)
    # the page, on the files whose keys name settings (the rest render like them)
    shown = [e for e in entries if e.stem in ("table4-ml1m", "table7-ml1m", "table8-ml1m", "fig6-architectures", "fig7-8-defense")]
    report = render_reproduction(tmp_path / "out", "zhu2023", shown).read_text()
    for title in ("Table 4 (ML-1M)", "Table 7 (ML-1M)", "Table 8 (ML-1M)", "Fig. 6", "Fig. 7", "Fig. 8"):
        assert f"### {title}" in report, title
    table7 = report[report.index("### Table 7") :].splitlines()
    assert "| hp/item_loss | hp/rank_loss | agr@k | paper | Δ | agr@k/heldout | floor (agr@k) |" in table7[2]
    bpr_hinge = next(line for line in table7 if line.startswith("| ml-1m | lmf | ptaq | lmf | hinge | bpr |"))
    assert "| 0.5627 |" in bpr_hinge  # Table 7's BPR+Hinge: BPR on the ranking, hinge on the recommended items
    # Table 7 and Fig. 6 have no popularity runs of their own: the files with runs in their setting give the floor
    assert report.count("Floor: popularity runs of `fig7-8-defense`, `table4-ml1m`.") == 2
    table8 = report[report.index("### Table 8") :]
    assert "| agr@k/known | paper | Δ | agr@k |" in table8 and "| 7260 | 0.2000 | 0.1390 | +0.0610 |" in table8
    fig8 = report[report.index("### Fig. 8") :].splitlines()
    assert "| target_recall@k/defended | floor (clone_recall@k) |" in fig8[4] and "paper" not in fig8[4]  # no agreement on a recall
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    # Fig. 7 twice (the served lists, the paper's reading; the true lists), then Fig. 8
    assert pngs == [
        "fig6-architectures-0-heatmap.png",
        "fig7-8-defense-0-curve.png",
        "fig7-8-defense-1-curve.png",
        "fig7-8-defense-2-curve.png",
    ]
