"""Every attack recipe end to end against an in-process black box on synthetic data: it runs, beats
a random clone's agreement, spends exactly the queries it should, respects the budget; bad configs
and missing knowledge fail early, naming the key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysteal.attacks import (
    AttackConfig,
    Knowledge,
    attack_names,
    make_attack_config,
    run_attack,
    top_k_lists,
    train_auxiliary_model,
)
from raysteal.attacks.clones import clone_model_config, plain_clone
from raysteal.data import attacker_users, leave_one_out, load_dataset, split_target_auxiliary
from raysteal.errors import ConfigError
from raysteal.metrics import agreement_at_k
from raysteal.oracle import QueryBudgetExceeded, TargetSpec, in_process_oracle
from raysteal.training import fit, seeded_model

K = 20
FAST = {"k": K, "lr": 1e-2, "embedding_dim": 16, "batch_size": 512, "epochs": 20, "aux_epochs": 10, "finetune_epochs": 10}


@pytest.fixture(scope="module")
def world():
    """A trained BPR target on the target half of a synthetic log, its black box, the attacker's
    knowledge (30% of the target users, 80% of them queryable) and the target's true lists."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread beats two contended ones
    log = load_dataset("synthetic", num_users=700, num_items=200, seed=0)
    split = split_target_auxiliary(log, seed=0)
    loo = leave_one_out(split.target)
    target = seeded_model({"model": "bpr", "embedding_dim": 16}, loo.train.num_users, loo.train.num_items, 0)
    fit(target, loo, {"epochs": 25, "lr": 1e-2, "early_stopping": False, "eval_every": 25}, seed=0, device="cpu", progress=False)
    oracle = in_process_oracle(TargetSpec.from_training_log(target, loo.train), device="cpu")
    known = attacker_users(loo.train, 0.3, seed=0)
    knowledge = Knowledge.from_split(loo.train, known, split.auxiliary, query_fraction=0.8, seed=0)
    truth = top_k_lists(target, known, K, loo.train, device="cpu")
    yield {"oracle": oracle, "knowledge": knowledge, "truth": truth, "num_items": log.num_items}
    torch.set_num_threads(threads)


def _agr10(world, clone) -> np.ndarray:
    kn = world["knowledge"]
    lists = top_k_lists(clone, np.arange(kn.num_users), K, kn.target_data, device="cpu")
    return agreement_at_k(world["truth"][:, :10], lists[:, :10])


@pytest.fixture(scope="module")
def random_agreement(world):
    kn = world["knowledge"]
    clone = plain_clone(clone_model_config("bpr", 16), kn.num_users, world["num_items"], seed=5)
    return float(np.nanmean(_agr10(world, clone)))


@pytest.mark.parametrize("attack", ["ptd", "pta", "pta_pre", "ptq", "ptaq", "ptaq_pre", "qsd", "aux_frozen", "popularity"])
def test_each_recipe_beats_a_random_clone(world, random_agreement, attack):
    kn = world["knowledge"]
    client = world["oracle"].register_attacker(f"recipe-{attack}")
    out = run_attack({"attack": attack, **FAST}, kn, client, seed=0, device="cpu")
    agr = _agr10(world, out.clone)
    on = agr[kn.queryable()]  # QSD only knows the users it queried
    assert float(np.nanmean(on)) > random_agreement + 0.15, (attack, float(np.nanmean(on)), random_agreement)
    uses_queries = attack in {"ptq", "ptaq", "ptaq_pre", "qsd"}
    assert out.queries == (len(kn.queryable()) if uses_queries else 0) == client.spent
    assert out.clone.score(torch.arange(kn.num_users)).shape == (kn.num_users, world["num_items"])
    assert out.info["attack"] == attack and out.info["train_seconds"] > 0


@pytest.mark.parametrize("clone", ["lmf", "neumf"])
def test_cross_architecture_ptaq(world, random_agreement, clone):
    kn = world["knowledge"]
    client = world["oracle"].register_attacker(f"cross-{clone}")
    out = run_attack({"attack": "ptaq", "clone": clone, **FAST, "embedding_dim": 8}, kn, client, seed=0, device="cpu")
    assert float(np.nanmean(_agr10(world, out.clone))) > random_agreement + 0.15
    assert set(out.info["fusion_clone_weight_mean"]) == ({"item_emb"} if clone == "lmf" else {"item_gmf", "item_mlp"})


def test_query_stealing_helps_on_queried_users(world):
    kn = world["knowledge"]
    ptd = run_attack({"attack": "ptd", **FAST}, kn, None, seed=0, device="cpu")
    ptq = run_attack({"attack": "ptq", **FAST}, kn, world["oracle"].register_attacker("ptq-gain"), seed=0, device="cpu")
    q = kn.queryable()
    assert np.nanmean(_agr10(world, ptq.clone)[q]) > np.nanmean(_agr10(world, ptd.clone)[q])


def test_budget_is_respected(world):
    kn = world["knowledge"]
    oracle = world["oracle"]
    short = oracle.register_attacker("short", budget=7)
    out = run_attack({"attack": "ptq", **FAST, "finetune_epochs": 1}, kn, short, seed=0, device="cpu")
    assert out.queries == 7 and short.remaining_budget == 0
    assert out.info["steal"]["users"] == 7
    broke = oracle.register_attacker("broke", budget=0)
    for attack in ("qsd", "ptq"):  # no clone trained on no answer: the spent budget is the error
        with pytest.raises(QueryBudgetExceeded, match="'broke' asked for .* has 0 left"):
            run_attack({"attack": attack, **FAST}, kn, broke, seed=0, device="cpu")
    with pytest.raises(QueryBudgetExceeded):
        broke.query(kn.target_user_ids[:1], K)


def test_runs_are_seeded(world):
    kn = world["knowledge"]
    users = torch.arange(kn.num_users)
    a = run_attack({"attack": "pta", **FAST, "epochs": 2, "aux_epochs": 2}, kn, None, seed=3, device="cpu")
    b = run_attack({"attack": "pta", **FAST, "epochs": 2, "aux_epochs": 2}, kn, None, seed=3, device="cpu")
    c = run_attack({"attack": "pta", **FAST, "epochs": 2, "aux_epochs": 2}, kn, None, seed=4, device="cpu")
    with torch.no_grad():
        assert torch.equal(a.clone.score(users), b.clone.score(users))
        assert not torch.equal(a.clone.score(users), c.clone.score(users))


def test_a_shared_auxiliary_model_gives_the_same_run(world):
    kn = world["knowledge"]
    config = {"attack": "pta", **FAST, "epochs": 2, "aux_epochs": 2}
    aux = train_auxiliary_model(config, kn.auxiliary, seed=3, device="cpu")
    shared = Knowledge(kn.target_data, kn.target_user_ids, None, kn.query_users, auxiliary_model=aux)
    a = run_attack(config, kn, None, seed=3, device="cpu")
    b = run_attack(config, shared, None, seed=3, device="cpu")
    users = torch.arange(kn.num_users)
    with torch.no_grad():
        assert torch.equal(a.clone.score(users), b.clone.score(users))
    assert b.info["aux"] == {"shared": True}
    with pytest.raises(ConfigError, match="auxiliary_model"):
        run_attack({**config, "embedding_dim": 8}, shared, None, seed=3, device="cpu")


# ----------------------------------------------------------------------------- configs, knowledge
def test_config_defaults_and_qsd_loss():
    cfg = make_attack_config({"attack": "ptaq"})
    assert (cfg.k, cfg.margin, cfg.embedding_dim, cfg.lr, cfg.batch_size) == (50, 0.5, 64, 1e-3, 2048)
    assert cfg.stealing_loss_name == "BPR+Hinge"
    assert make_attack_config({"attack": "qsd"}).stealing_loss_name == "Hinge+Hinge"
    assert make_attack_config({"attack": "qsd", "rank_loss": "bpr"}).rank_loss == "bpr"
    assert make_attack_config({"attack": "ptq", "clone": "ncf"}).clone == "neumf"
    assert AttackConfig.model_validate(cfg.model_dump()) == cfg
    assert {"ptd", "pta", "pta_pre", "ptq", "ptaq", "qsd", "popularity", "aux_frozen"} <= set(attack_names())


@pytest.mark.parametrize(
    "config, key",
    [
        ({"attack": "ptx"}, "ptx"),
        ({"attack": "ptd", "epochz": 3}, "epochz"),
        ({"attack": "ptd", "clone": "sasrec"}, "sasrec"),
        ({"attack": "ptq", "rank_loss": "mse"}, "rank_loss"),
        ({"attack": "ptq", "k": 0}, "k"),
        ({"attack": "pta", "clone_options": {"dropout": 0.1}}, "dropout"),
        ({"epochs": 3}, "attack"),
    ],
)
def test_bad_configs_raise_config_error_naming_the_key(world, config, key):
    with pytest.raises(ConfigError, match=key):
        run_attack(config, world["knowledge"], None, seed=0, device="cpu")


def test_missing_knowledge_is_named(world):
    kn = world["knowledge"]
    bare = Knowledge(kn.target_data, kn.target_user_ids)
    with pytest.raises(ConfigError, match="auxiliary"):
        run_attack({"attack": "pta"}, bare, None, seed=0)
    with pytest.raises(ConfigError, match="query client"):
        run_attack({"attack": "ptq"}, bare, None, seed=0)
    with pytest.raises(ConfigError, match="query_users"):
        Knowledge(kn.target_data, kn.target_user_ids, query_users=np.array([kn.num_users]))
    with pytest.raises(ConfigError, match="target_user_ids"):
        Knowledge(kn.target_data, kn.target_user_ids[:-1])
