"""Refit on the validation items for the epochs validation chose (TrainConfig.refit; issue 25's
NeuMF anchor: He et al. 2017 hold out only the test item)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysteal.data import load_dataset
from raysteal.data.splits import NO_ITEM, whole_log, with_validation_items
from raysteal.errors import ConfigError
from raysteal.training import fit, make_split, make_train_config, seeded_model
from raysteal.training.refit import refit_state_path


@pytest.fixture(scope="module")
def split():
    return make_split(load_dataset("synthetic", num_users=120, num_items=80, max_len=20, seed=3))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_the_validation_items_join_training_after_each_users_rows(split):
    valid_before, rows_before = split.valid.copy(), split.train.num_interactions
    merged = with_validation_items(split)
    held = split.valid != NO_ITEM
    assert (merged.valid == NO_ITEM).all() and np.array_equal(merged.test, split.test)
    assert merged.train.num_interactions == split.train.num_interactions + int(held.sum())
    for user in np.flatnonzero(held)[:20]:
        assert list(merged.train.sequence(user)) == [*split.train.sequence(user), split.valid[user]]
    assert np.array_equal(split.valid, valid_before) and split.train.num_interactions == rows_before  # the input is left as it was


def test_a_split_that_trains_on_its_held_out_items_has_nothing_to_add():
    log = load_dataset("synthetic", num_users=50, num_items=40, max_len=12, seed=1)
    with pytest.raises(ConfigError, match="already trains on its held-out items"):
        with_validation_items(whole_log(log))


def test_a_refit_trains_from_the_same_start_on_the_validation_items_for_the_chosen_epochs(split):
    cfg = {"model": "bpr", "embedding_dim": 8}
    tcfg = make_train_config(epochs=6, batch_size=128, lr=5e-2, patience=2)
    plain = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    first = fit(plain, split, tcfg, seed=0, device="cpu", progress=False)
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    result = fit(model, split, make_train_config(tcfg, refit=True), seed=0, device="cpu", progress=False)
    assert result.best_epoch == first.best_epoch >= 1  # the first pass is the plain training, choice and all
    assert result.refit["epochs"] == first.best_epoch and result.refit["part_epochs"] == {}
    assert result.summary()["refit"] == result.refit and result.train_seconds >= result.refit["train_seconds"] > 0
    again = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    fit(
        again,
        with_validation_items(split),
        make_train_config(tcfg, epochs=first.best_epoch, early_stopping=False),
        seed=0,
        device="cpu",
        progress=False,
    )
    _same_weights(model, again)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))


def test_a_pretrained_neumf_refits_each_part_for_its_own_chosen_epochs(split, tmp_path):
    from raysteal.training.pretrain import pretrain

    cfg = {"model": "neumf", "embedding_dim": 4, "pretrain": True, "pretrain_epochs": 3, "pretrain_lr": 1e-2}
    tcfg = make_train_config(epochs=1, batch_size=256, lr=10.0, refit=True)  # training on spoils the fused start: 0 epochs
    seen: list[dict] = []
    state = tmp_path / "t.training-state"
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    result = fit(model, split, tcfg, seed=0, device="cpu", progress=False, state_path=state, on_epoch=seen.append)
    chosen = {name: part["best_epoch"] for name, part in result.pretrain["parts"].items()}
    assert result.best_epoch == 0 and result.refit["epochs"] == 0 and result.refit["part_epochs"] == chosen
    phases = [log.get("phase") for log in seen]
    first_pass = ["pretrain gmf"] * 3 + ["pretrain mlp"] * 3 + [None]
    assert phases == first_pass + ["chosen"] + ["refit pretrain gmf"] * chosen["gmf"] + ["refit pretrain mlp"] * chosen["mlp"]
    assert not list(tmp_path.glob("*.refit*"))  # the refit's part states go once it is done
    fused = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    pretrain(fused, with_validation_items(split), tcfg, seed=0, device=torch.device("cpu"), part_epochs=chosen)
    _same_weights(model, fused)
    assert refit_state_path(state) == tmp_path / "t.training-state.refit"


def test_a_refit_killed_mid_way_goes_on_from_its_own_state(split, tmp_path):
    cfg = {"model": "bpr", "embedding_dim": 8}
    tcfg = make_train_config(epochs=6, batch_size=128, lr=5e-2, patience=2, refit=True)
    whole = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    expected = fit(whole, split, tcfg, seed=0, device="cpu", progress=False)
    assert expected.refit["epochs"] >= 2

    class Killed(Exception):
        pass

    def kill_in_the_refit(log: dict) -> None:
        if log.get("phase") == "refit" and log["epoch"] == 2:
            raise Killed

    state = tmp_path / "t.training-state"
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    with pytest.raises(Killed):
        fit(model, split, tcfg, seed=0, device="cpu", progress=False, state_path=state, on_epoch=kill_in_the_refit)
    assert refit_state_path(state).exists()
    seen: list[dict] = []
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    result = fit(model, split, tcfg, seed=0, device="cpu", progress=False, state_path=state, on_epoch=seen.append)
    assert [log["epoch"] for log in seen if log.get("phase") == "refit"] == list(range(3, expected.refit["epochs"] + 1))
    assert result.refit["epochs"] == expected.refit["epochs"] and not refit_state_path(state).exists()
    _same_weights(model, whole)


def test_a_refit_trains_with_the_first_passs_objective(split):
    """A defended target (GRO trains with its own objective) is refit under that objective too."""
    calls = {"n": 0}

    def counting(model, batch):
        calls["n"] += 1
        return model.loss(batch)

    cfg = {"model": "bpr", "embedding_dim": 8}
    tcfg = make_train_config(epochs=2, batch_size=128, lr=5e-2, early_stopping=False)
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    fit(model, split, tcfg, seed=0, device="cpu", progress=False, objective=counting)
    first_pass = calls["n"]
    calls["n"] = 0
    model = seeded_model(cfg, split.train.num_users, split.train.num_items, seed=0)
    result = fit(model, split, make_train_config(tcfg, refit=True), seed=0, device="cpu", progress=False, objective=counting)
    assert result.refit["epochs"] == 2 and calls["n"] > first_pass  # both passes called it


def test_a_runs_progress_lines_name_the_refit_and_the_choice_before_it():
    from raysteal.distributed.progress import target_epoch_message

    chosen = target_epoch_message({"target": "ml-1m/neumf", "phase": "chosen", "epoch": 4, "best_valid_ndcg@10": 0.04})
    assert chosen == "training target ml-1m/neumf (chosen): epoch 4, valid NDCG@10 0.0400"
    refit = target_epoch_message({"target": "ml-1m/neumf", "phase": "refit", "epoch": 2, "epochs": 4, "loss": 0.25})
    assert refit == "training target ml-1m/neumf (refit): epoch 2/4 loss 0.2500"
    assert target_epoch_message({"target": "t", "epoch": 1, "epochs": 2, "loss": 0.5}) == "training target t: epoch 1/2 loss 0.5000"
