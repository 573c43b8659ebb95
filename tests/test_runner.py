"""``raysteal run``: validation before work, an end-to-end grid on Ray, resume, the report."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import yaml

from raysteal.errors import ConfigError
from raysteal.experiment.config import load_experiment, parse_experiment
from raysteal.experiment.run import expand_runs

TINY = {
    "experiment": "tiny",
    "seeds": 2,
    "datasets": [{"name": "synthetic", "options": {"num_users": 400, "num_items": 300, "max_len": 60, "seed": 1}}],
    "targets": [{"model": "bpr", "train": {"epochs": 8, "batch_size": 512}}],
    "attacks": [
        {"attack": "popularity"},
        {"attack": "ptd", "epochs": 15, "batch_size": 256},
        {"attack": "ptq", "epochs": 15, "finetune_epochs": 15, "batch_size": 256},
    ],
    "defenses": [[], [{"type": "popular_mixing", "n": 5}]],
    "split": {"attacker_fraction": 0.3},
    "k": 20,
}


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"attacks": [{"attack": "ptx"}]}, "ptx"),
        ({"attacks": [{"attack": "ptd", "epochz": 3}]}, "epochz"),
        ({"split": {"attacker_fraction": 1.5}}, "split.attacker_fraction"),
        ({"split": {"attacker_fraction": 0}}, "split.attacker_fraction"),
        ({"sedes": 3}, "sedes"),
        ({"datasets": [{"name": "ml-2m"}]}, "ml-2m"),
        ({"targets": [{"model": "bpr", "params": {"embedding_dim": -1}}]}, "embedding_dim"),
        ({"defenses": [[{"type": "popular_mixing", "m": 3}]]}, "defenses.0"),
        ({"grid": {"atack.k": [1]}}, "atack.k"),
        ({"defenses": []}, "defenses"),  # no defense setting would make no runs
        ({"experiment": "../../escape"}, "experiment"),  # the name makes paths
        ({"datasets": [{"name": "synthetic", "options": {"num_user": 5}}]}, "datasets.0: .*num_user: unknown key"),
        ({"datasets": [{"name": "synthetic", "preprocess": "dedup"}]}, "datasets.0: .*dedup"),
        ({"targets": [{"model": "bprr"}]}, "targets.0: unknown model 'bprr'"),
        ({"grid": {"budget": [-1]}}, "grid .*budget must be"),
        ({"grid": {"k.foo": [10]}}, "k.foo"),
        ({"grid": {"split.attacker_fraction": [1.5]}}, "grid .*split.attacker_fraction"),
        ({"grid": {"target.embeding_dim": [8]}}, "grid .*embeding_dim: unknown key"),
        (
            {"datasets": [{"name": "synthetic", "options": {"seed": 1}}, {"name": "synthetic", "options": {"seed": 7}}]},
            "datasets.1 and datasets.0 .*could not be told apart",
        ),
        (
            {"targets": [{"model": "bpr", "train": {"epochs": 2}}, {"model": "bpr", "train": {"epochs": 4}}]},
            "targets.1 and targets.0 .*could not be told apart",
        ),
        ({"attacks": [{"attack": "ptd", "epochs": 1}, {"attack": "ptd", "epochs": 1}]}, "attacks.1 repeats attacks.0"),
        ({"defenses": [[], []]}, "defenses.1 repeats defenses.0"),
        ({"grid": {"budget": [10, 20, 10]}}, "grid.budget.2 repeats grid.budget.0"),
        ({"attacks": [{"attack": "dfme"}]}, "'dfme' attacks sequential targets"),  # not "unknown attack"
        ({"seeds": 100_000_000}, r"the grid makes .* runs \(100,000,000 seeds\)"),  # refused at once, not expanded
        # a defense the lists cannot hold is refused here, not after Ray started and the target trained
        (
            {"defenses": [[{"type": "popular_mixing", "n": 25}]]},
            r"defenses.0: popular mixing: n=25 is more than the 20 items .*'ptq' asks for top-20",
        ),
        (
            {"defenses": [[], [{"type": "truncate", "max_items": 4}, {"type": "popular_mixing", "n": 5}]]},
            r"defenses.1: .*n=5 is more than the 4 items a list holds after the truncation before it",
        ),
        ({"defenses": [[{"type": "popular_mixing", "n": 15, "pool": 10}]]}, r"defenses.0: .*n=15 is more than the pool of 10"),
        ({"defenses": [[{"type": "popular_mixing", "n": 150}]]}, r"defenses.0: .*n=150 is more than the pool of 100"),
        ({"defenses": [[{"type": "truncate", "max_items": datetime.date(2020, 1, 1)}]]}, r"defenses.0: .*max_items"),  # YAML date
        ({"grid": {"k": [40, 10]}, "defenses": [[{"type": "popular_mixing", "n": 15}]]}, r"n=15 is more than the 10 items .*top-10"),
    ],
)
def test_malformed_experiment_fails_before_work_naming_the_key(tmp_path, patch, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace(r"\.*", ".*")) as err:
        load_experiment(_write(tmp_path, {**TINY, **patch}))
    assert "\n" not in str(err.value)  # one line, no validation dump


def test_a_file_that_is_not_text_is_a_clear_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not a text file"):
        load_experiment(path)


def test_a_sequential_students_config_is_checked_before_any_query():
    from raysteal.extraction import make_extraction_config

    for student, problem in [
        ({"model": "sasrek"}, "unknown model 'sasrek'"),
        ({"model": "bpr"}, "not a sequential model"),
        ({"model": "sasrec", "hiden": 3}, "hiden: unknown key"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            make_extraction_config({"attack": "dfme", "budget_queries": 50, "student": student})


def test_unknown_name_errors_survive_pickling_across_ray():
    import pickle

    from raysteal.errors import UnknownNameError

    err = pickle.loads(pickle.dumps(UnknownNameError("model", "sasrek", ["sasrec"])))
    assert isinstance(err, UnknownNameError) and str(err) == "unknown model 'sasrek'; known models: sasrec"


def test_grid_expansion_counts_every_cell():
    spec = {**TINY, "grid": {"k": [10, 20], "attack.margin": [0.5, 1.0]}}
    runs = expand_runs(parse_experiment(spec))
    assert len(runs) == 1 * 1 * 3 * 2 * 4 * 2  # datasets x targets x attacks x defenses x grid x seeds
    assert {r.attack.k for r in runs} == {10, 20}  # list length follows K


def test_target_selection_keeps_the_full_grids_run_ids():
    from raysteal.experiment.config import select_targets

    spec = {**TINY, "targets": [{"model": "bpr"}, {"model": "lmf"}]}
    full = parse_experiment(spec)
    only = select_targets(full, ["lmf"])
    picked = {r.id for r in expand_runs(only)}
    assert len(picked) == len(expand_runs(full)) // 2
    assert picked == {r.id for r in expand_runs(full) if r.target.model == "lmf"}
    with pytest.raises(ConfigError, match="targets are bpr, lmf"):
        select_targets(full, ["narm"])
    with pytest.raises(ConfigError, match="targets"):
        select_targets(full, [])


def test_seed_and_attack_selection_keep_the_full_grids_run_ids():
    from raysteal.experiment.config import select_attacks

    spec = {**TINY, "seeds": 4, "attacks": [*TINY["attacks"], {"attack": "ptq", "epochs": 5, "finetune_epochs": 5}]}
    full = parse_experiment(spec)
    everything = {r.id: r for r in expand_runs(full)}
    later = parse_experiment(spec, only_seeds=[3, 1])  # raysteal run --only-seeds 3,1
    picked = {r.id for r in expand_runs(later)}
    assert picked == {i for i, r in everything.items() if r.seed in (1, 3)} and len(picked) == len(everything) // 2
    assert later.only_seeds == [1, 3]
    ptq = select_attacks(full, ["ptq"])  # both ptq entries stay
    assert {r.id for r in expand_runs(ptq)} == {i for i, r in everything.items() if r.attack_name == "ptq"}
    both = expand_runs(select_attacks(parse_experiment(spec, only_seeds=[0]), ["popularity"]))
    assert [(r.attack_name, r.seed) for r in both] == [("popularity", 0)] * 2  # x the two defense settings
    with pytest.raises(ConfigError, match=r"only_seeds \[4\] outside the experiment's seeds 0\.\.3"):
        parse_experiment(spec, only_seeds=[1, 4])
    with pytest.raises(ConfigError, match="names seed 1 twice"):
        parse_experiment(spec, only_seeds=[1, 1])
    with pytest.raises(ConfigError, match="--only-seeds"):
        parse_experiment(spec, only_seeds=[])
    with pytest.raises(ConfigError, match="attacks are popularity, ptd, ptq"):
        select_attacks(full, ["dfme"])
    with pytest.raises(ConfigError, match="grid varies attack.attack"):
        select_attacks(parse_experiment({**TINY, "grid": {"attack.attack": ["ptd", "ptq"]}}), ["ptq"])


def test_only_seeds_in_a_file_is_checked_against_the_seed_count():
    file = {**TINY, "seeds": 5, "only_seeds": [2, 4]}
    assert {r.seed for r in expand_runs(parse_experiment(file))} == {2, 4}
    with pytest.raises(ConfigError, match=r"only_seeds \[2\] outside .*seeds: 2, from the file or --seeds"):
        parse_experiment({**TINY, "only_seeds": [2]})  # TINY has 2 seeds
    with pytest.raises(ConfigError, match=r"only_seeds \[4\] outside"):
        parse_experiment(file, seeds=3)  # --seeds lowers the count under the file's selection
    lowered = parse_experiment(file, seeds=3, only_seeds=[0, 1])  # --only-seeds replaces the file's selection
    assert {r.seed for r in expand_runs(lowered)} == {0, 1}
    with pytest.raises(ConfigError, match="only_seeds"):
        parse_experiment({**TINY, "only_seeds": []})
    with pytest.raises(ConfigError, match="only_seeds"):
        parse_experiment({**TINY, "only_seeds": [True]})


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--only-seeds", "1,x", r"--only-seeds '1,x': seeds are non-negative integers.*not 'x'"),
        ("--only-seeds", "-1", r"not '-1'"),
        ("--only-seeds", "7", r"only_seeds \[7\] outside the experiment's seeds 0\.\.1"),
        ("--attacks", "ptx", r"--attacks ptx: the experiment's attacks are popularity, ptd, ptq"),
    ],
)
def test_cli_selection_options_refuse_bad_values_before_any_work(tmp_path, option, value, message):
    from typer.testing import CliRunner

    from raysteal.cli import app

    result = CliRunner().invoke(app, ["run", str(_write(tmp_path, TINY)), "--out", str(tmp_path / "out"), option, value])
    assert isinstance(result.exception, ConfigError)
    assert re.search(message, str(result.exception)), str(result.exception)
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_a_partial_invocation_hands_the_runner_its_part_and_saves_the_whole_file(tmp_path, monkeypatch):
    """--targets/--attacks/--only-seeds narrow what runs; the spec kept beside the results is the
    file's (one results directory gathers several partial invocations)."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    import raysteal.distributed.experiment_runner as runner_module
    from raysteal.cli import app

    handed = []

    class _NoRows:
        def load(self):
            return pd.DataFrame()

    monkeypatch.setattr(runner_module, "run_experiment", lambda config, out_dir, **_: handed.append(config) or _NoRows())
    spec = {**TINY, "seeds": 4, "targets": [{"model": "bpr"}, {"model": "lmf"}]}
    out = tmp_path / "out"
    file = _write(tmp_path, spec)
    result = CliRunner().invoke(
        app, ["run", str(file), "--out", str(out), "--targets", "lmf", "--attacks", "ptq,popularity", "--only-seeds", "2,3"]
    )
    assert result.exit_code == 0, result.output
    (ran,) = handed
    assert [t.model for t in ran.targets] == ["lmf"] and [a["attack"] for a in ran.attacks] == ["popularity", "ptq"]
    assert sorted({r.seed for r in expand_runs(ran)}) == [2, 3]
    saved = json.loads((out / "experiments" / "tiny.json").read_text())
    assert [t["model"] for t in saved["targets"]] == ["bpr", "lmf"] and len(saved["attacks"]) == 3
    assert saved["seeds"] == 4 and saved["only_seeds"] is None
    (record,) = [json.loads(path.read_text()) for path in (out / "invocations").glob("*.json")]
    assert record["selection"] == {"targets": "lmf", "attacks": "ptq,popularity", "only_seeds": [2, 3]}
    assert record["experiment"] == "tiny" and record["file"] == str(file)
    from raysteal.provenance import code_commit

    assert record["commit"] == code_commit()  # which checkout's code ran
    assert record["run_ids"] == [run.id for run in expand_runs(ran)] and len(record["run_ids"]) == 8  # 2 attacks x 2 defenses x 2 seeds


@pytest.mark.ray
def test_run_end_to_end_then_resume_and_report(ray_session, tmp_path):
    from typer.testing import CliRunner

    from raysteal.cli import app
    from raysteal.results import ResultStore

    exp = _write(tmp_path, TINY)
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(exp), "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert result.exit_code == 0, result.output
    frame = ResultStore(out).load()
    assert len(frame) == 3 * 2 * 2
    for col in ["experiment", "dataset", "target", "attack", "clone", "seed", "k", "agr@k", "agr@k/heldout", "agr@10", "queries", "wall_s"]:
        assert col in frame.columns, col
    from raysteal.provenance import code_commit

    assert (frame["code_commit"] == code_commit()).all()  # the workers ran this checkout's code
    by_attack = frame.groupby("attack")["agr@k"].mean()
    assert by_attack["ptd"] > 0.0 and by_attack["ptq"] > 0.0
    assert (frame[frame.attack == "popularity"]["queries"] == 0).all()
    assert (frame[frame.attack == "ptq"]["queries"] > 0).all()
    mixed = frame[frame.defense.str.contains("popular_mixing")]
    assert (mixed["target_recall@k/defended"] <= mixed["target_recall@k/all_users"] + 1e-12).all()
    logs = ResultStore(out).load_query_logs()
    assert set(frame[frame.attack == "ptq"]["run_id"]) <= set(logs["attacker"])
    assert "mean ± std" in result.output

    # resume: finished runs are skipped, nothing is recomputed
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.parquet")}
    (out / "runs" / sorted(stamps)[0]).unlink()  # as if the run had died before this one finished
    result = runner.invoke(app, ["run", str(exp), "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert result.exit_code == 0, result.output
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.parquet")}
    assert set(after) == set(stamps)
    assert sum(after[n] != stamps[n] for n in sorted(stamps)[1:]) == 0

    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report" / "report.md").is_file()

    # a report entry naming no column of the rows is said by `run` itself, after the rows landed
    misnamed = _write(tmp_path, {**TINY, "report": [{"kind": "table", "metrics": ["agr@kk"]}]})
    result = runner.invoke(app, ["run", str(misnamed), "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert isinstance(result.exception, ConfigError) and "report.0: none of the metrics ['agr@kk']" in str(result.exception)
    assert "the runs are done" in str(result.exception) and set(after) == {p.name for p in (out / "runs").glob("*.parquet")}


@pytest.mark.ray
def test_runs_past_the_concurrency_limit_wait_for_a_slot(ray_session, tmp_path):
    """A run blocked on its server (``ray.get``) hands its CPU back to Ray, so Ray alone would start
    all three PTQ runs at once on the session's 4 CPUs; with ``max_concurrent=1`` they run one after
    another (each starts after the previous one's row was measured)."""
    from raysteal.distributed.deploy import concurrency_limit
    from raysteal.distributed.experiment_runner import run_experiment

    assert concurrency_limit() == int(ray_session.cluster_resources()["CPU"])
    with pytest.raises(ConfigError, match="max_concurrent"):
        concurrency_limit(0)
    spec = {**TINY, "seeds": 3, "defenses": [[]], "attacks": [{"attack": "ptq", "epochs": 4, "finetune_epochs": 4, "batch_size": 256}]}
    store = run_experiment(parse_experiment(spec), tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=False, max_concurrent=1)
    frame = store.load().sort_values("started_at")
    assert len(frame) == 3 and (frame["queries"] > 0).all()
    finished = (frame["started_at"] + frame["wall_s"]).to_numpy()
    assert (frame["started_at"].to_numpy()[1:] >= finished[:-1]).all(), frame[["started_at", "wall_s"]]


@pytest.mark.ray
def test_the_progress_display_reports_each_target_training_epoch(ray_session, tmp_path, capsys):
    """While a target trains (before any run can start), ``raysteal run`` shows its epochs."""
    from raysteal.distributed.experiment_runner import run_experiment

    spec = {
        **TINY,
        "experiment": "tiny-progress",
        "seeds": 1,
        "attacks": [{"attack": "popularity"}],
        "defenses": [[]],
        "targets": [{"model": "bpr", "train": {"epochs": 4, "batch_size": 512, "eval_every": 2}}],
    }
    run_experiment(parse_experiment(spec), tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "training target synthetic/bpr" in line]
    assert [line.split("epoch ")[1].split()[0] for line in lines] == ["1/4", "2/4", "3/4", "4/4"], err
    assert "valid NDCG@10" in lines[1] and "valid NDCG@10" not in lines[0]
    assert "[1/1" in err  # the run itself is still counted


@pytest.mark.ray
def test_tune_and_simulate_show_the_one_target_they_prepare_training(ray_session, tmp_path, capsys):
    import ray

    from raysteal.distributed.deploy import prepare_one_target, prepare_target

    run = expand_runs(parse_experiment({**TINY, "seeds": 1, "targets": [{"model": "bpr", "train": {"epochs": 3, "batch_size": 512}}]}))[0]
    prepare = ray.remote(prepare_target).options(num_cpus=1)
    args = (run.spec["dataset"], run.spec["split"], run.spec["target"], 20, None, str(tmp_path / "cache"))
    spec, data = prepare_one_target(prepare, args, show=True)
    assert data.truth_lists.shape[1] == 20
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training target synthetic/bpr: epoch")]
    assert len(lines) == 3 and lines[-1].startswith("training target synthetic/bpr: epoch 3/3")
    prepare_one_target(prepare, args, show=True)  # cached now: nothing trains, nothing is shown
    assert "training target" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, text, problem",
    [
        ("dup.yaml", "experiment: a\nk: 10\nk: 20\n", "key 'k' given twice"),
        ("dup.json", '{"experiment": "a", "k": 1, "k": 2}', "key 'k' given twice"),
        ("empty.yaml", "", "the experiment file is empty"),
    ],
)
def test_a_key_given_twice_or_an_empty_file_is_refused(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_experiment(path)
    with pytest.raises(ConfigError, match="is a directory"):
        load_experiment(tmp_path)


@pytest.mark.ray
def test_a_run_failing_on_its_input_says_so_in_one_line(ray_session, tmp_path):
    from raysteal.distributed.experiment_runner import run_experiment
    from raysteal.errors import RaystealError

    spec = {
        **TINY,
        "experiment": "tiny-fail",
        "seeds": 1,
        "defenses": [[]],
        "attacks": [{"attack": "ptq", "k": 100000, "epochs": 1, "finetune_epochs": 1}, {"attack": "ptd", "k": 100000, "epochs": 1}],
    }
    listed = r"2 run\(s\) failed .*\n  synthetic/bpr/ptq seed 0: ConfigError: attack k=100000 is larger than the catalogue .*\n  synthetic/bpr/ptd seed 0: ConfigError"
    with pytest.raises(RaystealError, match=listed) as err:  # in the file's order, whichever failed first
        run_experiment(parse_experiment(spec), tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=False)
    assert "RayTaskError" not in str(err.value) and "Traceback" not in str(err.value)
    assert "synthetic/bpr/ptd seed 0: ConfigError: attack k=100000" in str(err.value)  # it never queries: caught before it runs


def test_failed_runs_are_listed_in_the_files_order_not_the_order_they_failed_in():
    from raysteal.distributed.experiment_runner import failures_message

    runs = expand_runs(parse_experiment({**TINY, "seeds": 1, "defenses": [[]], "attacks": [{"attack": "ptq"}, {"attack": "ptd"}]}))
    assert [r.attack_name for r in runs] == ["ptq", "ptd"]
    text = failures_message([(runs[1], "ConfigError: b"), (runs[0], "ConfigError: a")], runs)
    assert text.splitlines()[1:] == ["  synthetic/bpr/ptq seed 0: ConfigError: a", "  synthetic/bpr/ptd seed 0: ConfigError: b"]
    assert text.startswith("2 run(s) failed")


def test_a_collaborative_attack_on_a_sequential_target_names_its_twin():
    from raysteal.attacks.registry import get_recipe

    with pytest.raises(ConfigError, match="'ptq' attacks collaborative targets.*'seq_ptq'"):
        get_recipe("ptq", "sequential")
    with pytest.raises(ConfigError, match="unknown sequential attack 'nosuch'"):
        get_recipe("nosuch", "sequential")
