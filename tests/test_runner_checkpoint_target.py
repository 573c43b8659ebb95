"""An experiment target given as a trained checkpoint (``targets: [{model, checkpoint}]``)."""

from __future__ import annotations

import pytest

from raysteal.errors import ConfigError
from raysteal.experiment.config import DatasetEntry, SplitConfig, parse_experiment
from raysteal.experiment.context import prepare_dataset

DATASET = {"name": "synthetic", "options": {"num_users": 300, "num_items": 200, "max_len": 40, "seed": 5}}
SPLIT = {"attacker_fraction": 0.3}
SPEC = {
    "experiment": "ckpt-target",
    "seeds": 1,
    "datasets": [DATASET],
    "attacks": [{"attack": "popularity"}, {"attack": "ptd", "epochs": 5, "batch_size": 256}],
    "split": SPLIT,
    "k": 10,
}


def _target_log(dataset: dict = DATASET):
    return prepare_dataset(DatasetEntry(**dataset), SplitConfig(**SPLIT), None).target


def _save_trained(tmp_path, log, model: str = "bpr"):
    from raysteal.training import save_checkpoint, train_target

    target, metrics = train_target(log, {"model": model, "embedding_dim": 8}, {"epochs": 3, "batch_size": 512})
    path = tmp_path / f"{model}.pt"
    save_checkpoint(path, target, fingerprint=log.fingerprint(), metrics=metrics)
    return path, metrics


def test_checkpoint_target_is_validated_before_work(tmp_path):
    path, _ = _save_trained(tmp_path, _target_log())
    with pytest.raises(ConfigError, match=r"targets\.0: checkpoint: .*does not exist"):
        parse_experiment({**SPEC, "targets": [{"model": "bpr", "checkpoint": str(tmp_path / "nope.pt")}]})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"targets\.0: checkpoint: .*is not a raysteal checkpoint"):
        parse_experiment({**SPEC, "targets": [{"model": "bpr", "checkpoint": str(tmp_path / "junk.pt")}]})
    with pytest.raises(ConfigError, match=r"targets\.0: checkpoint: .*is a directory"):
        parse_experiment({**SPEC, "targets": [{"model": "bpr", "checkpoint": str(tmp_path)}]})
    with pytest.raises(ConfigError, match="holds a 'bpr' model, not 'lmf'"):
        parse_experiment({**SPEC, "targets": [{"model": "lmf", "checkpoint": str(path)}]})
    with pytest.raises(ConfigError, match="drop params/train"):
        parse_experiment({**SPEC, "targets": [{"model": "bpr", "checkpoint": str(path), "train": {"epochs": 2}}]})


def test_relative_checkpoint_path_is_pinned(tmp_path, monkeypatch):
    path, _ = _save_trained(tmp_path, _target_log())
    monkeypatch.chdir(tmp_path)
    config = parse_experiment({**SPEC, "targets": [{"model": "bpr", "checkpoint": path.name}]})
    assert config.targets[0].checkpoint == str(path.resolve())


def test_checkpoint_from_another_log_is_refused(tmp_path):
    from raysteal.training import load_trained_target

    path, _ = _save_trained(tmp_path, _target_log())
    other = _target_log({**DATASET, "options": {**DATASET["options"], "seed": 6}})
    with pytest.raises(ConfigError, match="trained on another log"):
        load_trained_target(path, other)


@pytest.mark.ray
def test_run_serves_the_checkpoint_target(ray_session, tmp_path):
    from raysteal.distributed.experiment_runner import run_experiment

    path, metrics = _save_trained(tmp_path, _target_log())
    config = parse_experiment({**SPEC, "targets": [{"model": "bpr", "checkpoint": str(path)}]})
    cache = tmp_path / "cache"
    frame = run_experiment(config, tmp_path / "out", cache_dir=str(cache), progress=False).load()
    assert set(frame["attack"]) == {"popularity", "ptd"}
    # the saved target was served as is: its own test figures, and nothing trained into the cache
    assert frame["target_test_ndcg@10_full"].tolist() == [metrics["test"]["ndcg@10_full"]] * 2
    assert not cache.exists() or not any(cache.iterdir())
