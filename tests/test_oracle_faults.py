"""The black box under faults (issue 23): bad requests in a shared batch, a server killed under
load, a server without a ledger directory, two writers of one output directory."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from raysteal.errors import ConfigError
from raysteal.oracle import QueryBudgetExceeded, TargetSpec, in_process_oracle
from raysteal.oracle.querylog import QUERY_LOG_SCHEMA
from raysteal.results.store import ResultStore
from tests.oracle_fixtures import bpr_target, random_log

POISON = 13
"""A user id the poisoned target cannot score (an engine failure after the charge)."""


@pytest.fixture(scope="module")
def log():
    return random_log(num_users=64, num_items=300)


@pytest.fixture(scope="module")
def spec(log):
    return TargetSpec.from_training_log(bpr_target(log), log)


def _poisoned_spec(log) -> TargetSpec:
    """A target whose forward pass fails on any batch holding user ``POISON`` (defined here, so
    Ray ships the class by value)."""
    model = bpr_target(log)
    base = type(model)

    class Poisoned(base):
        def score(self, users: torch.Tensor) -> torch.Tensor:
            if bool((users == POISON).any()):
                raise RuntimeError("the engine failed on user 13")
            return super().score(users)

    model.__class__ = Poisoned
    return TargetSpec.from_training_log(model, log)


def _granted(table: pa.Table) -> pa.Table:
    return table.filter(table.column("granted"))


# ----------------------------------------------------------------------------- hole 1, in process
@pytest.mark.parametrize("k", [True, False, np.True_])
def test_a_bool_k_is_refused_before_any_charge(spec, k):
    oracle = in_process_oracle(spec)
    client = oracle.register_attacker("a", budget=10)
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        client.query([0, 1], k=k)
    assert client.spent == 0
    table = oracle.query_log()
    assert table.column("granted").to_pylist() == [False] and table.column("k").to_pylist() == [-1]


@pytest.mark.parametrize("k", [True, 2.0])
def test_a_caching_client_refuses_a_bad_k_it_holds_answers_for(spec, k):
    from raysteal.oracle.cache import CachingClient

    client = CachingClient(in_process_oracle(spec).register_attacker("a", budget=10))
    client.query([0, 1], k=int(k))
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        client.query([0, 1], k=k)  # never served from the k=1 / k=2 answers it holds
    assert client.hits == 0


def test_a_request_that_fails_after_its_charge_is_refunded(log):
    oracle = in_process_oracle(_poisoned_spec(log))
    client = oracle.register_attacker("a", budget=10)
    with pytest.raises(RuntimeError, match="user 13"):
        client.query([1, POISON], k=5)
    assert client.spent == 0 and client.remaining_budget == 10
    assert client.query([1, 2], k=5).shape == (2, 5) and client.spent == 2
    assert oracle.query_log().column("reason").to_pylist() == ["RuntimeError", ""]


# ---------------------------------------------------------------------------- hole 2, in process
def test_a_charge_the_log_missed_gets_one_row_and_its_retry_replaces_it(spec, tmp_path):
    from raysteal.oracle import build_oracle_core
    from raysteal.oracle.querylog import UNCONFIRMED

    core = build_oracle_core(spec, state_dir=tmp_path, device="cpu", secret=b"s" * 32, session="1-0000abcd")
    key = core.register("a", 100)
    core.query("a", key, [0, 1, 2], 5, request_id="r1")
    core.admit("a", key, [3, 4], 5, "r2")  # charged; the server dies before answering
    core.close()
    reopened = build_oracle_core(spec, state_dir=tmp_path, device="cpu", secret=b"s" * 32, session="1-0000abcd")
    table = reopened.query_log()
    assert table.column("request_id").to_pylist() == ["r1", "r2"]
    assert table.column("reason").to_pylist() == ["", UNCONFIRMED] and table.column("k").to_pylist() == [5, 5]
    reopened.query("a", key, [3, 4], 5, request_id="r2")  # Ray resends it: answered, not charged again
    table = reopened.query_log()
    assert table.column("request_id").to_pylist() == ["r1", "r2"] and table.column("reason").to_pylist() == ["", ""]
    assert reopened.ledger.spent("a") == sum(table.column("count").to_pylist()) == 5


def test_a_charge_whose_retry_fails_is_refunded_and_logged_once_refused(log, tmp_path):
    from raysteal.oracle import build_oracle_core

    def open_core():
        return build_oracle_core(_poisoned_spec(log), state_dir=tmp_path, device="cpu", secret=b"s" * 32, session="1-0000abcd")

    core = open_core()
    key = core.register("a", 100)
    core.admit("a", key, [1, POISON], 5, "r1")  # charged; the server dies before answering
    core.close()
    core = open_core()
    with pytest.raises(RuntimeError, match="user 13"):
        core.query("a", key, [1, POISON], 5, request_id="r1")  # the resent request fails: refunded
    core.close()
    for table in (core.query_log(), open_core().query_log()):  # the same after another restart
        assert table.column("granted").to_pylist() == [False] and table.column("reason").to_pylist() == ["RuntimeError"]
    assert open_core().ledger.spent("a") == 0


# ------------------------------------------------------------------------------------ with Ray
@pytest.mark.ray
def test_a_bad_k_in_a_shared_batch_fails_and_charges_no_one_else(ray_session, spec):
    ray = ray_session
    from raysteal.oracle.server import client_for, owner_token, start_target_server

    server = start_target_server(spec, max_wait_ms=300)  # a long window: the requests share batches
    good, bad = client_for(server, "good", budget=1000), client_for(server, "bad", budget=1000)
    refs = []
    for i in range(10):  # a bad k first in each batch: True == 1, so it wins max() over the good k=1
        if i % 2 == 0:
            refs.append(("bad", bad.query_async(np.arange(4), k=True)))
        refs.append(("good", good.query_async(np.arange(8) + i, k=1)))
    answered = {"good": 0, "bad": 0}
    for who, ref in refs:
        try:
            answered[who] += len(ray.get(ref))
        except ray.exceptions.RayTaskError as err:
            assert who == "bad" and isinstance(err.cause, ConfigError) and "k must be an integer" in str(err.cause)
    assert answered == {"good": 80, "bad": 0}
    assert good.spent == 80 and bad.spent == 0  # the bad k charged no one
    table = ray.get(server.query_log.remote(owner_token(server)))
    assert table.filter(pa.compute.invert(table.column("granted"))).column("attacker").to_pylist() == ["bad"] * 5
    ray.kill(server)


@pytest.mark.ray
def test_a_request_failing_in_a_merged_batch_fails_only_itself(ray_session, log):
    ray = ray_session
    from raysteal.oracle.server import client_for, owner_token, start_target_server

    server = start_target_server(_poisoned_spec(log), max_wait_ms=300)
    good, bad = client_for(server, "good", budget=100), client_for(server, "bad", budget=100)
    good_refs = [good.query_async(np.arange(8), k=5) for _ in range(3)]
    bad_ref = bad.query_async([1, POISON], k=5)
    assert [len(ray.get(r)) for r in good_refs] == [8, 8, 8]
    with pytest.raises(ray.exceptions.RayTaskError, match="user 13"):
        ray.get(bad_ref)
    assert good.spent == 24 and bad.spent == 0  # the failed request was refunded
    table = ray.get(server.query_log.remote(owner_token(server)))
    assert sorted(zip(table.column("attacker").to_pylist(), table.column("granted").to_pylist())) == [("bad", False)] + [("good", True)] * 3
    ray.kill(server)


@pytest.mark.ray
def test_log_rows_equal_charged_equal_answered_after_a_restart_under_load(ray_session, spec, tmp_path):
    ray = ray_session
    from raysteal.oracle.server import client_for, owner_token, start_target_server

    server = start_target_server(spec, state_dir=tmp_path / "ledgers" / "srv", max_restarts=2, max_wait_ms=1)
    clients = [client_for(server, f"att{i}", budget=10_000) for i in range(4)]
    refs = [c.query_async(np.arange(5) + j % 50, k=10) for j in range(60) for c in clients]
    ray.get(refs[:40])  # some answered before the crash, many in flight at it
    pid_before = ray.get(server.pid.remote())
    ray.kill(server, no_restart=False)
    answered = sum(len(a) for a in ray.get(refs, timeout=120))  # Ray resends what the crash cut off
    # the kill lands asynchronously: the old process may still answer a call or two before it dies
    deadline = time.monotonic() + 60
    while ray.get(server.pid.remote()) == pid_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.get(server.pid.remote()) != pid_before  # it did restart
    assert answered == len(refs) * 5
    charged = sum(e["spent"] for e in ray.get(server.ledger.remote(owner_token(server))).values())
    granted = _granted(ray.get(server.query_log.remote(owner_token(server))))
    assert granted.num_rows == len(refs) and len(set(granted.column("request_id").to_pylist())) == len(refs)
    assert sum(granted.column("count").to_pylist()) == charged == answered
    ray.kill(server)


@pytest.mark.ray
def test_a_killed_invocations_log_is_read_from_its_journal_once(ray_session, spec, tmp_path):
    ray = ray_session
    from raysteal.oracle.server import client_for, owner_token, start_target_server

    store = ResultStore(tmp_path)
    server = start_target_server(spec, state_dir=tmp_path / "ledgers" / "srv")
    client = client_for(server, "a", budget=14)
    for n in (3, 4, 5):
        client.query(np.arange(n), k=5)
    with pytest.raises(QueryBudgetExceeded):
        client.query(np.arange(3), k=5)  # refused: logged, not charged
    table = ray.get(server.query_log.remote(owner_token(server)))
    ray.kill(server)  # the invocation dies before writing its part
    logs = store.load_query_logs()
    assert len(logs) == 4 and int(logs[logs["granted"]]["count"].sum()) == 12 and set(logs["server"]) == {"srv"}
    store.write_query_log("srv", table)  # its part, had it lived: read instead of the journal, not beside it
    assert len(store.load_query_logs()) == 4


# ----------------------------------------------------------------------------------- hole 4
@pytest.mark.ray
def test_a_server_without_a_ledger_directory_is_never_restarted(ray_session, spec):
    ray = ray_session
    from raysteal.oracle.server import client_for, start_target_server

    with pytest.raises(ConfigError, match="max_restarts=2 needs a state_dir"):
        start_target_server(spec, max_restarts=2)
    server = start_target_server(spec)
    client = client_for(server, "a", budget=100)
    client.query(np.arange(40), k=5)
    ray.kill(server, no_restart=False)  # a crash: its in-memory ledger is gone with it
    deadline = time.monotonic() + 30
    with pytest.raises(ray.exceptions.RayActorError):
        while time.monotonic() < deadline:  # never answered again, so never with 100 queries left
            assert client.remaining_budget == 60
            time.sleep(0.05)


# ----------------------------------------------------------------------------------- hole 5
def test_two_writers_of_one_output_directory_keep_both_parts(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def table(attacker: str) -> pa.Table:
        row = {
            "attacker": attacker,
            "request_id": attacker,
            "time": 0,
            "count": 1,
            "k": 5,
            "granted": True,
            "reason": "",
            "defense": "none",
            "latency_ms": 1.0,
        }
        return pa.Table.from_pylist([row], schema=QUERY_LOG_SCHEMA)

    store = ResultStore(tmp_path)
    for trial in range(5):
        with ThreadPoolExecutor(2) as pool:
            paths = list(pool.map(lambda who: store.write_query_log("srv", table(f"{who}{trial}")), ["x", "y"]))
        assert paths[0] != paths[1]
    logs = store.load_query_logs()
    assert sorted(logs["attacker"]) == sorted(f"{w}{t}" for w in "xy" for t in range(5)) and set(logs["server"]) == {"srv"}
