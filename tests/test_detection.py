"""Query-log detection: features read from the log only, an autoregressive attacker scoring above
replayed real users, ROC/AUC on hand cases, benign replay of held-out histories, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysteal.detection import FEATURES, account_queries, evaluate_detection, fit_detector, roc_auc, roc_curve
from raysteal.detection.features import gtest_z, query_flags
from raysteal.errors import ConfigError, DataFileError, RaystealError
from raysteal.oracle.core import OracleCore
from raysteal.oracle.errors import QueryBudgetExceeded
from raysteal.oracle.querylog import QUERY_LOG_SCHEMA, QueryLog

NUM_ITEMS = 200
K = 20
RNG = np.random.default_rng(7)
POPULAR = np.argsort(-RNG.zipf(1.3, NUM_ITEMS))  # a fixed popularity order: the "model"


def answer(seq: np.ndarray, k: int = K) -> np.ndarray:
    """A stand-in recommender: the most popular items the input does not hold, shifted by its last item."""
    start = int(seq[-1]) % 7
    cands = [i for i in POPULAR[start:] if i not in set(seq.tolist())]
    return np.array(cands[:k], dtype=np.int64)


def pad(seqs: list[np.ndarray]) -> np.ndarray:
    width = max(len(s) for s in seqs)
    out = np.full((len(seqs), width), -1, dtype=np.int64)
    for r, s in enumerate(seqs):
        out[r, width - len(s) :] = s
    return out


def send(log: QueryLog, account: str, seqs: list[np.ndarray], at: float) -> None:
    """One request of ``seqs`` answered by :func:`answer`, logged as the server does."""
    lists = np.stack([np.pad(answer(s), (0, K - len(answer(s))), constant_values=-1) for s in seqs])
    log.append(account, f"{account}-{at}", len(seqs), K, True, "", "none", 1.0, at=at, inputs=pad(seqs), answers=lists)


def real_history(rng: np.random.Generator, length: int) -> np.ndarray:
    """A real-looking history: popular items mostly, no repeats."""
    weights = 1.0 / (np.arange(NUM_ITEMS) + 5.0)
    return POPULAR[rng.choice(NUM_ITEMS, size=length, replace=False, p=weights / weights.sum())]


def benign_user(log: QueryLog, account: str, rng: np.random.Generator, t0: float, queries: int = 12) -> None:
    history = real_history(rng, queries + int(rng.integers(3, 20)))
    for q, end in enumerate(range(len(history) - queries + 1, len(history) + 1)):
        send(log, account, [history[:end]], t0 + 2.0 * q)


def dfme_attacker(log: QueryLog, account: str, rng: np.random.Generator, t0: float, sequences: int = 6, length: int = 15) -> None:
    """Yue et al.'s synthesis: a random first item, then each prefix extended by an item of its answer."""
    seqs = [np.array([rng.integers(NUM_ITEMS)]) for _ in range(sequences)]
    for step in range(length):
        send(log, account, seqs, t0 + 0.01 * step)
        seqs = [np.r_[s, rng.choice(answer(s))] for s in seqs]


def ptq_attacker(log: QueryLog, account: str, rng: np.random.Generator, t0: float, users: int = 30) -> None:
    """Zhu et al.'s PTQ: stolen real histories, each queried once, whole."""
    send(log, account, [real_history(rng, int(rng.integers(10, 40))) for _ in range(users)], t0)


@pytest.fixture(scope="module")
def mixed_log() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    log = QueryLog()
    for u in range(40):
        benign_user(log, f"benign-{u:02d}", rng, t0=float(u))
    for a in range(4):
        dfme_attacker(log, f"dfme-{a}", rng, t0=100.0 + a)
        ptq_attacker(log, f"ptq-{a}", rng, t0=200.0 + a)
    return log.to_arrow().to_pandas()


def test_the_log_records_what_was_asked_and_answered():
    from raysteal.oracle import TargetSpec, in_process_oracle
    from tests.oracle_fixtures import bpr_target, random_log

    data = random_log()
    oracle = in_process_oracle(TargetSpec.from_training_log(bpr_target(data), data))
    client = oracle.register_attacker("a", budget=10)
    lists = client.query(np.array([3, 5, 3]), 4)
    with pytest.raises(QueryBudgetExceeded):
        client.query(np.arange(20), 4)  # over budget: refused, no content
    frame = oracle.query_log().to_pandas()
    granted = frame[frame.granted].iloc[0]
    assert list(granted["lengths"]) == [1, 1, 1] and list(granted["last_items"]) == [3, 5, 3]
    assert [list(a) for a in granted["answers"]] == lists.tolist()
    assert granted["input_hashes"][0] == granted["input_hashes"][2] != granted["input_hashes"][1]
    refused = frame[~frame.granted].iloc[0]
    assert refused["lengths"] is None and refused["answers"] is None


def test_flags_mark_extensions_by_an_answered_item():
    log = QueryLog()
    s = np.array([4])
    send(log, "x", [s], 0.0)
    send(log, "x", [np.r_[s, answer(s)[3]]], 1.0)  # extends by an answered item
    nxt = np.r_[s, answer(s)[3]]
    outside = next(i for i in range(NUM_ITEMS) if i not in answer(nxt) and i not in nxt)
    send(log, "x", [np.r_[nxt, outside]], 2.0)  # extends, but by an item the answer did not hold
    send(log, "x", [np.array([9, 8, 7])], 3.0)  # continues nothing
    q = account_queries(log.to_arrow())["x"]
    continues, extends = query_flags(q)
    assert continues.tolist() == [False, True, True, False]
    assert extends.tolist() == [False, True, False, False]


def test_a_full_window_slid_by_one_item_continues():
    log = QueryLog()
    send(log, "w", [np.array([1, 2, 3])], 0.0)
    send(log, "w", [np.array([2, 3, answer(np.array([1, 2, 3]))[0]])], 1.0)  # the server's window, slid
    continues, extends = query_flags(account_queries(log.to_arrow())["w"])
    assert continues.tolist() == [False, True] and extends.tolist() == [False, True]


def test_an_autoregressive_attacker_scores_above_replayed_real_users(mixed_log):
    calibration = [f"benign-{u:02d}" for u in range(0, 40, 2)]
    detector = fit_detector(mixed_log[mixed_log.attacker.isin(calibration)], NUM_ITEMS)
    scores = detector.score(mixed_log[~mixed_log.attacker.isin(calibration)]).set_index("account")
    benign = scores[scores.index.str.startswith("benign")]
    dfme = scores[scores.index.str.startswith("dfme")]
    ptq = scores[scores.index.str.startswith("ptq")]
    assert len(benign) == 20 and len(dfme) == 4
    # every DFME query after the first of each sequence extends its prefix by an answered item
    assert np.allclose(dfme["autoregressive"], 14 / 15)
    assert benign["autoregressive"].max() < 0.7  # real users pick the answered item only sometimes
    assert dfme["score"].min() > benign["score"].max()
    assert dfme["content_score"].min() > benign["content_score"].max()  # without volume or rate too
    assert (ptq["fresh_starts"] == 1.0).all() and benign["fresh_starts"].max() < 0.2
    assert ptq["content_score"].min() > benign["content_score"].max()
    threshold = detector.threshold(0.05)
    assert (dfme["score"] > threshold).all()


def test_evaluation_reports_auc_and_fidelity_before_the_flag(mixed_log):
    accounts = pd.DataFrame({"account": sorted(mixed_log.attacker.unique())})
    accounts["role"] = np.where(accounts.account.str.startswith("benign"), "benign", "attacker")
    accounts["attack"] = accounts.account.str.split("-").str[0]
    accounts["budget"] = np.where(accounts.role == "benign", 12, 90)
    attackers = accounts[accounts.role == "attacker"].account
    # an attacker of the same attack that stopped after 2 queries (it has no rows in this log)
    accounts = pd.concat([accounts, pd.DataFrame([{"account": "dfme-small", "role": "attacker", "attack": "dfme", "budget": 2}])])
    outcomes = pd.DataFrame(
        {"account": list(attackers) + ["dfme-small"], "queries": [90] * len(attackers) + [2], "fidelity": [0.6] * len(attackers) + [0.05]}
    )
    per_account, per_group, _ = evaluate_detection(mixed_log, accounts, outcomes, NUM_ITEMS, fpr=0.05)
    assert set(per_group.attack) == {"dfme", "ptq"}
    assert (per_group.auc == 1.0).all() and (per_group.benign == 20).all()
    assert not per_account.account.isin([f"benign-{u:02d}" for u in range(0, 40, 2)]).any()  # calibration never scored
    dfme = per_account[per_account.attack == "dfme"]
    assert (dfme.flagged_at == 2).all()  # flagged at the first checkpoint: one-item inputs, random items
    # at 2 queries only dfme-small had finished: that is what a DFME attacker had stolen by then
    assert (dfme.fidelity_before_flag == 0.05).all()
    assert per_group.set_index("attack").loc["dfme", "fidelity_final"] == 0.6


def test_auc_on_hand_cases():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([1.0, 1.0], [False, True]) == 0.5  # a tie counts one half
    assert roc_auc([3, 2, 1], [1, 0, 0]) == 1.0 and roc_auc([3, 2, 1], [0, 1, 1]) == 0.0
    fpr, tpr, thr = roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thr[0] == np.inf
    # the trapezoid under the curve is the AUC
    assert np.isclose(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2), 0.75)


def test_gtest_z_is_about_zero_for_draws_of_the_reference_and_grows_with_evidence():
    rng = np.random.default_rng(0)
    ref = np.full(10, 0.1)
    null = [gtest_z(np.bincount(rng.integers(0, 10, n), minlength=10), ref) for n in (20, 200, 2000) for _ in range(200)]
    assert abs(np.mean(null)) < 0.5  # chi-square(9) standardised: mean ~0 whatever n
    skewed = [gtest_z(np.bincount(rng.integers(0, 5, n), minlength=10), ref) for n in (20, 200, 2000)]
    assert 2 < skewed[0] < skewed[1] < skewed[2]  # half the bins never drawn: stronger with more queries
    assert gtest_z(np.zeros(10), ref) == 0.0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: roc_auc([0.1, 0.2], [1, 1]), ConfigError, "both attackers and benign"),
        (lambda: roc_auc([0.1], [1, 0]), ConfigError, "differ in length"),
        (lambda: roc_auc([np.nan, 1], [1, 0]), ConfigError, "NaN"),
        (lambda: roc_auc([0, 1], [2, 0]), ConfigError, "0/1"),
        (lambda: account_queries(QueryLog().to_arrow()), DataFileError, "no granted query"),
        (lambda: account_queries(pd.DataFrame({"attacker": ["a"], "time": [0], "granted": [True]})), DataFileError, "no column"),
        (lambda: fit_detector(QueryLog().to_arrow(), 10), DataFileError, "empty log"),
        (lambda: fit_detector(QueryLog().to_arrow(), 0), ConfigError, "catalogue"),
        (lambda: fit_detector(QueryLog().to_arrow(), 10, ("nope",)), ConfigError, "features"),
    ],
)
def test_bad_input_is_refused_in_one_line(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_calibration_needs_two_benign_accounts_and_a_sane_fpr(mixed_log):
    with pytest.raises(ConfigError, match="at least 2 benign"):
        fit_detector(mixed_log[mixed_log.attacker == "benign-00"], NUM_ITEMS)
    detector = fit_detector(mixed_log[mixed_log.attacker.str.startswith("benign")], NUM_ITEMS)
    for bad in (-0.1, 0.0, 1.0, True, float("nan")):
        with pytest.raises(ConfigError, match=r"false-positive rate must be a number in \(0, 1\)"):
            detector.threshold(bad)


def test_detection_reads_only_the_log(mixed_log):
    """The detector's modules import nothing that holds a model (only the log's own module), and
    a log stripped to its schema scores the same as one carrying anything else."""
    import ast
    from pathlib import Path

    import raysteal.detection

    allowed = {"__future__", "math", "dataclasses", "typing", "numpy", "pandas", "pyarrow", "raysteal.errors", "raysteal.oracle.querylog"}
    for path in Path(raysteal.detection.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for name in names:
                    assert name in allowed or name.startswith("raysteal.detection"), f"{path.name} imports {name}"
    querylog = Path(raysteal.detection.__file__).parent.parent / "oracle" / "querylog.py"
    imported = {n.module for n in ast.walk(ast.parse(querylog.read_text())) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "collections.abc", "pathlib", "typing", "raysteal.errors", "raysteal.oracle.ledger"}
    detector = fit_detector(mixed_log[mixed_log.attacker.str.startswith("benign")], NUM_ITEMS)
    bare = mixed_log[[f.name for f in QUERY_LOG_SCHEMA]]
    a = detector.score(mixed_log.assign(secret_label=1)).drop(columns=[]).set_index("account")
    b = detector.score(bare).set_index("account")
    pd.testing.assert_frame_equal(a, b)
    assert list(FEATURES) == [c for c in a.columns if c in FEATURES]


def test_benign_replay_uses_held_out_histories():
    from raysteal.data.interactions import Interactions
    from raysteal.distributed.benign import benign_accounts, replay_inputs, schedule
    from raysteal.experiment.simulate_config import BenignTraffic

    assert [s.tolist() for s in replay_inputs(np.array([5, 6, 7, 8]), 3, None)] == [[5, 6], [5, 6, 7], [5, 6, 7, 8]]
    assert [s.tolist() for s in replay_inputs(np.array([5, 6, 7, 8]), 2, 2)] == [[6, 7], [7, 8]]  # the server's window

    def log(users: int, offset: int) -> Interactions:
        u = np.repeat(np.arange(users), 6)
        items = (np.tile(np.arange(6), users) + offset + 7 * u) % 100
        return Interactions(users=u, items=items, num_users=users, num_items=100, timestamps=np.tile(np.arange(6), users))

    class Data:
        train, auxiliary = log(30, 0), log(10, 50)

    traffic = BenignTraffic(accounts=8, queries=3, rate=2.0, source="auxiliary", seed=1)
    accounts = benign_accounts(Data, traffic, sequential=True, max_len=None)
    assert len({a.user for a in accounts}) == 8 and all(a.account.startswith("benign-") for a in accounts)
    for a in accounts:  # each account replays prefixes of its own held-out (auxiliary) user's history
        history = Data.auxiliary.sequence(a.user)
        assert [s.tolist() for s in a.inputs] == [history[:e].tolist() for e in (4, 5, 6)]
    events = schedule(accounts, rate=2.0, seed=0)
    assert len(events) == 24 and [e[0] for e in events] == sorted(e[0] for e in events)
    gaps = np.diff([e[0] for e in events if e[1] == 0])
    assert np.allclose(gaps, 0.5)  # rate 2 queries/s
    with pytest.raises(RaystealError, match=r"simulation\.benign\.accounts: 11 accounts, but the auxiliary users hold only 10"):
        benign_accounts(Data, BenignTraffic(accounts=11, source="auxiliary"), sequential=True, max_len=None)
    with pytest.raises(RaystealError, match=r"source: auxiliary users are unknown to a collaborative target"):
        benign_accounts(Data, BenignTraffic(accounts=2, source="auxiliary"), sequential=False, max_len=None)
    own = benign_accounts(Data, BenignTraffic(accounts=2, queries=3, source="target"), sequential=False, max_len=None)
    assert [[int(x[0]) for x in a.inputs] for a in own] == [[a.user] * 3 for a in own]  # its own id, each time


def test_oracle_core_record_keeps_its_old_call():
    """A caller that passes no content still logs (content columns null)."""
    log = QueryLog()
    log.append("a", "r", 2, 5, True, "", "none", 1.0)
    frame = log.to_arrow().to_pandas()
    assert frame.loc[0, "answers"] is None and frame.loc[0, "count"] == 2
    assert "inputs" in OracleCore.record.__code__.co_varnames
