"""Checkpoints round-trip bit for bit, models pickle, the target cache trains once, and the CLI."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import raysteal.training.target_cache as target_cache
from raysteal.cli import app
from raysteal.data.splits import leave_one_out
from raysteal.errors import DataFileError
from raysteal.models import make_config, model_names
from raysteal.training import fit, get_or_train_target, load_checkpoint, make_train_config, save_checkpoint, seeded_model
from raysteal.training.evaluate import model_inputs
from tests.model_fixtures import small_config as _small_config
from tests.model_fixtures import toy_log


def small_config(name: str) -> dict:
    return _small_config(name, embedding_dim=8, max_len=10)


@pytest.fixture(scope="module")
def log():
    return toy_log()


@pytest.fixture(scope="module")
def trained(log):
    """Every registered model, trained for one short epoch (so weights differ from init)."""
    split = leave_one_out(log)
    models = {}
    for name in model_names():
        model = seeded_model(small_config(name), log.num_users, log.num_items, seed=1)
        fit(model, split, {"epochs": 1, "batch_size": 64, "lr": 1e-2}, seed=1, progress=False)
        models[name] = model.eval()
    return split, models


def _scores(model, split):
    with torch.no_grad():
        return model.score(model_inputs(model, split, np.arange(8), "test"))


@pytest.mark.parametrize("name", model_names())
def test_checkpoint_round_trips_bit_for_bit(name, trained, log, tmp_path):
    split, models = trained
    model = models[name]
    path = save_checkpoint(
        tmp_path / "ckpt" / "m.pt", model, fingerprint=log.fingerprint(), metrics={"ndcg@10_full": 0.5}, extra={"note": "x"}
    )
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left behind
    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    assert meta["fingerprint"] == log.fingerprint()
    assert meta["metrics"] == {"ndcg@10_full": 0.5} and meta["extra"] == {"note": "x"}
    assert meta["spec"] == model.spec()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(_scores(loaded, split), _scores(model, split))


@pytest.mark.parametrize("name", model_names())
def test_models_pickle(name, trained):
    split, models = trained
    model = models[name]
    again = pickle.loads(pickle.dumps(model))
    assert again.config == model.config and again.spec() == model.spec()
    assert torch.equal(_scores(again, split), _scores(model, split))


def test_bad_checkpoints_name_the_file(tmp_path):
    with pytest.raises(DataFileError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataFileError, match="junk.pt"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(DataFileError, match="foreign.pt"):
        load_checkpoint(foreign)


def test_target_cache_trains_once_per_key(log, tmp_path, monkeypatch):
    calls = []
    real_fit = target_cache.fit
    monkeypatch.setattr(target_cache, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    train = {"epochs": 1, "batch_size": 64}
    first, meta1 = get_or_train_target(log, {"model": "bpr", "embedding_dim": 8}, train, seed=0, cache_dir=tmp_path, progress=False)
    second, meta2 = get_or_train_target(log, {"model": "bpr", "embedding_dim": 8}, train, seed=0, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and not meta1["cache_hit"] and meta2["cache_hit"]
    assert meta1["path"] == meta2["path"]
    assert meta2["fingerprint"] == log.fingerprint()
    assert set(meta2["metrics"]) == {"train", "valid", "test"}
    assert "ndcg@10_100neg" in meta2["metrics"]["test"]
    users = torch.arange(5)
    assert torch.equal(first.score(users), second.score(users))
    _, meta3 = get_or_train_target(log, {"model": "bpr", "embedding_dim": 8}, train, seed=1, cache_dir=tmp_path, progress=False)
    _, meta4 = get_or_train_target(
        log, {"model": "bpr", "embedding_dim": 8}, {**train, "lr": 0.01}, seed=0, cache_dir=tmp_path, progress=False
    )
    assert len(calls) == 3 and len({meta1["path"], meta3["path"], meta4["path"]}) == 3


def _key_before(log, model_cfg, train_cfg, model_added: tuple[str, ...], train_added: tuple[str, ...]) -> str:
    """The key a target had before the fields ``model_added`` / ``train_added`` existed."""
    old_spec = {
        "dataset": "walks",
        "preprocess": "none",
        "fingerprint": log.fingerprint(),
        "split": "leave_one_out",
        "seed": 0,
        "model": {k: v for k, v in model_cfg.model_dump(mode="json").items() if k not in model_added},
        "train": {k: v for k, v in train_cfg.model_dump(mode="json").items() if k not in train_added},
    }
    return hashlib.sha256(json.dumps(old_spec, sort_keys=True).encode()).hexdigest()


def test_target_key_ignores_fields_added_at_their_defaults(log):
    """A target cached before ``length_buckets`` / ``max_seconds`` / ``optimizer`` / ``min_steps`` / ``min_delta`` /
    ``reference_steps_per_epoch`` / ``refit`` existed keeps its key."""
    model_cfg = make_config({"model": "sasrec", "embedding_dim": 8})
    train_cfg = make_train_config({"epochs": 1})
    old_key = _key_before(
        log,
        model_cfg,
        train_cfg,
        ("length_buckets",),
        ("max_seconds", "optimizer", "min_steps", "min_delta", "reference_steps_per_epoch", "refit"),
    )
    key = target_cache.target_key(log, model_cfg, train_cfg, seed=0, split="leave_one_out", dataset="walks", preprocess="none")
    assert key == old_key
    bucketed = make_config({"model": "sasrec", "embedding_dim": 8, "length_buckets": 4})
    boxed = make_train_config({"epochs": 1, "max_seconds": 60})
    keys = {
        target_cache.target_key(log, m, t, seed=0, split="leave_one_out", dataset="walks", preprocess="none")
        for m, t in [(bucketed, train_cfg), (model_cfg, boxed)]
    }
    assert old_key not in keys and len(keys) == 2  # set away from the default, they do count


def test_cli_lists_models():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in model_names():
        assert name in result.output
    as_json = CliRunner().invoke(app, ["models", "--json"])
    assert json.loads(as_json.output) == model_names()


def test_cli_train_target_writes_checkpoint_and_uses_the_cache(tmp_path):
    args = [
        "train-target",
        "--dataset",
        "synthetic",
        "--model",
        "bpr",
        "--out",
        str(tmp_path / "out"),
        "--epochs",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--set",
        "embedding_dim=8",
        "--set",
        "train.batch_size=4096",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "trained in" in first.output
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["model"] == "bpr" and report["spec"]["config"]["embedding_dim"] == 8
    assert 0.0 <= report["test"]["ndcg@10_100neg"] <= 1.0
    model, meta = load_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert meta["fingerprint"] == report["fingerprint"]
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "from cache" in second.output
    # an experiment on the whole log with the same settings takes this target from the cache
    from raysteal.distributed.deploy import prepare_target

    cached = sorted((tmp_path / "cache").rglob("*.pt"))
    prepare_target(
        {"name": "synthetic"},
        {"aux_fraction": 0.0},
        {"model": "bpr", "params": {"embedding_dim": 8}, "train": {"epochs": 1, "batch_size": 4096}},
        10,
        None,
        str(tmp_path / "cache"),
    )
    assert sorted((tmp_path / "cache").rglob("*.pt")) == cached  # nothing trained again


def test_a_narm_target_cached_before_the_yue_options_keeps_its_key(log):
    """attention_activation / attention_softmax / init_std at their defaults leave a NARM target's
    key as it was before they existed; set, they count."""
    model_cfg = make_config({"model": "narm", "embedding_dim": 8})
    train_cfg = make_train_config({"epochs": 1})
    train_fields_added = tuple(k for k in train_cfg.model_dump(mode="json") if k in target_cache._ADDED_FIELDS)
    old_key = _key_before(
        log, model_cfg, train_cfg, ("attention_activation", "attention_softmax", "init_std", "length_buckets"), train_fields_added
    )
    key = target_cache.target_key(log, model_cfg, train_cfg, seed=0, split="leave_one_out", dataset="walks", preprocess="none")
    assert key == old_key
    softmax = make_config({"model": "narm", "embedding_dim": 8, "attention_softmax": True})
    assert target_cache.target_key(log, softmax, train_cfg, seed=0, split="leave_one_out", dataset="walks", preprocess="none") != old_key
