"""The benchmark scripts run end to end on a tiny budget and write the JSON they promise."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.realdata


def test_dfme_benchmark_writes_its_json(shared_data, tmp_path, benchmarks_on_path):
    import dfme

    from raysteal.data import load_dataset
    from raysteal.data.splits import leave_one_out
    from raysteal.training import fit, save_checkpoint, seeded_model

    log = load_dataset("ml-100k", data_dir=shared_data)
    teacher = seeded_model({"model": "sasrec", "embedding_dim": 8, "max_len": 10}, log.num_users, log.num_items, 0)
    fit(teacher, leave_one_out(log), {"epochs": 1, "batch_size": 256, "eval_users": 50}, progress=False)
    path = save_checkpoint(tmp_path / "teacher.pt", teacher)
    out, cache = tmp_path / "dfme.json", tmp_path / "synthesis.npz"
    args = [
        "--teacher",
        str(path),
        "--dataset",
        "ml-100k",
        "--data-dir",
        str(shared_data),
        "--preprocess",
        "none",
        "--sequences",
        "16",
        "--epochs",
        "2",
        "--eval-users",
        "40",
        "--threads",
        "1",
        "--json",
        str(out),
        "--synthesis-cache",
        str(cache),
    ]
    dfme.main(args)
    result = json.loads(out.read_text())
    assert result["finished"] and result["queries"] == 16 * 10 and len(result["epochs"]) == 2
    assert {"agr@10", "agr@10/head", "agr@10/tail", "epoch_seconds"} <= set(result["epochs"][0])
    assert result["popularity_floor"]["agr@10"] >= 0 and result["best_epoch"] in (1, 2)
    assert cache.exists() and not result["synthesis_reused"]

    again = dfme.main(args)  # same teacher, budget and seed: the cached sequences, the same first epoch
    assert again["synthesis_reused"] and again["synthesis_seconds"] == result["synthesis_seconds"]
    assert again["epochs"][0]["agr@10"] == result["epochs"][0]["agr@10"]
    with pytest.raises(SystemExit, match="another run"):  # another seed's sequences: refused, the cache kept
        dfme.main([*args[:-4], "--seed", "1", "--json", str(out), "--synthesis-cache", str(cache)])
    other = dfme.main([*args[:-4], "--seed", "1", "--json", str(out), "--synthesis-cache", str(tmp_path / "seed1.npz")])
    assert not other["synthesis_reused"]

    state, part = tmp_path / "student.state", tmp_path / "part.json"
    resumable = [*args[:-4], "--json", str(part), "--synthesis-cache", str(cache), "--state", str(state)]
    dfme.main([*resumable, "--epochs", "1"])  # a first sitting, cut short after one epoch
    resumed = dfme.main([*resumable, "--epochs", "2"])
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    assert [e["agr@10"] for e in resumed["epochs"]] == [e["agr@10"] for e in result["epochs"]]
    stop_early = [
        *args[:-4],
        "--json",
        str(tmp_path / "early.json"),
        "--synthesis-cache",
        str(cache),
        "--state",
        str(tmp_path / "early.state"),
        "--target-agr",
        "0",
    ]
    assert [e["epoch"] for e in dfme.main(stop_early)["epochs"]] == [1]  # reached at once: stops
    again_early = dfme.main([*stop_early, "--epochs", "3"])  # resumed after reaching it: nothing more to train
    assert [e["epoch"] for e in again_early["epochs"]] == [1] and again_early["epochs_to_target"] == 1

    with pytest.raises(SystemExit):  # --state without --json could not keep the scored epochs
        dfme.main([*args[:-4], "--state", str(state)])
    cache.write_bytes(b"not an npz")
    with pytest.raises(SystemExit, match="unreadable"):
        dfme.main(args)


def test_length_buckets_benchmark_writes_its_json(shared_data, tmp_path, benchmarks_on_path, monkeypatch):
    import length_buckets

    import raysteal.training as training

    real_preset = training.preset
    monkeypatch.setenv("RAYSTEAL_DATA", str(shared_data))
    monkeypatch.setattr(
        training,
        "preset",
        lambda name: (  # the preset is ML-1M sized: a small GRU4Rec
            {**real_preset(name)[0], "embedding_dim": 8, "hidden_size": 8},
            {**real_preset(name)[1], "batch_size": 128},
        ),
    )
    out = tmp_path / "lb.json"
    length_buckets.main(["--dataset", "ml-100k", "--models", "gru4rec", "--buckets", "4", "--epochs", "1", "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["padded_token_ratio"] < 0.9 and row["speedup"] > 0  # ML-100K histories vary from 20 to 737 items
    assert row["uniform"]["windows"] == row["bucketed"]["windows"] == 943


def test_prefix_attention_benchmark_writes_its_json(tmp_path, benchmarks_on_path):
    import prefix_attention

    import raysteal.models.narm as narm

    before = narm.prefix_additive_attention
    out = tmp_path / "pa.json"
    (row,) = prefix_attention.main(
        ["--models", "narm", "--sequences", "3", "--length", "9", "--chunks", "3", "--rounds", "1", "--json", str(out)]
    )
    assert row["prefixes"] == 27 and row["speedup"] > 0 and len(row["chunked_seconds"]) == 1
    assert json.loads(out.read_text())["results"][0]["model"] == "narm"
    assert narm.prefix_additive_attention is before  # the model's attention is put back


def test_resume_overhead_benchmark_writes_its_json(tmp_path, benchmarks_on_path):
    import resume_overhead

    import raysteal.extraction.student as student_module

    before = student_module.save_training_state
    out = tmp_path / "ro.json"
    result = resume_overhead.main(
        ["--sequences", "6", "--length", "5", "--k", "4", "--items", "30", "--epochs", "2", "--batch-size", "3", "--json", str(out)]
    )
    assert result["state_mb"] > 0 and result["data_mb"] > 0 and result["epoch_seconds"] > 0
    assert result["overhead_ratio"] > 0 and json.loads(out.read_text())["epochs"] == 2
    assert student_module.save_training_state is before  # the loop's save is put back
    import raysteal.training.trainer as trainer_module

    saver = trainer_module.save_loop_state
    target = resume_overhead.main(
        [
            "--sequences",
            "6",
            "--length",
            "5",
            "--k",
            "4",
            "--items",
            "30",
            "--epochs",
            "1",
            "--batch-size",
            "3",
            "--target-model",
            "bpr",
            "--target-dataset",
            "synthetic",
        ]
    )["target"]
    assert target["epochs"] == 1 and target["state_mb"] > 0 and target["overhead_ratio"] > 0
    assert trainer_module.save_loop_state is saver
    with pytest.raises(SystemExit):
        resume_overhead.main(["--epochs", "0"])


def test_student_prefixes_benchmark_writes_its_json(tmp_path, benchmarks_on_path):
    import student_prefixes

    out = tmp_path / "sp.json"
    result = student_prefixes.main(
        [
            "--sequences",
            "3",
            "--length",
            "9",
            "--positions",
            "4",
            "--buckets",
            "3",
            "--k",
            "5",
            "--negatives",
            "4",
            "--rounds",
            "1",
            "--json",
            str(out),
        ]
    )
    assert result["prefixes"] == 12 and result["speedup"] > 0 and len(result["grouped_seconds"]) == 1
    assert json.loads(out.read_text())["buckets"] == 3


def test_student_step_benchmark_writes_its_json(tmp_path, benchmarks_on_path):
    import student_step

    from raysteal.models import sequence_layers as layers

    before = layers.MultiHeadSelfAttention.forward, layers.TransformerEncoder.forward
    out = tmp_path / "ss.json"
    result = student_step.main(["--smoke", "--json", str(out)])
    assert json.loads(out.read_text())["setting"]["prefixes"] == 4 * 12
    checks = result["checks"]  # the previous code and today's: the same negatives, loss and gradients
    assert checks["same_negatives"]
    for mode in ("eval", "train"):
        assert abs(checks[mode]["loss_old"] - checks[mode]["loss_new"]) < 1e-6
        assert checks[mode]["max_grad_abs_diff"] <= 1e-5 * checks[mode]["max_grad_abs"]
    assert result["speedup"]["cpu"] > 0 and result["gemm"]["gflops_cpu"] > 0
    assert set(result["new"]["phases_cpu"]) == set(student_step.PHASES)
    assert result["flops"]["needed"] < result["flops"]["old_path"]
    assert (layers.MultiHeadSelfAttention.forward, layers.TransformerEncoder.forward) == before  # put back


def test_kl_chunks_benchmark_checks_both_paths_and_writes_its_json(tmp_path, benchmarks_on_path):
    import kl_chunks
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "kl.json"
    report = kl_chunks.main(["--prefixes", "300", "--items", "500", "--k", "20", "--length", "30", "--rounds", "1", "--json", str(out)])
    torch.set_num_threads(threads)
    assert report["checks"]["max_grad_abs_diff"] <= 1e-6 and report["speedup_median_of_pairs"] > 0
    assert json.loads(out.read_text())["chunked_seconds_cpu"] == report["chunked_seconds_cpu"]
    for bad in (["--rounds", "0"], ["--k", "600", "--items", "500"]):
        with pytest.raises(SystemExit):  # argparse's one-line error, nothing written
            kl_chunks.main([*bad, "--json", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_mf_step_benchmark_checks_both_paths_and_writes_its_json(tmp_path, benchmarks_on_path):
    import mf_step
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "mf.json"
    report = mf_step.main(["--users", "300", "--items", "400", "--pairs", "30000", "--rounds", "1", "--json", str(out)])
    torch.set_num_threads(threads)
    assert [r["model"] for r in report["models"]] == ["bpr", "lmf"]
    for row in report["models"]:
        assert row["checks"]["max_grad_abs_diff"] <= 1e-6 and row["speedup_median_of_pairs"] > 0
    assert json.loads(out.read_text())["models"][0]["new_seconds_cpu"] == report["models"][0]["new_seconds_cpu"]
    for bad in (["--rounds", "0"], ["--models", "sasrec"], ["--pairs", "90000", "--users", "300", "--items", "400"]):
        with pytest.raises(SystemExit):  # argparse's one-line error, nothing written
            mf_step.main([*bad, "--json", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_infonce_sample_benchmark_times_both_and_writes_its_json(tmp_path, benchmarks_on_path):
    import infonce_sample
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "infonce.json"
    report = infonce_sample.main(["--smoke", "--sample", "4", "--rounds", "1", "--json", str(out)])
    assert torch.get_num_threads() == threads
    assert set(report["step_seconds_cpu"]) == {"every_prefix", "sampled", "no_infonce"} and report["speedup_median_of_pairs"] > 0
    assert json.loads(out.read_text())["setting"]["sample"] == 4
    with pytest.raises(SystemExit):  # argparse's one-line error, nothing written
        infonce_sample.main(["--sample", "1", "--json", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_catalogue_ce_benchmark_checks_every_path_and_writes_its_json(tmp_path, benchmarks_on_path):
    import catalogue_ce
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "ce.json"
    report = catalogue_ce.main(
        ["--models", "sasrec,gru4rec", "--items", "300", "--sequences", "4", "--length", "20", "--rounds", "1", "--json", str(out)]
    )
    assert torch.get_num_threads() == threads
    for row in report["models"]:
        for peer in ("plain", "previous"):
            assert row["checks"][f"against_{peer}"]["max_grad_abs_diff"] <= 1e-6 and row[f"speedup_over_{peer}"] > 0
    assert json.loads(out.read_text())["models"][1]["model"] == "gru4rec"
    for bad in (["--rounds", "0"], ["--models", "bpr"]):
        with pytest.raises(SystemExit):  # argparse's one-line error, nothing written
            catalogue_ce.main([*bad, "--json", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_gro_step_benchmark_checks_both_paths_and_puts_the_library_back(tmp_path, benchmarks_on_path):
    import gro_step
    import torch

    import raysteal.training.gro as gro

    before, threads = (gro.all_pairs_hinge_mean, gro.in_rows), torch.get_num_threads()
    out = tmp_path / "gro.json"
    report = gro_step.main(["--models", "sasrec", "--sequences", "4", "--length", "12", "--rounds", "1", "--json", str(out)])
    assert (gro.all_pairs_hinge_mean, gro.in_rows) == before and torch.get_num_threads() == threads
    assert report["models"][0]["checks"]["max_grad_abs_diff"] <= 1e-6 and report["models"][0]["speedup_median_of_pairs"] > 0
    assert json.loads(out.read_text())["models"][0]["model"] == "sasrec"
    for bad in (["--rounds", "0"], ["--models", "narm"]):
        with pytest.raises(SystemExit):  # argparse's one-line error, nothing written
            gro_step.main([*bad, "--json", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_tie_rule_benchmark_writes_its_json(tmp_path, benchmarks_on_path):
    import tie_rule
    import torch

    import raysteal.oracle.engine as engine

    before, threads = engine.ranked_top, torch.get_num_threads()
    out = tmp_path / "tie.json"
    report = tie_rule.main(["--rounds", "1", "--request", "64", "--json", str(out)])
    assert report["same_lists_on_these_inputs"] is True and report["ratio_median"] > 0
    assert json.loads(out.read_text())["queries_per_s_ranked_top"] == report["queries_per_s_ranked_top"]
    assert engine.ranked_top is before and torch.get_num_threads() == threads  # both put back


def test_targets_benchmark_keeps_finished_models_and_resumes_the_rest(tmp_path, benchmarks_on_path, capsys):
    import targets

    out, state = tmp_path / "targets.json", tmp_path / "state"
    argv = ["--dataset", "synthetic", "--models", "bpr,lmf", "--epochs", "2", "--json", str(out), "--state-dir", str(state)]
    assert targets.main(argv + ["--set", "bpr.embedding_dim=8", "--set", "lmf.embedding_dim=8"]) == 0
    first = json.loads(out.read_text())
    assert [r["model"] for r in first] == ["bpr", "lmf"] and not list(state.glob("*"))  # states go once a model is done
    assert {"model", "dataset", "hr@10_100neg", "ndcg@10_100neg", "target_lift", "stopped_early"} <= set(first[0])
    assert first[0]["target_lift"] == pytest.approx(first[0]["ndcg@10_full"] / first[0]["popularity_ndcg@10_full"])
    assert targets.last_validation_gain([{"valid_ndcg@10": v} for v in (0.1, 0.2, 0.2, 0.19, 0.2)]) == 0.0
    assert targets.last_validation_gain([{"valid_ndcg@10": v} for v in (0.1, 0.1, 0.12, 0.11)]) == pytest.approx(0.2)
    # again, one model changed: the other is kept as it was, the changed one trained anew
    assert targets.main(argv + ["--set", "bpr.embedding_dim=8", "--set", "lmf.embedding_dim=4"]) == 0
    second = json.loads(out.read_text())
    assert second[0] == first[0] and second[1]["model_config"]["embedding_dim"] == 4
    assert "bpr: kept from" in capsys.readouterr().err


def test_targets_benchmark_shows_and_records_a_pretrained_models_parts(tmp_path, benchmarks_on_path, capsys):
    import targets

    out = tmp_path / "targets.json"
    sets = ["--set", "neumf.embedding_dim=4", "--set", "neumf.pretrain=true"]
    assert targets.main(["--dataset", "synthetic", "--models", "neumf", "--epochs", "1", "--json", str(out), "--progress", *sets]) == 0
    (row,) = json.loads(out.read_text())
    assert set(row["pretrain"]["parts"]) == {"gmf", "mlp"}  # He et al.'s two parts, each with its own validation
    assert all(part["epochs_run"] == 1 and part["best_valid_ndcg@10"] > 0 for part in row["pretrain"]["parts"].values())
    assert row["pretrain"]["fused_valid_ndcg@10"] > 0
    err = capsys.readouterr().err
    assert "pretrain gmf  epoch 1" in err and "pretrain mlp  epoch 1" in err


def test_targets_benchmark_killed_mid_run_keeps_the_rows_of_models_it_had_not_reached(tmp_path, benchmarks_on_path, monkeypatch):
    import targets

    out = tmp_path / "targets.json"
    argv = ["--dataset", "synthetic", "--models", "bpr,lmf", "--epochs", "1", "--json", str(out)]
    assert targets.main(argv + ["--set", "bpr.embedding_dim=8", "--set", "lmf.embedding_dim=8"]) == 0
    first = json.loads(out.read_text())
    real = targets.bench_model

    def killed_at_lmf(name, *args, **kwargs):
        if name == "lmf":
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.setattr(targets, "bench_model", killed_at_lmf)
    with pytest.raises(KeyboardInterrupt):  # BPR retrained (a new setting), killed before LMF
        targets.main(argv + ["--set", "bpr.embedding_dim=4", "--set", "lmf.embedding_dim=8"])
    after = json.loads(out.read_text())
    assert [r["model"] for r in after] == ["lmf", "bpr"] and after[0] == first[1]
    assert after[1]["model_config"]["embedding_dim"] == 4


def test_bahsd_step_benchmark_writes_its_json(tmp_path, benchmarks_on_path):
    import bahsd_step
    import torch

    from raysteal.models.sasrec import SASRec

    before, threads = SASRec.represent_last, torch.get_num_threads()
    out = tmp_path / "bahsd.json"
    result = bahsd_step.main(["--smoke", "--json", str(out)])
    assert json.loads(out.read_text())["setting"]["prefixes"] == result["setting"]["prefixes"] > 0
    assert len(result["setting"]["encoder_passes"]) == 3  # the prefixes, the InfoNCE views, the probe views
    for mode in ("eval", "train"):  # the previous code and today's: the same loss and draws, gradients to rounding
        checks = result["checks"][mode]
        assert checks["loss_identical"] and checks["same_draws_after"]
        assert checks["max_grad_abs_diff"] <= 1e-5 * checks["max_grad_abs"]
    assert result["speedup"]["cpu"] > 0 and result["gemm"]["gflops_cpu"] > 0
    assert result["flops"]["needed"] < result["flops"]["old_path"]
    assert SASRec.represent_last is before and torch.get_num_threads() == threads  # put back


def test_targets_benchmark_refuses_a_json_it_did_not_write_and_keeps_it(tmp_path, benchmarks_on_path):
    import targets

    out = tmp_path / "targets.json"
    out.write_text('{"not": "a list"}')
    with pytest.raises(SystemExit, match="not the JSON list this benchmark writes"):
        targets.main(["--dataset", "synthetic", "--models", "bpr", "--epochs", "1", "--json", str(out)])
    assert out.read_text() == '{"not": "a list"}'  # nothing trained, nothing overwritten


def test_reference_recommenders_choose_on_validation_and_write_their_json(tmp_path, benchmarks_on_path):
    import reference_recommenders

    out = tmp_path / "refs.json"
    common = ["--dataset", "synthetic", "--json", str(out)]
    assert reference_recommenders.main([*common, "--ease-l2", "10,100", "--knn-neighbours", "all,20"]) == 0
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["itemknn", "ease"]
    for row in rows:
        chosen = max(row["validation"], key=lambda v: v["valid_ndcg@10_full"])
        assert row["settings"] == {k: v for k, v in chosen.items() if k != "valid_ndcg@10_full"}
        assert len(row["validation"]) == 2 and row["target_lift"] == pytest.approx(row["ndcg@10_full"] / row["popularity_ndcg@10_full"])
    # a second reference run keeps the other rows of the file
    assert reference_recommenders.main([*common, "--references", "ease", "--ease-l2", "10"]) == 0
    assert [r["model"] for r in json.loads(out.read_text())] == ["itemknn", "ease"]
    for bad in (["--references", "svd"], ["--ease-l2", "x"], ["--max-items", "10"]):
        with pytest.raises(SystemExit):  # a one-line error, nothing written
            reference_recommenders.main([*bad, "--dataset", "synthetic", "--json", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_fused_clone_step_benchmark_checks_both_paths_and_writes_its_json(tmp_path, benchmarks_on_path):
    import fused_clone_step

    out = tmp_path / "fused.json"
    small = ["--users", "50", "--items", "80", "--batch", "64", "--list-users", "4", "--k", "10", "--rounds", "1"]
    report = fused_clone_step.main([*small, "--json", str(out)])
    assert json.loads(out.read_text())["models"].keys() == {"bpr", "lmf", "neumf"}
    for phases in report["models"].values():
        for phase in phases.values():  # the previous code and today's: the same loss and gradients
            assert phase["max_grad_abs_diff"] <= 1e-6 + 1e-4 * phase["max_grad_abs"]
            assert phase["speedup_median_of_pairs"] > 0


def test_targets_benchmark_records_a_refit_and_leaves_no_state(tmp_path, benchmarks_on_path, capsys):
    import targets

    out, state = tmp_path / "targets.json", tmp_path / "state"
    sets = ["--set", "bpr.embedding_dim=8", "--set", "bpr.train.refit=true"]
    argv = ["--dataset", "synthetic", "--models", "bpr", "--epochs", "2", "--json", str(out), "--state-dir", str(state), "--progress"]
    assert targets.main(argv + sets) == 0
    (row,) = json.loads(out.read_text())
    assert row["refit"]["epochs"] == row["best_epoch"] and row["train_config"]["refit"] is True
    first = row["refit"]["first_pass"]  # the model the first pass chose, scored as the row's own
    assert set(first) == {"hr@10_100neg", "ndcg@10_100neg", "hr@10_full", "ndcg@10_full"} and 0 <= first["hr@10_100neg"] <= 1
    assert not list(state.glob("*"))  # the first pass's state and the refit's both go
    assert "refit  epoch 1" in capsys.readouterr().err


def test_holdout_protocol_benchmark_scores_both_splits_every_epoch(tmp_path, benchmarks_on_path):
    import holdout_protocol

    out = tmp_path / "holdout.json"
    holdout_protocol.main(
        ["--dataset", "synthetic", "--set", "embedding_dim=4", "--set", "variant=gmf", "--epochs", "2", "--json", str(out)]
    )
    rows = json.loads(out.read_text())
    assert [(r["split"], r["epoch"]) for r in rows] == [(s, e) for s in holdout_protocol.SPLITS for e in (1, 2)]
    assert all(0 <= r["hr@10_99neg"] <= 1 and 0 <= r["ndcg@10_100neg"] <= 1 for r in rows)
    assert "valid_hr@10_100neg" in rows[0] and "valid_hr@10_100neg" not in rows[-1]
    for bad, said in ((["--set", "embedding_dim=-1"], "embedding_dim"), (["--epochs", "0"], "epochs"), (["--set", "nokey"], "KEY=VALUE")):
        with pytest.raises(SystemExit, match=said):
            holdout_protocol.main(["--dataset", "synthetic", "--json", str(out), *bad])
    assert json.loads(out.read_text()) == rows  # a refused invocation leaves the earlier file as it was
