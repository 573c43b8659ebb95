"""The in-process black box: answers, exclusion, budgets, log, defenses, bad input."""

from __future__ import annotations

import pickle
import re
import threading

import numpy as np
import pytest
import torch

from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.oracle import (
    BudgetLedger,
    PopularMixing,
    QueryBudgetExceeded,
    RankReversal,
    RankShuffle,
    RateLimit,
    RateLimitExceeded,
    TargetSpec,
    Truncation,
    UnknownAttacker,
    build_defenses,
    in_process_oracle,
    register_defense,
)
from raysteal.oracle.defenses import ListDefense, check_answer_width
from tests.oracle_fixtures import bpr_target, random_log


@pytest.fixture()
def log():
    return random_log()


@pytest.fixture()
def oracle(log):
    return in_process_oracle(TargetSpec.from_training_log(bpr_target(log), log))


def test_answers_are_the_models_top_k_without_seen_items(oracle, log):
    client = oracle.register_attacker("a", budget=100)
    users = np.array([0, 5, 7])
    lists = client.query(users, k=10)
    assert lists.shape == (3, 10) and lists.dtype == np.int64
    model = bpr_target(log)
    with torch.no_grad():
        scores = model.score(torch.as_tensor(users)).numpy()
    for row, u in enumerate(users):
        seen = set(log.sequence(u).tolist())
        assert not seen & set(lists[row].tolist())
        s = scores[row].copy()
        s[list(seen)] = -np.inf
        np.testing.assert_array_equal(lists[row], np.argsort(-s, kind="stable")[:10])


def test_budget_is_exact_and_refusals_answer_nothing(oracle):
    client = oracle.register_attacker("a", budget=10)
    client.query([1, 2, 3, 4], k=5)
    assert client.remaining_budget == 6 and client.spent == 4
    with pytest.raises(QueryBudgetExceeded) as err:
        client.query(np.arange(7), k=5)  # all-or-nothing: no partial answer
    assert err.value.remaining == 6
    assert client.remaining_budget == 6
    client.query(np.arange(6), k=5)
    assert client.remaining_budget == 0
    with pytest.raises(QueryBudgetExceeded):
        client.query([0], k=1)
    table = oracle.query_log()
    assert table.column("granted").to_pylist() == [True, False, True, False]
    assert table.column("count").to_pylist() == [4, 7, 6, 1]
    assert set(table.column("attacker").to_pylist()) == {"a"}


def test_budget_exact_under_threads(oracle):
    client = oracle.register_attacker("t", budget=500)
    granted, refused = [], []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            n = int(rng.integers(1, 8))
            try:
                client.query(rng.integers(0, 40, n), k=3)
                granted.append(n)
            except QueryBudgetExceeded:
                refused.append(n)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(granted) == client.spent <= 500
    assert len(granted) + len(refused) == 16 * 20


def test_client_holds_no_model(oracle):
    client = oracle.register_attacker("a")
    blob = pickle.dumps(client)
    assert b"torch" not in blob and b"Tensor" not in blob and len(blob) < 2000
    for name in ("attacker_id", "info", "_account_key", "_local_key", "_actor"):
        value = getattr(client, name)
        assert not isinstance(value, (torch.Tensor, torch.nn.Module))
    assert not hasattr(client, "model") and not hasattr(client, "_core")
    clone = pickle.loads(blob)
    assert clone.query([0], k=2).shape == (1, 2)


def test_bad_input_is_refused_clearly(oracle):
    client = oracle.register_attacker("a", budget=5)
    with pytest.raises(ConfigError, match="k must be"):
        client.query([0], k=0)
    with pytest.raises(ConfigError, match="larger than the catalogue"):
        client.query([0], k=121)
    with pytest.raises(ConfigError, match="unknown user id 40"):
        client.query([0, 40], k=5)
    with pytest.raises(ConfigError, match="empty request"):
        client.query([], k=5)
    assert client.remaining_budget == 5  # bad requests cost nothing
    with pytest.raises(ConfigError, match="budget"):
        oracle.register_attacker("b", budget=-5)
    with pytest.raises(UnknownAttacker):
        oracle._core.query("nobody", oracle._core.accounts.key_for("nobody"), [0], 1)


def test_a_client_queries_as_its_own_attacker_only(oracle):
    """An account key opens one account: a client cannot spend another attacker's budget."""
    from raysteal.oracle import AccessDenied
    from raysteal.oracle.client import QueryClient

    mine = oracle.register_attacker("mine", budget=5)
    theirs = oracle.register_attacker("theirs", budget=5)
    for key in (mine._account_key, "é", "\ud800", None):
        forged = QueryClient("theirs", mine.info, key, local_key=mine._local_key)
        with pytest.raises(AccessDenied, match="'theirs'"):
            forged.query([0], k=2)
        with pytest.raises(AccessDenied):
            _ = forged.remaining_budget
    assert theirs.remaining_budget == 5 and mine.remaining_budget == 5  # nothing charged to anyone
    table = oracle.query_log()
    assert table.column("reason").to_pylist() == ["AccessDenied"] * 4  # each attempt is logged, refused
    assert theirs.query([0], k=2).shape == (1, 2) and theirs.remaining_budget == 4
    odd = oracle.register_attacker("\ud800", budget=1)  # any str is an id, also one that is not valid UTF-8
    assert odd.query([0], k=2).shape == (1, 2)


def test_sequence_requests_are_validated():
    from raysteal.oracle.engine import pad_sequences

    arr = pad_sequences([[1, 2, 3], [4]])
    np.testing.assert_array_equal(arr, [[1, 2, 3], [-1, -1, 4]])
    np.testing.assert_array_equal(pad_sequences([[1, 2, 3]], max_len=2), [[2, 3]])


def test_ledger_replays_journal_and_charges_a_retry_once(tmp_path):
    ledger = BudgetLedger(tmp_path / "ledger.jsonl")
    ledger.register("a", 10)
    ledger.register("b", 10)
    ledger.charge("a", 4, "r1")
    for attacker, count in (("a", 4), ("a", 1), ("b", 4)):  # a live server never sees an id twice
        with pytest.raises(ConfigError, match="'r1' was already answered"):
            ledger.charge(attacker, count, "r1")
    assert ledger.remaining("a") == 6 and ledger.remaining("b") == 10
    ledger.close()
    with open(tmp_path / "ledger.jsonl", "a") as fh:
        fh.write('{"op": "charge", "attacker": "a", "cou')  # torn write from a crash
    again = BudgetLedger(tmp_path / "ledger.jsonl")
    assert again.remaining("a") == 6 and again.spent("a") == 4
    for attacker, count in (("b", 4), ("a", 3)):  # only the same attacker's same-size request is its retry
        with pytest.raises(ConfigError, match="already answered"):
            again.charge(attacker, count, "r1")
    # Ray resends the call the crash cut off: answered, not charged again (the charge was journaled
    # without a digest, as by an older server, so attacker and size decide)
    again.charge("a", 4, "r1", digest="anything")
    with pytest.raises(ConfigError, match="already answered"):
        again.charge("a", 4, "r1")  # once
    assert again.remaining("a") == 6 and again.remaining("b") == 10
    with pytest.raises(QueryBudgetExceeded):
        again.charge("a", 7, "r2")


def test_a_retry_after_a_restart_must_be_the_request_that_was_charged(log, tmp_path):
    """Same id, attacker and size are not enough: the journal keeps a digest of the inputs, so a
    reused id with other inputs after a restart is refused instead of answered free."""
    from raysteal.oracle.target import build_oracle_core

    spec, secret = TargetSpec.from_training_log(bpr_target(log), log), b"s" * 32
    first = build_oracle_core(spec, state_dir=tmp_path, secret=secret)
    key = first.register("a", 10)
    answer = first.query("a", key, np.array([1, 2, 3]), 5, request_id="r1")
    first.ledger.close()
    again = build_oracle_core(spec, state_dir=tmp_path, secret=secret)  # the restarted server
    with pytest.raises(ConfigError, match="'r1' was already answered"):
        again.query("a", key, np.array([1, 2, 4]), 5, request_id="r1")  # same size, other users
    with pytest.raises(ConfigError, match="already answered"):
        again.query("a", key, np.array([1, 2, 3]), 6, request_id="r1")  # same users, other k
    np.testing.assert_array_equal(again.query("a", key, np.array([1, 2, 3]), 5, request_id="r1"), answer)
    assert again.ledger.spent("a") == 3  # the genuine retry was not charged twice


# ------------------------------------------------------------------ defenses
def test_popular_mixing_replaces_exactly_n_with_top_pool_items():
    rng = np.random.default_rng(0)
    popularity = np.arange(1000)[::-1].astype(float)  # item 0 most popular
    lists = np.stack([rng.permutation(np.arange(200, 1000))[:50] for _ in range(64)])  # no popular items
    mixed = PopularMixing(n=15, item_popularity=popularity, pool=100).apply(lists, rng)
    changed = mixed != lists
    assert (changed.sum(axis=1) == 15).all()
    assert (mixed[changed] < 100).all()  # every replacement is one of the 100 most popular
    assert all(len(set(row)) == 50 for row in mixed)  # no duplicates introduced
    np.testing.assert_array_equal(mixed[~changed], lists[~changed])  # the rest keep their rank


def test_popular_mixing_never_duplicates_already_listed_popular_items():
    rng = np.random.default_rng(1)
    popularity = np.arange(300)[::-1].astype(float)
    lists = np.stack([rng.permutation(150)[:50] for _ in range(32)])  # many popular items inside
    mixed = PopularMixing(n=25, item_popularity=popularity, pool=100).apply(lists, rng)
    assert all(len(set(row)) == 50 for row in mixed)
    assert ((mixed != lists).sum(axis=1) <= 25).all()


def test_popular_mixing_refuses_a_pool_or_n_it_cannot_honour():
    popularity = np.arange(60)[::-1].astype(float)
    with pytest.raises(ConfigError, match=r"pool=100 is larger than the catalogue \(60 items\)"):
        build_defenses([{"type": "popular_mixing", "n": 3, "pool": 100}], popularity)
    assert PopularMixing(n=3, item_popularity=popularity).describe() == "popmix(n=3,pool=60)"  # the default shrinks
    lists = np.tile(np.arange(10, 20), (2, 1))
    with pytest.raises(ConfigError, match="n=11 is more than the 10 items a list holds"):
        PopularMixing(n=11, item_popularity=popularity).apply(lists, np.random.default_rng(0))
    whole = PopularMixing(n=10, item_popularity=popularity).apply(lists, np.random.default_rng(0))  # n = k: all replaced
    assert not np.isin(whole, lists).any() and all(len(set(row)) == 10 for row in whole)


def test_order_perturbations_keep_the_set():
    rng = np.random.default_rng(0)
    lists = np.tile(np.arange(10), (4, 1))
    shuffled = RankShuffle().apply(lists, rng)
    assert (np.sort(shuffled, axis=1) == lists).all() and (shuffled != lists).any()
    np.testing.assert_array_equal(RankReversal().apply(lists, rng), lists[:, ::-1])
    np.testing.assert_array_equal(RankReversal(depth=3).apply(lists, rng)[0], [2, 1, 0, 3, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(Truncation(4).apply(lists, rng), lists[:, :4])


@pytest.mark.parametrize("defense, label", [(RankShuffle, "shuffle"), (RankReversal, "reverse")])
def test_order_perturbations_refuse_a_depth_below_one_naming_themselves(defense, label):
    for depth in (0, -3):
        with pytest.raises(ConfigError, match=rf"^{label}: depth must be >= 1, got {depth}$"):
            defense(depth)
    assert defense(3).describe() == f"{label}(depth=3)" and defense().describe() == f"{label}(depth=None)"


def test_rate_limit_token_bucket():
    limit = RateLimit(rate=10, burst=5)
    limit.admit("a", 5, now=0.0)
    with pytest.raises(RateLimitExceeded):
        limit.admit("a", 1, now=0.0)
    limit.admit("a", 1, now=0.1)  # 0.1 s refills one token
    limit.admit("b", 5, now=0.1)  # per attacker
    with pytest.raises(ConfigError, match="never pass a rate limit with burst 5"):
        limit.admit("c", 6, now=100.0)  # larger than the burst: waiting would never help


def test_defended_oracle_logs_the_defense(log):
    spec = TargetSpec.from_training_log(
        bpr_target(log), log, defenses=[{"type": "popular_mixing", "n": 3}, {"type": "truncate", "max_items": 8}]
    )
    oracle = in_process_oracle(spec)
    lists = oracle.register_attacker("a").query([0, 1], k=10)
    assert lists.shape == (2, 8)
    assert oracle.query_log().column("defense")[0].as_py() == "popmix(n=3,pool=100)+truncate(8)"


def test_defense_specs_fail_naming_the_key():
    with pytest.raises(ConfigError, match="max_itemz"):
        build_defenses([{"type": "truncate", "max_itemz": 3}])
    with pytest.raises(ConfigError, match="does not match any of the expected tags|popular_mixin"):
        build_defenses([{"type": "popular_mixin", "n": 3}])
    with pytest.raises(ConfigError):
        build_defenses([{"type": "popular_mixing", "n": -1}], np.ones(10))


def test_a_defense_is_one_registered_spec_beside_its_class():
    """A new defense is a ``ListDefense`` and its spec with ``@register_defense``: parsing, the
    width check and the chain take it with no other edit."""
    from typing import Literal

    from raysteal.oracle import defenses

    class Head(ListDefense):
        def __init__(self, keep: int):
            self.keep = keep

        def check(self, k: int) -> int:
            return min(k, self.keep)

        def apply(self, lists: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return lists[:, : self.keep]

        def describe(self) -> str:
            return f"head({self.keep})"

    class HeadSpec(defenses.DefenseSpecBase):
        type: Literal["head"]
        keep: int

        def defense(self, item_popularity):
            return Head(self.keep)

        def answer_width(self, k: int, narrowed: bool) -> int:
            return min(k, self.keep)

    register_defense(HeadSpec)
    try:
        chain = build_defenses([{"type": "shuffle"}, {"type": "head", "keep": 3}])
        assert chain.describe() == "shuffle(depth=None)+head(3)"
        assert check_answer_width([{"type": "head", "keep": 3}, {"type": "popular_mixing", "n": 2}], 10) == 3
        with pytest.raises(ValueError, match="defense 'head' registered twice"):
            register_defense(HeadSpec)
    finally:
        defenses._REGISTRY.pop("head")
    with pytest.raises(ConfigError, match="'popular_mixing', 'shuffle', 'reverse', 'truncate', 'rate_limit'$"):
        build_defenses([{"type": "head", "keep": 3}])


def test_defense_cost_measures_the_targets_own_loss():
    from raysteal.oracle.cost import defense_cost
    from raysteal.oracle.engine import RankingEngine

    log = random_log(num_users=200, num_items=400, per_user=10, seed=3)
    model = bpr_target(log, seed=3)
    engine = RankingEngine(model, log.indptr, log.items)
    users = np.arange(200)
    # relevant = the target's own top-5: undefended recall@50 is exactly 1
    relevant = engine.topk(users, 5)
    popularity = np.zeros(400)
    popularity[np.setdiff1d(np.arange(400), relevant.ravel())[:100]] = 1.0  # pool disjoint from relevant
    cost = defense_cost(engine, build_defenses([{"type": "popular_mixing", "n": 25}], popularity), users, relevant, k=50)
    assert cost["recall@50"] == 1.0
    assert 0.0 < cost["recall@50/defended"] < 1.0 and cost["recall_drop"] > 0
    none = defense_cost(engine, build_defenses([]), users, relevant, k=50)
    assert none["recall_drop"] == 0.0 and none["ndcg_drop"] == 0.0


def test_sequential_target_answers_sequences_and_refuses_bad_ones():
    from raysteal.models import build_model

    torch.manual_seed(0)
    model = build_model({"model": "sasrec", "max_len": 8, "embedding_dim": 16}, 0, 50).eval()
    oracle = in_process_oracle(TargetSpec(model=model))
    client = oracle.register_attacker("s", budget=10)
    lists = client.query([[1, 2, 3], [4]], k=5)
    assert lists.shape == (2, 5)
    assert not {1, 2, 3} & set(lists[0].tolist()) and 4 not in lists[1]  # items in the sequence excluded
    with pytest.raises(ConfigError, match="sequence 1 of the request is empty"):
        client.query([[1], []], k=5)
    with pytest.raises(ConfigError, match=r"item ids must lie in \[0, 50\)"):
        client.query([[1, 50]], k=5)
    with pytest.raises(ConfigError, match="empty request"):
        client.query([], k=5)
    assert client.spent == 2


# ------------------------------------------------------------------ refusals before any charge
def test_popular_mixing_wider_than_k_is_refused_before_any_charge(log):
    spec = TargetSpec.from_training_log(bpr_target(log), log, defenses=[{"type": "popular_mixing", "n": 5}])
    oracle = in_process_oracle(spec)
    client = oracle.register_attacker("a", budget=10)
    with pytest.raises(ConfigError, match="n=5 is more than the 3 items a list holds"):
        client.query([0, 1], k=3)
    assert client.spent == 0 and client.remaining_budget == 10  # refused, so never charged
    table = oracle.query_log()
    assert table.column("granted").to_pylist() == [False] and table.column("reason").to_pylist() == ["ConfigError"]
    assert client.query([0, 1], k=5).shape == (2, 5) and client.spent == 2
    # the check follows the chain's widths: a truncation to 4 leaves popular mixing too few slots
    chain = build_defenses([{"type": "truncate", "max_items": 4}, {"type": "popular_mixing", "n": 5}], np.ones(120))
    with pytest.raises(ConfigError, match="n=5 is more than the 4 items"):
        chain.check(10)
    with pytest.raises(ConfigError, match="n=7 is more than the pool of 6"):
        PopularMixing(n=7, item_popularity=np.ones(6))  # could never honour any request


# ------------------------------------------------------------------ answers shorter than k
def _nearly_exhausted_log():
    """User 0 has seen every item but 2 and 5 (of 7); user 1 has seen one item."""
    seen0 = [0, 1, 3, 4, 6]
    return Interactions(users=np.array([0] * 5 + [1]), items=np.array(seen0 + [2]), num_users=2, num_items=7, name="tiny")


def test_answers_shorter_than_k_end_in_pad_never_in_seen_items():
    from raysteal.oracle.engine import RankingEngine

    log = _nearly_exhausted_log()
    model = bpr_target(log)
    with torch.no_grad():
        scores = model.score(torch.as_tensor([0])).numpy()[0]
    unseen_order = [2, 5] if scores[2] >= scores[5] else [5, 2]
    engine = RankingEngine(model, log.indptr, log.items)
    for dense in (True, False):
        if not dense:
            engine._seen_dense = None  # the CSR mask path of large targets
        lists = engine.topk(np.array([0, 1]), 5)
        assert lists[0].tolist() == unseen_order + [-1, -1, -1]
        assert -1 not in lists[1] and 2 not in lists[1]
    oracle = in_process_oracle(TargetSpec.from_training_log(model, log))
    assert oracle.register_attacker("a").query([0], k=5)[0].tolist() == unseen_order + [-1, -1, -1]


def test_sequence_answers_shorter_than_k_end_in_pad():
    from raysteal.models import build_model

    torch.manual_seed(0)
    model = build_model({"model": "sasrec", "max_len": 8, "embedding_dim": 8}, 0, 6).eval()
    client = in_process_oracle(TargetSpec(model=model)).register_attacker("s")
    row = client.query([[0, 1, 2, 3]], k=5)[0].tolist()
    assert sorted(row[:2]) == [4, 5] and row[2:] == [-1, -1, -1]


def test_order_perturbations_keep_padding_at_the_end():
    lists = np.array([[7, 8, 9, -1, -1], [1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(RankReversal().apply(lists, np.random.default_rng(0)), [[9, 8, 7, -1, -1], [5, 4, 3, 2, 1]])
    shuffled = RankShuffle().apply(np.tile(lists[:1], (50, 1)), np.random.default_rng(0))
    assert (shuffled[:, 3:] == -1).all() and (np.sort(shuffled[:, :3], axis=1) == [7, 8, 9]).all()


def test_popular_mixing_keeps_padding_at_the_end_and_never_fails_after_the_charge():
    popularity = np.arange(20)[::-1].astype(float)  # item 0 most popular
    lists = np.tile([[7, 8, 9, 10, -1, -1]], (200, 1))
    rng = np.random.default_rng(0)
    mixed = PopularMixing(n=2, item_popularity=popularity, pool=5).apply(lists, rng)
    assert (mixed[:, 4:] == -1).all()  # mixed in among the listed items only
    assert ((mixed[:, :4] < 5).sum(axis=1) == 2).all()  # two popular items in each
    short = PopularMixing(n=3, item_popularity=popularity, pool=5).apply(np.tile([[7, -1, -1, -1]], (50, 1)), rng)
    assert (short[:, 3] == -1).all() and ((short[:, :3] >= 0).all(axis=1)).all()  # a row shorter than n: padding still trails
    # a list already holding all but one of the pool: that one is mixed in, no error after the charge
    full = PopularMixing(n=3, item_popularity=popularity, pool=5).apply(np.array([[0, 1, 2, 3, 9, 10]]), rng)
    assert 4 in full[0] and len(set(full[0])) == 6 and (full[0] != [0, 1, 2, 3, 9, 10]).sum() == 1


# ------------------------------------------------------------------ malformed requests
def test_malformed_ids_are_refused_before_any_charge(oracle):
    from raysteal.oracle.client import _as_payload
    from raysteal.oracle.engine import pad_sequences

    client = oracle.register_attacker("a", budget=5)
    with pytest.raises(ConfigError, match=r"user ids must be a 1-d list of ids, got an array of shape \(2, 2\)"):
        client.query(np.array([[0, 1], [2, 3]]), k=3)
    with pytest.raises(ConfigError, match="user ids must be integer ids, got dtype float64"):
        client.query([0.5, 1.0], k=3)
    with pytest.raises(ConfigError, match="user ids must be integer ids"):
        client.query(np.array([1.0, 2.0]), k=3)  # whole floats too: ids are never floats
    with pytest.raises(ConfigError, match="user ids must be integer ids; got a ragged"):
        client.query([[0, 1], [2]], k=3)
    assert client.spent == 0 and client.remaining_budget == 5
    with pytest.raises(ConfigError, match="sequence 0 must be integer ids, got dtype float64"):
        pad_sequences([[1.5, 2.0]])
    with pytest.raises(ConfigError, match="sequence items must be integer ids"):
        pad_sequences(np.array([[1.9, 2.0]]))
    with pytest.raises(ConfigError, match=r"sequence 1 must be a 1-d list of item ids, got shape \(1, 2\)"):
        pad_sequences([[1, 2], [[3, 4]]])
    assert _as_payload([0.5], sequential=False).dtype.kind == "f"  # the actor client sends what it got, uncast


def test_sequential_float_items_are_refused_before_any_charge():
    from raysteal.models import build_model

    torch.manual_seed(0)
    model = build_model({"model": "sasrec", "max_len": 8, "embedding_dim": 8}, 0, 50).eval()
    client = in_process_oracle(TargetSpec(model=model)).register_attacker("s", budget=3)
    with pytest.raises(ConfigError, match="sequence 1 must be integer ids"):
        client.query([[1, 2], [3.7, 4.2]], k=5)
    assert client.spent == 0


# ------------------------------------------------------------------ ledger journal corruption
def test_ledger_names_file_and_line_of_a_corrupt_line(tmp_path):
    from raysteal.errors import DataFileError

    path = tmp_path / "ledger.jsonl"
    path.write_text(
        '{"op": "register", "attacker": "a", "budget": 10}\nnot json\n{"op": "charge", "attacker": "a", "count": 1, "request": "r"}\n'
    )
    with pytest.raises(DataFileError, match=rf"{re.escape(str(path))}, line 2: not a JSON entry"):
        BudgetLedger(path)
    path.write_text('{"op": "register", "attacker": "a"}\n')
    with pytest.raises(DataFileError, match=rf"{re.escape(str(path))}, line 1: malformed register entry"):
        BudgetLedger(path)


def test_ledger_names_file_and_line_of_a_charge_for_an_unregistered_attacker(tmp_path):
    from raysteal.errors import DataFileError

    path = tmp_path / "ledger.jsonl"
    path.write_text('{"op": "register", "attacker": "a", "budget": 10}\n{"op": "charge", "attacker": "b", "count": 1, "request": "r"}\n')
    with pytest.raises(DataFileError, match=rf"{re.escape(str(path))}, line 2: charge for attacker 'b', who was never registered"):
        BudgetLedger(path)


def test_ledger_charges_after_a_torn_tail_survive_the_next_replay(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = BudgetLedger(path)
    ledger.register("a", 10)
    ledger.charge("a", 4, "r1")
    ledger.close()
    with open(path, "a") as fh:
        fh.write('{"op": "charge", "attacker": "a", "cou')  # torn write from a crash
    again = BudgetLedger(path)
    again.charge("a", 3, "r2")  # must start a line of its own, not extend the torn one
    again.close()
    third = BudgetLedger(path)
    assert third.spent("a") == 7 and third.remaining("a") == 3
