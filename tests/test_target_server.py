"""The ``TargetServer`` Ray actor: concurrency, exact budgets, restarts, no path to the model."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from raysteal.oracle import QueryBudgetExceeded, TargetSpec
from tests.oracle_fixtures import bpr_target, random_log

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def log():
    return random_log(num_users=64, num_items=300)


@pytest.fixture(scope="module")
def spec(log):
    return TargetSpec.from_training_log(bpr_target(log), log, defenses=[{"type": "popular_mixing", "n": 2}])


def test_concurrent_attackers_get_exact_budgets(ray_session, spec, tmp_path):
    ray = ray_session
    from raysteal.oracle.server import client_for, owner_token, start_target_server

    server = start_target_server(spec, state_dir=tmp_path, max_wait_ms=5)
    clients = [client_for(server, f"att{i}", budget=100) for i in range(32)]

    def attack(client, seed):
        rng = np.random.default_rng(seed)
        asked = granted = refused = 0
        for _ in range(12):
            n = int(rng.integers(1, 20))
            asked += n
            try:
                lists = client.query(rng.integers(0, 64, n), k=10)
                assert lists.shape == (n, 10)
                granted += n
            except QueryBudgetExceeded:
                refused += n
        return asked, granted, refused, client.spent

    # 32 concurrent callers (threads of this driver, each with its own client and requests in flight)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(attack, clients, range(32)))
    for asked, granted, refused, spent in results:
        assert granted + refused == asked
        assert granted == spent <= 100
    ledger = ray.get(server.ledger.remote(owner_token(server)))
    assert all(entry["spent"] <= entry["budget"] for entry in ledger.values())
    table = ray.get(server.query_log.remote(owner_token(server)))
    assert table.num_rows == 32 * 12
    granted_rows = table.filter(table.column("granted")).column("count").to_numpy().sum()
    assert granted_rows == sum(r[1] for r in results)
    assert set(table.column("defense").to_pylist()) == {"popmix(n=2,pool=100)"}
    stats = ray.get(server.stats.remote())
    granted_requests = int(table.column("granted").to_numpy(zero_copy_only=False).sum())
    assert stats["rows"] == granted_rows  # every answered query went through the batcher
    assert stats["batches"] < granted_requests  # concurrent requests were merged into shared forward passes
    ray.kill(server)


def test_ledger_survives_actor_restart(ray_session, spec, tmp_path):
    ray = ray_session
    from raysteal.oracle.server import client_for, start_target_server

    server = start_target_server(spec, state_dir=tmp_path, max_restarts=2)
    client = client_for(server, "a", budget=50)
    client.query(np.arange(30), k=5)
    pid_before = ray.get(server.pid.remote())
    ray.kill(server, no_restart=False)  # a crash: Ray restarts the actor
    # ray.kill is asynchronous: wait until a new process answers before checking the ledger
    deadline = time.monotonic() + 60
    while ray.get(server.pid.remote()) == pid_before:
        assert time.monotonic() < deadline, "the killed target server was never restarted"
        time.sleep(0.1)
    # the restarted actor replays the journal: 20 left, never 50 again
    assert client.remaining_budget == 20
    with pytest.raises(QueryBudgetExceeded):
        client.query(np.arange(21), k=5)
    client.query(np.arange(20), k=5)
    assert client.remaining_budget == 0
    ray.kill(server)


def test_holding_the_server_handle_is_not_owning_it(ray_session, spec):
    """Every client carries the actor's handle; with it alone no one opens accounts, reads the
    ledger or the query log, or queries as another attacker. The owner's token stays in the
    process that started the server, and is passed on explicitly (as the Tune runner does)."""
    ray = ray_session
    from raysteal.errors import RaystealError
    from raysteal.oracle import AccessDenied
    from raysteal.oracle.client import QueryClient
    from raysteal.oracle.server import client_for, owner_token, start_target_server

    server = start_target_server(spec)
    mine, theirs = client_for(server, "mine", budget=10), client_for(server, "theirs", budget=10)
    for call in (
        server.register_attacker.remote("mallory", -1, mine._account_key),
        server.ledger.remote("guess"),
        server.query_log.remote(theirs._account_key),
    ):
        with pytest.raises(AccessDenied):
            ray.get(call)
    forged = QueryClient("theirs", mine.info, mine._account_key, actor=server)
    with pytest.raises(AccessDenied):
        forged.query([0], k=2)
    assert theirs.remaining_budget == 10 and mine.remaining_budget == 10
    assert set(ray.get(server.ledger.remote(owner_token(server)))) == {"mine", "theirs"}

    @ray.remote(num_cpus=0)
    def open_account(handle, owner):
        from raysteal.oracle.server import client_for

        try:
            client_for(handle, "elsewhere", budget=3)
        except RaystealError as err:  # not this process's server: no token to find
            refused = str(err)
        return refused, client_for(handle, "elsewhere", budget=3, owner=owner).remaining_budget

    refused, remaining = ray.get(open_account.remote(server, owner_token(server)))
    assert "did not start" in refused and remaining == 3
    ray.kill(server)


def test_actor_client_pickles_without_tensors(ray_session, spec):
    from raysteal.oracle.server import client_for, start_target_server

    server = start_target_server(spec)
    client = client_for(server, "a")
    blob = pickle.dumps(client)
    assert b"Tensor" not in blob and b"torch" not in blob
    assert client.query([[1]] if client.sequential else [1], k=3).shape == (1, 3)
    ray_session.kill(server)


def test_refused_requests_cost_the_attacker_nothing(ray_session, spec):
    from raysteal.errors import ConfigError
    from raysteal.oracle.server import client_for, owner_token, start_target_server

    server = start_target_server(spec)
    client = client_for(server, "a", budget=5)
    with pytest.raises(ConfigError, match="n=2 is more than the 1 items"):
        client.query([0, 1], k=1)  # popular mixing of 2 items into a list of 1
    with pytest.raises(ConfigError, match="user ids must be integer ids"):
        client.query([0.5, 1.7], k=3)  # never cast to [0, 1] on the way
    assert client.spent == 0 and client.remaining_budget == 5
    assert client.query([0, 1], k=3).shape == (2, 3) and client.spent == 2
    table = ray_session.get(server.query_log.remote(owner_token(server)))
    assert table.column("granted").to_pylist() == [False, False, True]
    ray_session.kill(server)
