"""NeuMF as He et al. built it (issue 25, item 3): GMF and MLP pre-trained, then fused (§3.4.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysteal.data import load_dataset
from raysteal.errors import ConfigError
from raysteal.models import build_model, make_config
from raysteal.training import fit, make_split, make_train_config, preset, seeded_model
from raysteal.training.pretrain import part_state_path


@pytest.fixture(scope="module")
def split():
    return make_split(load_dataset("synthetic", num_users=120, num_items=80, max_len=20, seed=3))


def _pairs(model, users):
    items = torch.arange(model.num_items)[None, :].expand(len(users), -1)
    return model._logits(users[:, None].expand_as(items), items)


@pytest.mark.parametrize("variant", ["neumf", "gmf", "mlp"])
def test_full_scoring_matches_the_pairwise_logits_for_every_variant(variant):
    torch.manual_seed(0)
    model = build_model({"model": "neumf", "embedding_dim": 4, "variant": variant, "init_std": 0.5}, 7, 30).eval()
    users = torch.arange(7)
    assert torch.allclose(model.score(users), _pairs(model, users), atol=1e-5)
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert ({"user_gmf", "item_gmf"} <= names) == (variant != "mlp")
    assert ({"user_mlp", "item_mlp", "tower"} <= names) == (variant != "gmf")


def test_the_fused_model_starts_as_the_alpha_mix_of_gmf_and_mlp():
    torch.manual_seed(1)
    cfg = {"model": "neumf", "embedding_dim": 4, "init_std": 0.5, "pretrain": True, "pretrain_alpha": 0.3}
    neumf = build_model(cfg, 6, 25)
    parts = {name: build_model(part, 6, 25) for name, part in neumf.pretraining().items()}
    assert {p.config.variant for p in parts.values()} == {"gmf", "mlp"} and not any(p.config.pretrain for p in parts.values())
    neumf.fuse_pretrained(parts)
    users = torch.arange(6)
    with torch.no_grad():
        mixed = 0.3 * parts["gmf"].score(users) + 0.7 * parts["mlp"].score(users)
        assert torch.allclose(neumf.score(users), mixed, atol=1e-5)
    assert build_model({"model": "neumf"}, 3, 5).pretraining() == {}


def test_pretrain_settings_are_validated():
    with pytest.raises(ConfigError, match="variant"):
        make_config({"model": "neumf", "pretrain": True, "variant": "gmf"})
    with pytest.raises(ConfigError, match="pretrain_alpha"):
        make_config({"model": "neumf", "pretrain_alpha": 1.0})
    with pytest.raises(ConfigError, match="variant"):
        make_config({"model": "neumf", "variant": "deep"})


def test_fit_pretrains_both_parts_then_trains_the_fused_model_deterministically(split, tmp_path):
    cfg = {"model": "neumf", "embedding_dim": 4, "pretrain": True, "pretrain_epochs": 2, "pretrain_lr": 1e-2}
    tcfg = make_train_config(epochs=2, batch_size=256, lr=1e-3)
    seen = []
    state = tmp_path / "t.training-state"
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    result = fit(model, split, tcfg, seed=0, device="cpu", progress=False, state_path=state, on_epoch=seen.append)
    assert set(result.pretrain["parts"]) == {"gmf", "mlp"} and result.pretrain["fused_valid_ndcg@10"] > 0
    assert all(part["epochs_run"] == 2 for part in result.pretrain["parts"].values())  # pretrain_epochs, not the train config's
    assert [log.get("phase") for log in seen] == ["pretrain gmf"] * 2 + ["pretrain mlp"] * 2 + [None] * 2
    assert result.summary()["pretrain"] == result.pretrain and result.train_seconds >= result.pretrain_seconds > 0
    assert not part_state_path(state, "gmf").exists() and not part_state_path(state, "mlp").exists()
    again = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    fit(again, split, tcfg, seed=0, device="cpu", progress=False)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    # resumed from the model's own saved state: the parts are not trained again
    resumed = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    result = fit(resumed, split, tcfg, seed=0, device="cpu", progress=False, state_path=state, on_epoch=seen.append)
    assert result.resumed_epoch == 2 and set(result.pretrain["parts"]) == {"gmf", "mlp"} and len(seen) == 6
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_killed_pretraining_goes_on_from_the_parts_saved_state(split, tmp_path):
    """A part's state is kept beside the target's (``<state>.pretrain-<name>``) until the target is done."""
    from raysteal.training.pretrain import pretrain

    cfg = {"model": "neumf", "embedding_dim": 4, "pretrain": True, "pretrain_epochs": 2}
    tcfg = make_train_config(epochs=1, batch_size=256)
    state = tmp_path / "t.training-state"
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    first = pretrain(model, split, tcfg, seed=0, device=torch.device("cpu"), state_path=state)
    assert part_state_path(state, "gmf").exists() and part_state_path(state, "mlp").exists()
    fused = {k: v.clone() for k, v in model.state_dict().items()}
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    second = pretrain(model, split, tcfg, seed=0, device=torch.device("cpu"), state_path=state)  # both parts found done
    assert second["parts"]["gmf"]["best_epoch"] == first["parts"]["gmf"]["best_epoch"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, fused[name]), name


def test_the_pretrain_fields_leave_cached_targets_keys_alone():
    """A default NeuMF config hashes as before the fields existed (its cached target still answers)."""
    from raysteal.training.target_cache import without_added_fields

    dumped = make_config({"model": "neumf", "embedding_dim": 16}).model_dump(mode="json")
    new = {"variant", "pretrain", "pretrain_alpha", "pretrain_epochs", "pretrain_lr", "negative_candidates"}
    assert new <= set(dumped)
    assert without_added_fields(dumped) == {k: v for k, v in dumped.items() if k not in new}
    assert "pretrain" in without_added_fields(make_config({"model": "neumf", "pretrain": True}).model_dump(mode="json"))


def test_the_pretrained_preset_is_an_option_experiment_files_can_use():
    from raysteal.experiment.config import parse_experiment
    from raysteal.experiment.context import target_config
    from raysteal.training.presets import NEUMF_PRETRAINED, NEUMF_PRETRAINED_TRAIN

    model_cfg, train_cfg = preset("neumf")
    assert "pretrain" not in model_cfg  # the default preset is unchanged
    spec = parse_experiment(
        {
            "experiment": "n",
            "seeds": 1,
            "datasets": [{"name": "synthetic"}],
            "targets": [{"model": "neumf", "params": dict(NEUMF_PRETRAINED), "train": dict(NEUMF_PRETRAINED_TRAIN)}],
            "attacks": [{"attack": "popularity"}],
            "k": 10,
        }
    )
    model_cfg, train_cfg = target_config(spec.targets[0])
    train = make_train_config(train_cfg)
    assert train.refit  # refit on the validation items, as He et al. train on all but the test item
    assert train.lr == 5e-3  # the settings the committed ML-1M row was measured with, not the preset's
    cfg = make_config(model_cfg)
    assert cfg.pretrain and cfg.embedding_dim == 64 and cfg.pretrain_alpha == 0.5
    assert cfg.negative_candidates == 1  # He et al.'s uniform negatives
    assert np.isclose(cfg.pretrain_alpha, 0.5)


def test_sgd_fine_tuning_keeps_adam_for_the_parts_and_needs_their_own_lr(split):
    """He et al. fine-tune the fused NeuMF with vanilla SGD; GMF and MLP are trained with Adam."""
    from raysteal.training.trainer import make_optimizer

    sgd = make_train_config(optimizer="sgd", lr=0.5)
    assert isinstance(make_optimizer([torch.nn.Parameter(torch.zeros(2))], sgd), torch.optim.SGD)
    assert isinstance(make_optimizer([torch.nn.Parameter(torch.zeros(2))], make_train_config()), torch.optim.AdamW)
    model = build_model({"model": "neumf", "embedding_dim": 4, "pretrain": True}, 3, 5)
    with pytest.raises(ConfigError, match="pretrain_lr"):
        model.pretraining_settings(sgd)
    model = build_model({"model": "neumf", "embedding_dim": 4, "pretrain": True, "pretrain_lr": 5e-3}, 3, 5)
    assert model.pretraining_settings(sgd) == {"optimizer": "adamw", "lr": 5e-3}
    result = fit(
        seeded_model(
            {"model": "neumf", "embedding_dim": 4, "pretrain": True, "pretrain_lr": 5e-3, "pretrain_epochs": 1},
            split.train.num_users,
            split.train.num_items,
            0,
        ),
        split,
        make_train_config(optimizer="sgd", lr=0.5, epochs=1, batch_size=256),
        seed=0,
        device="cpu",
        progress=False,
    )
    assert set(result.pretrain["parts"]) == {"gmf", "mlp"}


def test_a_training_state_key_ignores_the_new_settings_at_their_defaults(split):
    """A training started before ``optimizer`` / the NeuMF pre-training fields / ``reference_steps_per_epoch``
    / ``refit`` existed still resumes."""
    import json

    from raysteal.training.trainer import _state_key

    model = seeded_model({"model": "neumf", "embedding_dim": 4}, split.train.num_users, split.train.num_items, 0)
    config = make_train_config(epochs=3)
    new = {"variant", "pretrain", "pretrain_alpha", "pretrain_epochs", "pretrain_lr", "negative_candidates"}
    spec = model.spec()
    spec["config"] = {k: v for k, v in spec["config"].items() if k not in new}
    log = split.train
    before = (
        f"seed=0 model={json.dumps(spec, sort_keys=True, default=str)} train={config.model_dump_json(exclude={'optimizer', 'reference_steps_per_epoch', 'refit'})} "
        f"users={log.num_users} items={log.num_items} interactions={log.num_interactions} steps=2 device=cpu amp=False"
    )
    assert _state_key(model, split, config, 0, torch.device("cpu"), False, 2) == before
    assert _state_key(model, split, make_train_config(epochs=3, optimizer="sgd"), 0, torch.device("cpu"), False, 2) != before


def test_the_fused_start_is_epoch_0_of_early_stopping(split):
    """Training on must beat the fused GMF + MLP on validation, or the fused model is returned."""
    from raysteal.training.evaluate import validation_ndcg
    from raysteal.training.pretrain import pretrain

    cfg = {"model": "neumf", "embedding_dim": 4, "pretrain": True, "pretrain_epochs": 2, "pretrain_lr": 1e-2}
    tcfg = make_train_config(epochs=1, batch_size=256, lr=10.0)  # a step this large only spoils the fused start
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    result = fit(model, split, tcfg, seed=0, device="cpu", progress=False)
    fused = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    pretrain(fused, split, tcfg, seed=0, device=torch.device("cpu"))
    assert result.pretrain["fused_valid_ndcg@10"] == pytest.approx(validation_ndcg(fused, split))
    assert result.history[0]["valid_ndcg@10"] < result.pretrain["fused_valid_ndcg@10"]
    assert result.best_epoch == 0 and result.best_valid_ndcg == result.pretrain["fused_valid_ndcg@10"]
    for (name, a), (_, b) in zip(model.state_dict().items(), fused.state_dict().items()):
        assert torch.equal(a, b), name  # the fused weights come back


def test_the_committed_ml1m_row_was_trained_with_the_pretrained_option():
    """The Targets page's ML-1M NeuMF row is what ``NEUMF_PRETRAINED`` trains today (a preset change
    that leaves the option behind fails here, not silently on the page)."""
    import json
    from pathlib import Path

    from model_fixtures import trained_with

    from raysteal.training.presets import NEUMF_PRETRAINED, NEUMF_PRETRAINED_TRAIN

    rows = json.loads((Path(__file__).resolve().parents[1] / "docs/results/targets/ml-1m.json").read_text())
    (row,) = [r for r in rows if r["model"] == "neumf" and r.get("label") == "he-f64-pretrained-refit"]
    assert trained_with(row, NEUMF_PRETRAINED, NEUMF_PRETRAINED_TRAIN)
    assert not trained_with(row)  # the default preset (DNS, lr 1e-3) is not what trained it
