"""DFME (Yue et al. 2021): synthesis under exact budgets, the ranking loss, the student loop,
evaluation helpers and configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_fixtures import toy_log

from raysteal.data.splits import leave_one_out
from raysteal.errors import ConfigError
from raysteal.extraction import ExtractionSet, SequenceKnowledge, make_extraction_config, run_extraction
from raysteal.extraction.evaluate import extraction_metrics, ndcg_agreement, next_item_metrics, student_lists
from raysteal.extraction.losses import ranking_loss, ranking_loss_terms
from raysteal.extraction.student import (
    dfme_objective,
    keep_positions,
    prefix_buckets,
    prefix_rows,
    sample_negatives,
    scores_in_one_pass,
    student_hidden,
    train_student,
)
from raysteal.extraction.synthesis import label_sequences, synthesize
from raysteal.extraction.types import StudentBatch
from raysteal.metrics import list_kl
from raysteal.models.base import PAD
from raysteal.oracle import TargetSpec, in_process_oracle
from raysteal.training import fit, seeded_model

NUM_ITEMS = 40
MAX_LEN = 8


class SpyClient:
    """Exposes only what an attacker may touch; records every request and answer."""

    def __init__(self, client):
        self._client = client
        self.requests: list[np.ndarray] = []
        self.answers: list[np.ndarray] = []

    def query(self, inputs, k):
        answer = self._client.query(inputs, k)
        self.requests.append(np.array(inputs, copy=True))
        self.answers.append(np.array(answer, copy=True))
        return answer

    @property
    def remaining_budget(self) -> int:
        return self._client.remaining_budget

    @property
    def num_items(self) -> int:
        return self._client.num_items

    @property
    def spent(self) -> int:
        return self._client.spent

    @property
    def info(self):
        return self._client.info


@pytest.fixture(scope="module")
def toy():
    """A small SASRec teacher trained for a few epochs on the toy successor log."""
    torch.set_num_threads(1)
    log = toy_log(num_users=120, num_items=NUM_ITEMS, seed=0)
    split = leave_one_out(log)
    teacher = seeded_model({"model": "sasrec", "embedding_dim": 16, "max_len": MAX_LEN}, log.num_users, log.num_items, seed=0)
    fit(teacher, split, {"epochs": 15, "batch_size": 64, "lr": 5e-3, "patience": 50}, seed=0, device="cpu", progress=False)
    return log, split, teacher


@pytest.fixture()
def oracle(toy):
    black_box = in_process_oracle(TargetSpec(model=toy[2]), device="cpu")
    yield black_box
    black_box.close()


def _items(row: np.ndarray) -> tuple[int, ...]:
    return tuple(int(x) for x in row if x != PAD)


# ------------------------------------------------------------------ synthesis and budgets
@pytest.mark.parametrize("strategy", ["autoregressive", "random"])
def test_query_budget_is_spent_exactly_and_growth_stops(oracle, strategy):
    client = oracle.register_attacker("a")
    data = synthesize(
        client, strategy=strategy, num_sequences=10, max_len=5, k=6, rng=np.random.default_rng(0), query_batch=4, query_budget=37
    )
    assert data.queries == client.spent == 37 == int(data.queried.sum())
    lengths = (data.sequences != PAD).sum(1)
    assert sorted(lengths.tolist()) == [3, 3, 3] + [4] * 7  # 3 full steps of 10, then 7 of the 4th
    assert np.array_equal(data.queried, data.sequences != PAD)  # every item's prefix answered, nothing else
    assert (data.lists[~data.queried] == -1).all()


def test_client_budget_and_sequence_budget(oracle):
    limited = oracle.register_attacker("limited", budget=25)
    data = synthesize(limited, strategy="autoregressive", num_sequences=100, max_len=MAX_LEN, k=5, rng=np.random.default_rng(1))
    assert data.queries == limited.spent == 25 and limited.remaining_budget == 0
    assert data.num_sequences == 25 and ((data.sequences != PAD).sum(1) == 1).all()  # budget < N: one query each
    free = oracle.register_attacker("free")
    data = synthesize(free, strategy="random", num_sequences=6, max_len=MAX_LEN, k=5, rng=np.random.default_rng(1))
    assert data.queries == free.spent == 6 * MAX_LEN and data.sequences.shape == (6, MAX_LEN)
    with pytest.raises(ConfigError, match="budget"):
        synthesize(limited, strategy="random", num_sequences=3, max_len=4, k=5, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="budget"):
        synthesize(free, strategy="random", num_sequences=3, max_len=4, k=5, rng=np.random.default_rng(0), query_budget=0)


def test_autoregressive_items_come_from_previous_answer_and_lists_are_the_answers(oracle):
    spy = SpyClient(oracle.register_attacker("spy"))
    data = synthesize(spy, strategy="autoregressive", num_sequences=9, max_len=MAX_LEN, k=7, rng=np.random.default_rng(2), query_batch=4)
    seqs, lists = data.sequences, data.lists
    # each appended item was drawn from the answer for the prefix before it
    assert np.all((seqs[:, 1:, None] == lists[:, :-1, :]).any(-1))
    # no sequence repeats an item (the black box excludes the query's items)
    assert all(len(set(_items(row))) == len(_items(row)) for row in seqs)
    # lists are exactly what the client returned, prefix by prefix
    answered = {}
    for request, answer in zip(spy.requests, spy.answers):
        for row, ans in zip(request, answer):
            answered[_items(row)] = ans
    for n, t in zip(*np.nonzero(data.queried)):
        assert np.array_equal(lists[n, t], answered[_items(seqs[n, : t + 1])])
    # only ids travel: every answer is an integer array, the spy exposes no scoring at all
    assert all(np.issubdtype(a.dtype, np.integer) for a in spy.answers)
    assert not hasattr(spy, "score") and not hasattr(spy._client, "score")


def test_random_sequences_have_distinct_items(oracle):
    data = synthesize(
        oracle.register_attacker("r"), strategy="random", num_sequences=50, max_len=MAX_LEN, k=3, rng=np.random.default_rng(3)
    )
    assert all(len(set(row.tolist())) == MAX_LEN for row in data.sequences)
    assert data.sequences.min() >= 0 and data.sequences.max() < NUM_ITEMS


def test_label_sequences_all_last_and_budget(oracle):
    seqs = np.array([[PAD, PAD, 3, 4, 5], [1, 2, 6, 7, 8], [PAD, PAD, PAD, PAD, PAD]])
    spy = SpyClient(oracle.register_attacker("lab"))
    data = label_sequences(spy, seqs, k=4, prefixes="all", query_batch=3)
    assert data.queries == spy.spent == 8
    assert np.array_equal(data.queried, seqs != PAD)
    for n, t in zip(*np.nonzero(data.queried)):
        prefix = [x for x in seqs[n, : t + 1] if x != PAD]
        assert np.array_equal(data.lists[n, t], spy._client.query([prefix], 4)[0])
    last = label_sequences(oracle.register_attacker("last"), seqs, k=4, prefixes="last")
    assert last.queries == 2 and np.array_equal(np.argwhere(last.queried), [[0, 4], [1, 4]])
    cut = label_sequences(oracle.register_attacker("cut"), seqs, k=4, query_budget=5)
    assert cut.queries == 5  # shortest prefixes first: 1- and 2-item prefixes of both, then row 0's 3-item one
    assert cut.queried[0].tolist() == [False, False, True, True, True]
    assert cut.queried[1].tolist() == [True, True, False, False, False]
    broke = oracle.register_attacker("broke-labels", budget=0)
    with pytest.raises(ConfigError, match="budget 0"):  # not a set of empty labels to train on
        label_sequences(broke, seqs, k=4)
    with pytest.raises(ConfigError, match="budget 0"):
        label_sequences(oracle.register_attacker("zero-labels"), seqs, k=4, query_budget=0)


def test_spaced_prefixes_spread_a_budget_evenly_over_each_sequence():
    from raysteal.extraction.synthesis import spaced_prefixes

    rows, spans = spaced_prefixes(np.array([10, 5, 0, 20]), 7)  # 35 prefixes, 7 bought: shares 2, 1, 0, 4
    assert rows.tolist() == [0, 0, 1, 3, 3, 3, 3]
    assert spans.tolist() == [5, 10, 5, 5, 10, 15, 20]  # every n/m items, the whole sequence last
    rows, spans = spaced_prefixes(np.array([3, 2]), 10)  # a budget past every prefix buys every prefix
    assert rows.tolist() == [0, 0, 0, 1, 1] and spans.tolist() == [1, 2, 3, 1, 2]
    lengths = np.random.default_rng(0).integers(1, 200, size=300)
    for budget in (1, 77, 5_000, int(lengths.sum()) - 1):
        rows, spans = spaced_prefixes(lengths, budget)
        assert len(rows) == budget and (spans >= 1).all() and (spans <= lengths[rows]).all()
        assert len(set(zip(rows.tolist(), spans.tolist()))) == budget  # no prefix twice


def test_label_sequences_spaced_buys_long_prefixes_too(oracle):
    seqs = np.array([[PAD, PAD, 3, 4, 5, 6], [1, 2, 6, 7, 8, 9], [PAD] * 6])
    spy = SpyClient(oracle.register_attacker("spaced"))
    data = label_sequences(spy, seqs, k=4, prefixes="spaced", query_budget=5)
    assert data.queries == spy.spent == 5
    assert data.queried[0].tolist() == [False, False, False, True, False, True]  # 4 items: every 2nd prefix
    assert data.queried[1].tolist() == [False, True, False, True, False, True]  # 6 items: every 2nd
    for n, t in zip(*np.nonzero(data.queried)):
        prefix = [x for x in seqs[n, : t + 1] if x != PAD]
        assert np.array_equal(data.lists[n, t], spy._client.query([prefix], 4)[0])
    every = label_sequences(oracle.register_attacker("spaced-all"), seqs, k=4, prefixes="spaced")
    assert np.array_equal(every.queried, seqs != PAD)  # no budget: every prefix, as "all"
    with pytest.raises(ConfigError, match="budget 0"):
        label_sequences(oracle.register_attacker("spaced-zero"), seqs, k=4, prefixes="spaced", query_budget=0)


# ------------------------------------------------------------------ the loss
def test_ranking_loss_matches_hand_computation():
    list_scores = torch.tensor([[3.0, 2.8, 1.0]])
    neg_scores = torch.tensor([[2.9, 0.0]])
    pairs, negatives = ranking_loss_terms(list_scores, neg_scores, margin=0.5)
    # pairs: max(0, .5-.2)=.3, max(0, .5-1.8)=0 -> .15; negatives pair p -> (list p%3, neg p%2):
    # (3 vs 2.9) .4, (2.8 vs 0) 0, (1 vs 2.9) 2.4 -> 2.8/3
    assert pairs.item() == pytest.approx(0.15)
    assert negatives.item() == pytest.approx(2.8 / 3)
    # from full scores with padding: list [2, 0, -1], negatives [1, -1]
    scores = torch.tensor([[1.0, 0.2, 1.1]])
    loss, parts = ranking_loss(scores, torch.tensor([[2, 0, -1]]), torch.tensor([[1, -1]]), margin=0.5)
    # one valid pair (2,0): max(0, .5-.1)=.4 ; negative pairs: (2 vs 1) valid: max(0, .5-.9)=0 ; (0 vs -1) masked ; (-1) masked
    assert parts["rank_pairs"].item() == pytest.approx(0.4)
    assert parts["rank_negatives"].item() == pytest.approx(0.0)
    assert loss.item() == pytest.approx(0.4)


def test_fused_hinge_gives_the_composed_ops_value_and_gradients_bit_for_bit():
    """ranking_loss_terms' fused hinge: the same loss and gradients as relu / masked mean composed."""
    import torch.nn.functional as F

    def composed(list_scores, neg_scores, list_valid, neg_valid, margin=0.5):
        def masked_mean(values, mask):
            weight = mask.to(values.dtype)
            return (values * weight).sum() / weight.sum().clamp(min=1.0)

        pairs = masked_mean(F.relu(margin - (list_scores[:, :-1] - list_scores[:, 1:])), list_valid[:, :-1] & list_valid[:, 1:])
        k, q = list_scores.shape[1], neg_scores.shape[1]
        idx = torch.arange(max(k, q))
        pos, neg = list_scores[:, idx % k], neg_scores[:, idx % q]
        return pairs, masked_mean(F.relu(margin - (pos - neg)), list_valid[:, idx % k] & neg_valid[:, idx % q])

    gen = torch.Generator().manual_seed(0)
    for k, q in ((6, 6), (6, 4), (3, 7)):
        scores = torch.randn(50, k + q, generator=gen)
        list_valid = torch.rand(50, k, generator=gen) > 0.2
        neg_valid = torch.rand(50, q, generator=gen) > 0.2
        results = []
        for fn in (composed, lambda *a: ranking_loss_terms(*a[:2], margin=0.5, list_valid=a[2], neg_valid=a[3])):
            leaf = scores.clone().requires_grad_(True)
            terms = fn(leaf[:, :k], leaf[:, k:], list_valid, neg_valid)
            sum(terms).backward()
            results.append(([t.item() for t in terms], leaf.grad))
        assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])


def test_dfme_objective_on_the_needed_scores_equals_the_full_catalogue_loss():
    """DFMEObjective scores only the listed items and the negatives (SASRec on a CPU): the same loss
    and gradients as ranking_loss on the full-catalogue scores, with dropout off and on (same masks),
    with padded lists, masked negatives and k != q."""
    from raysteal.extraction.student import DFMEObjective, student_scores

    student = seeded_model({"model": "sasrec", "embedding_dim": 16, "max_len": MAX_LEN}, 0, NUM_ITEMS, seed=0)
    gen = torch.Generator().manual_seed(1)
    seqs = torch.randint(0, NUM_ITEMS, (6, MAX_LEN), generator=gen)
    seqs[:2, :3] = PAD
    rows, cols = torch.nonzero(seqs != PAD, as_tuple=True)
    for k, q in ((5, 5), (5, 3)):
        lists = torch.stack([torch.randperm(NUM_ITEMS, generator=gen)[:k] for _ in range(len(rows))])
        lists[::4, -2:] = -1  # shorter answers
        negatives = sample_negatives(lists, q, NUM_ITEMS, gen)
        negatives[::3, 0] = -1
        batch = StudentBatch(torch.arange(6), seqs, rows, cols, lists, negatives)
        for train in (False, True):
            student.train(train)
            results = []
            for objective in (lambda s, b: ranking_loss(student_scores(s, b).float(), b.lists, b.negatives, 0.5), DFMEObjective(0.5)):
                student.zero_grad(set_to_none=True)
                torch.manual_seed(3)  # the same dropout masks on both paths
                loss, parts = objective(student, batch)
                loss.backward()
                results.append((loss.detach(), parts, [p.grad.clone() for p in student.parameters()]))
            (old_loss, old_parts, old_grads), (new_loss, new_parts, new_grads) = results
            assert torch.allclose(old_loss, new_loss, rtol=1e-6, atol=1e-7)
            assert all(torch.allclose(old_parts[n], new_parts[n], rtol=1e-6, atol=1e-7) for n in old_parts)
            for old, new in zip(old_grads, new_grads):
                assert float((old - new).abs().max()) <= 1e-5 * float(old.abs().max()) + 1e-12  # float rounding only
    student.eval()


def _sort_and_search_negatives(lists, count, num_items, generator):
    """sample_negatives before the membership bitmap: each list sorted and searched."""
    rows = lists.shape[0]
    negatives = torch.randint(0, num_items, (rows, count), generator=generator)
    if count == 0 or rows == 0 or lists.shape[1] == 0:
        return negatives
    ordered = lists.long().sort(dim=1).values.contiguous()

    def in_list(row_ids, values):
        table = ordered[row_ids]
        return table.gather(1, torch.searchsorted(table, values).clamp_(max=ordered.shape[1] - 1)) == values

    hit_rows, hit_cols = torch.nonzero(in_list(torch.arange(rows), negatives), as_tuple=True)
    for _ in range(4):
        if hit_rows.numel() == 0:
            return negatives
        draws = torch.randint(0, num_items, (hit_rows.numel(),), generator=generator)
        negatives[hit_rows, hit_cols] = draws
        still = in_list(hit_rows, draws[:, None]).squeeze(1)
        hit_rows, hit_cols = hit_rows[still], hit_cols[still]
    negatives[hit_rows, hit_cols] = -1
    return negatives


def test_negatives_are_those_of_the_sort_and_search_version(monkeypatch):
    """The membership bitmap finds the same collisions: the same draws, the same negatives."""
    import raysteal.extraction.student as student_module

    monkeypatch.setattr(student_module, "_LISTED_ROWS", 7)  # several bitmap blocks, a ragged last one
    gen = torch.Generator().manual_seed(0)
    for catalogue, k, count, dtype in ((40, 8, 30, torch.int64), (10, 8, 12, torch.int32), (25, 6, 0, torch.int64)):
        lists = torch.stack([torch.randperm(catalogue, generator=gen)[:k] for _ in range(50)]).to(dtype)
        lists[::5, -3:] = -1  # shorter answers: padding never collides
        seed = int(torch.randint(0, 2**31, (1,), generator=gen))
        mine = sample_negatives(lists, count, catalogue, torch.Generator().manual_seed(seed))
        theirs = _sort_and_search_negatives(lists, count, catalogue, torch.Generator().manual_seed(seed))
        assert torch.equal(mine, theirs)
        if catalogue == 10:
            assert (mine == -1).any()  # the stress case leaves masked collisions, as before
    empty = torch.zeros(0, 4, dtype=torch.long)
    assert sample_negatives(empty, 5, 10, gen).shape == (0, 5)


def test_negatives_avoid_the_list_and_positions_are_subsampled():
    gen = torch.Generator().manual_seed(0)
    for catalogue, least_valid in ((40, 0.99), (10, 0.5)):  # 8 listed items of 40, and of 10 (a stress case)
        lists = torch.stack([torch.randperm(catalogue, generator=gen)[:8] for _ in range(50)])
        negatives = sample_negatives(lists, 30, catalogue, gen)
        assert negatives.shape == (50, 30) and negatives.max() < catalogue
        valid = negatives >= 0  # collisions left after the redraw rounds are masked, never kept
        assert valid.float().mean() > least_valid
        assert not (negatives[:, :, None] == lists[:, None, :]).any(-1)[valid].any()
    queried = torch.tensor([[True] * 6, [False, False, True, True, True, True], [False] * 5 + [True]])
    kept = keep_positions(queried, 2, gen)
    assert kept.sum(1).tolist() == [2, 2, 1] and not (kept & ~queried).any()


def test_batches_align_lists_with_prefixes_also_when_realigned():
    from raysteal.extraction.student import _BatchMaker

    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 30, (16, 6))
    seqs[:4, :2] = PAD  # shorter sequences, left-padded
    lists = np.full((16, 6, 3), -1, dtype=np.int32)
    rows, cols = np.nonzero(seqs != PAD)
    lists[rows, cols, 0] = seqs[rows, cols]  # encode each prefix: its last item and its length
    lists[rows, cols, 1] = (np.cumsum(seqs != PAD, axis=1))[rows, cols]
    data = ExtractionSet(seqs, lists, queries=int(len(rows)), extras={"seq": seqs.copy()})
    gen = torch.Generator().manual_seed(0)
    for realign in (0.0, 1.0):
        maker = _BatchMaker(data, torch.device("cpu"), 30, 2, positions=3 if realign else None, realign=realign)
        moved = False
        for _ in range(5):
            batch = maker(torch.randperm(16, generator=gen)[:8], gen)
            last_item = batch.inputs[batch.rows, batch.cols]
            length = (prefix_rows(batch.inputs, batch.rows, batch.cols) != PAD).sum(1)
            assert torch.equal(last_item, batch.lists[:, 0]) and torch.equal(length, batch.lists[:, 1])
            lead = 6 - batch.inputs.shape[1]  # per-position extras keep the full width, shifted like the inputs
            assert torch.equal(batch.extras["seq"][batch.rows, batch.cols + lead], last_item)
            full = torch.nn.functional.pad(batch.inputs, (lead, 0), value=PAD)
            moved |= not torch.equal(full, torch.as_tensor(seqs)[batch.sequence_ids])
            if realign:
                assert (torch.bincount(batch.rows, minlength=8) <= 3).all()
        assert moved == bool(realign)


# ------------------------------------------------------------------ scoring prefixes
def test_one_pass_scoring_equals_scoring_each_prefix():
    seqs = torch.tensor([[PAD, PAD, 3, 4, 5, 9], [1, 2, 6, 7, 8, 0]])
    rows, cols = torch.nonzero(seqs != PAD, as_tuple=True)
    batch = StudentBatch(
        torch.arange(2), seqs, rows, cols, torch.zeros(len(rows), 1, dtype=torch.long), torch.zeros(len(rows), 0, dtype=torch.long)
    )
    prefixes = prefix_rows(seqs, rows, cols)
    assert prefixes[0].tolist() == [PAD] * 5 + [3] and prefixes[3].tolist() == [PAD, PAD, 3, 4, 5, 9]
    gru = seeded_model({"model": "gru4rec", "embedding_dim": 8, "hidden_size": 8, "max_len": 6}, 0, 10, seed=0).eval()
    assert scores_in_one_pass(gru)
    with torch.no_grad():
        assert torch.allclose(student_hidden(gru, batch), gru.represent(gru.prepare(prefixes), *_last(prefixes)), atol=1e-5)
    bert = seeded_model({"model": "bert4rec", "embedding_dim": 8, "max_len": 7}, 0, 10, seed=0).eval()
    assert not scores_in_one_pass(bert)
    with torch.no_grad():  # non-causal students score each prefix as its own sequence
        assert torch.allclose(bert.logits(student_hidden(bert, batch)), bert.score(prefixes), atol=1e-5)
        for buckets in (1, 3, 100):  # length groups change the padding, never the states
            assert torch.allclose(bert.logits(student_hidden(bert, batch, buckets=buckets)), bert.score(prefixes), atol=1e-5)
        none = torch.zeros(0, dtype=torch.long)
        assert student_hidden(bert, StudentBatch(torch.arange(2), seqs, none, none, none[:, None], none[:, None])).shape == (0, 8)


def test_prefix_buckets_partition_prefixes_by_length():
    spans = torch.tensor([5, 1, 4, 1, 6, 2, 3, 6, 2])
    groups = prefix_buckets(spans, 3)
    assert sorted(torch.cat(groups).tolist()) == list(range(len(spans)))  # every prefix exactly once
    assert len(groups) == 3 and all(spans[a].max() <= spans[b].min() for a, b in zip(groups, groups[1:]))
    assert [len(g) for g in prefix_buckets(spans, 100)] == [1] * len(spans)
    assert [len(g) for g in prefix_buckets(spans, 0)] == [len(spans)]
    (empty,) = prefix_buckets(spans[:0], 3)  # no prefixes: one empty group, not none
    assert empty.numel() == 0


def _last(x: torch.Tensor):
    return torch.arange(len(x)), torch.full((len(x),), x.shape[1] - 1)


# ------------------------------------------------------------------ the recipe end to end
def test_dfme_beats_a_random_student(toy, oracle):
    log, split, _ = toy
    client = oracle.register_attacker("dfme", budget=200 * MAX_LEN)
    config = {
        "attack": "dfme",
        "student": {"model": "sasrec", "embedding_dim": 16},
        "k": 10,
        "epochs": 12,
        "batch_size": 50,
        "lr": 5e-3,
        "num_negatives": 10,
        "budget_queries": 200 * MAX_LEN,
    }
    result = run_extraction(config, SequenceKnowledge(num_items=NUM_ITEMS, max_len=MAX_LEN), client, seed=0)
    assert result.queries == client.spent == 200 * MAX_LEN and result.info["sequences"] == 200
    history = result.info["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    seqs = log.padded_sequences(MAX_LEN)
    teacher = oracle.register_attacker("judge").query(seqs, 10)
    head = np.zeros(len(seqs), dtype=bool)
    head[:24] = True
    stolen = extraction_metrics(student_lists(result.clone, seqs, 10), teacher, head=head)
    random_student = seeded_model({"model": "sasrec", "embedding_dim": 16, "max_len": MAX_LEN}, 0, NUM_ITEMS, seed=7)
    baseline = extraction_metrics(student_lists(random_student, seqs, 10), teacher, head=head)
    assert stolen["agr@10"] > baseline["agr@10"] + 0.3, (stolen, baseline)
    assert stolen["agr@1"] > baseline["agr@1"]


def test_train_student_is_deterministic_and_stops_when_asked():
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 20, (12, 5))
    lists = rng.integers(0, 20, (12, 5, 4)).astype(np.int32)
    data = ExtractionSet(sequences=seqs, lists=lists, queries=60)
    weights = []
    for _ in range(2):
        student = seeded_model({"model": "sasrec", "embedding_dim": 8, "max_len": 5}, 0, 20, seed=1)
        seen = []
        stats = train_student(
            student,
            data,
            dfme_objective(0.5),
            epochs=5,
            batch_size=4,
            lr=1e-2,
            num_negatives=3,
            seed=3,
            realign=0.5,
            on_epoch=lambda epoch, s: seen.append((epoch, s)) or epoch == 2,
        )
        assert stats["epochs_run"] == 2 and stats["stopped_early"] and [e for e, _ in seen] == [1, 2]
        assert {"loss", "rank_pairs", "rank_negatives", "epoch_seconds", "prefixes"} <= set(seen[0][1])
        weights.append(torch.cat([p.detach().flatten() for p in student.parameters()]))
    assert torch.equal(weights[0], weights[1])
    too_long = seeded_model({"model": "sasrec", "embedding_dim": 8, "max_len": 3}, 0, 20, seed=1)
    with pytest.raises(ConfigError, match="max_len"):
        train_student(too_long, data, dfme_objective(), epochs=1, batch_size=4, lr=1e-2)


def test_training_resumed_from_its_state_ends_where_an_uninterrupted_run_does(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = ExtractionSet(sequences=rng.integers(0, 20, (12, 5)), lists=rng.integers(0, 20, (12, 5, 4)).astype(np.int32), queries=60)
    config = {"model": "sasrec", "embedding_dim": 8, "max_len": 5, "dropout": 0.3}  # dropout draws on the global RNG
    options = {"batch_size": 4, "lr": 1e-2, "num_negatives": 3, "seed": 3, "realign": 0.5}

    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    whole = seeded_model(config, 0, 20, seed=1)
    uninterrupted = train_student(whole, data, dfme_objective(0.5), epochs=4, **options)
    state = tmp_path / "student.state"
    first = seeded_model(config, 0, 20, seed=1)
    train_student(first, data, dfme_objective(0.5), epochs=2, state_path=state, **options)  # the first sitting
    resumed_model = seeded_model(config, 0, 20, seed=1)  # a new process: fresh weights, the state on disk
    seen = []
    resumed = train_student(
        resumed_model, data, dfme_objective(0.5), epochs=4, state_path=state, on_epoch=lambda epoch, s: seen.append(epoch), **options
    )
    assert capsys.readouterr().err == ""  # per-epoch lines only when progress=True
    assert seen == [3, 4] and resumed["epochs_run"] == 4
    assert torch.equal(weights(resumed_model), weights(whole))
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in uninterrupted["history"]]
    assert resumed["prefixes"] == uninterrupted["prefixes"]
    with pytest.raises(ConfigError, match="another run"):  # a state made for other settings is refused
        train_student(seeded_model(config, 0, 20, seed=1), data, dfme_objective(0.5), epochs=5, state_path=state, **{**options, "lr": 5e-3})
    state.write_bytes(b"not a state")
    with pytest.raises(ConfigError, match="unreadable"):
        train_student(seeded_model(config, 0, 20, seed=1), data, dfme_objective(0.5), epochs=5, state_path=state, **options)


# ------------------------------------------------------------------ evaluation
def test_student_lists_exclude_input_items():
    student = seeded_model({"model": "sasrec", "embedding_dim": 8, "max_len": 6}, 0, 8, seed=0)
    seqs = np.array([[PAD, PAD, 1, 2, 3, 4], [2, 3, 4, 5, 6, 7]])
    lists = student_lists(student, seqs, 4, chunk=1)
    assert lists.shape == (2, 4) and lists.dtype == np.int64
    assert sorted(lists[0].tolist()) == [0, 5, 6, 7]
    assert sorted(lists[1, :2].tolist()) == [0, 1] and (lists[1, 2:] == -1).all()  # only 2 items left
    with torch.no_grad():
        scores = student.score(torch.as_tensor(seqs[:1]))[0]
    scores[[1, 2, 3, 4]] = -math.inf
    assert lists[0].tolist() == torch.topk(scores, 4).indices.tolist()


def test_extraction_metrics_on_hand_cases():
    teacher = np.array([list(range(10)), list(range(10, 20)), list(range(20, 30))])
    student = np.array([list(range(10)), [10, 11, 12, 13, 14, 90, 91, 92, 93, 94], [99] + list(range(21, 30))])
    head = np.array([True, False, False])
    m = extraction_metrics(student, teacher, head=head, test_items=np.array([3, 95, -1]))
    assert m["agr@10"] == pytest.approx((1.0 + 0.5 + 0.9) / 3)
    assert m["agr@1"] == pytest.approx(2 / 3)
    assert m["agr@10/head"] == 1.0 and m["agr@10/tail"] == pytest.approx(0.7)
    assert m["agr@1/head"] == 1.0 and m["agr@1/tail"] == pytest.approx(0.5)
    discount = 1 / np.log2(np.arange(10) + 2)
    ideal = ((10 - np.arange(10)) * discount).sum()
    assert ndcg_agreement(student, teacher)[1] == pytest.approx(((10 - np.arange(5)) * discount[:5]).sum() / ideal)
    assert ndcg_agreement(student, teacher)[2] == pytest.approx(((10 - np.arange(1, 10)) * discount[1:]).sum() / ideal)
    assert m["ndcg_agr@10/head"] == pytest.approx(1.0)
    # KL on the list: p ∝ exp(-rank); user 1's student lists the top 5 in place, ranks 5-9 unlisted (rank 10)
    p = np.exp(-np.arange(10.0)) / np.exp(-np.arange(10.0)).sum()
    q = np.exp(-np.r_[np.arange(5.0), np.full(5, 10.0)])
    kl_1 = float((p * np.log(p / (q / q.sum()))).sum())
    assert m["kl@10/head"] == pytest.approx(0.0, abs=1e-12) and kl_1 > 0
    assert m["kl@10"] == pytest.approx((0.0 + kl_1 + float(list_kl(teacher[2:], student[2:], 10)[0])) / 3)
    # user 0: item 3 at rank 3 for both; user 1: 95 missed by both; user 2 has no test item
    assert m["student_hr@10"] == pytest.approx(0.5) and m["teacher_ndcg@10"] == pytest.approx(0.5 / np.log2(5))
    assert next_item_metrics(student, np.array([0, 94, 21]), k=10) == pytest.approx(
        {"hr@10": 1.0, "ndcg@10": (1 + 1 / np.log2(11) + 1 / np.log2(3)) / 3}
    )


# ------------------------------------------------------------------ configs
def test_configs_validate_and_name_the_key():
    cfg = make_extraction_config({"attack": "dfme", "budget_sequences": 10})
    assert cfg.k == 100 and cfg.margin == 0.5 and cfg.synthesis == "autoregressive" and cfg.student == {"model": "sasrec"}
    assert cfg.student_config(50) == {"max_len": 50, "model": "sasrec"}
    assert make_extraction_config(cfg) is cfg
    assert make_extraction_config(cfg.model_dump()) == cfg  # round-trips
    with pytest.raises(ConfigError, match="temperture"):
        make_extraction_config({"attack": "dfme", "temperture": 2.0})
    with pytest.raises(ConfigError, match="nope"):
        make_extraction_config({"attack": "nope"})
    with pytest.raises(ConfigError, match="attack"):
        make_extraction_config({"k": 10})
    with pytest.raises(ConfigError, match=r"\bk\b"):
        make_extraction_config({"attack": "dfme", "k": 0})
    with pytest.raises(ConfigError, match="synthesis"):
        make_extraction_config({"attack": "dfme", "synthesis": "gan"})
    with pytest.raises(ConfigError, match="student"):
        make_extraction_config({"attack": "dfme", "student": {"embedding_dim": 8}})


def test_dfme_needs_a_budget(oracle):
    with pytest.raises(ConfigError, match="budget"):
        run_extraction({"attack": "dfme"}, SequenceKnowledge(num_items=NUM_ITEMS, max_len=MAX_LEN), oracle.register_attacker("x"), seed=0)


# ------------------------------------------------------------------ Zhu et al. on sequential targets
def test_zhu_sequential_recipes_spend_what_they_query(toy, oracle):
    log, split, _ = toy
    seqs = split.train.padded_sequences(MAX_LEN)
    knowledge = SequenceKnowledge(num_items=NUM_ITEMS, max_len=MAX_LEN, sequences=seqs[:12], auxiliary=seqs[60:])
    base = {
        "student": {"model": "gru4rec", "embedding_dim": 8, "hidden_size": 8},
        "epochs": 2,
        "data_epochs": 2,
        "aux_epochs": 1,
        "batch_size": 6,
        "data_batch_size": 16,
        "k": 10,
        "num_negatives": 10,
    }
    make_extraction_config({"attack": "seq_ptq", **base})  # validates; Zhu configs need real sequences
    assert make_extraction_config({"attack": "seq_ptq", **base}).uses_real_sequences
    ptd = oracle.register_attacker("ptd")
    assert run_extraction({"attack": "seq_ptd", **base}, knowledge, ptd, seed=0).queries == ptd.spent == 0
    ptq = oracle.register_attacker("ptq")
    result = run_extraction({"attack": "seq_ptq", **base}, knowledge, ptq, seed=0)
    assert result.queries == ptq.spent == 12 and result.info["epochs_run"] == 2  # one query per sequence ("last")
    ptaq = oracle.register_attacker("ptaq")
    result = run_extraction({"attack": "seq_ptaq", **base, "prefixes": "all", "budget_queries": 30}, knowledge, ptaq, seed=0)
    assert result.queries == ptaq.spent == 30 and len(result.info["aux_losses"]) == 1
    with pytest.raises(ConfigError, match="auxiliary"):
        run_extraction({"attack": "seq_ptaq", **base}, SequenceKnowledge(NUM_ITEMS, MAX_LEN, sequences=seqs[:12]), ptaq, seed=0)


def test_zhu_data_phases_are_trained_once_and_shared_between_runs(toy, oracle, tmp_path):
    """With a phase cache, the data phases (which never see the target) train once per key: PTD
    after PTQ of the same seed loads them and ends with the clone it trains without the cache;
    PTQ loading them ends with the clone of PTQ training them (the steal phase draws the same
    numbers); another seed, setting or the auxiliary pre-training is another key."""
    import torch

    log, split, _ = toy
    seqs = split.train.padded_sequences(MAX_LEN)
    knowledge = SequenceKnowledge(num_items=NUM_ITEMS, max_len=MAX_LEN, sequences=seqs[:12], auxiliary=seqs[60:])
    base = {"student": {"model": "gru4rec", "embedding_dim": 8, "hidden_size": 8}, "epochs": 2, "data_epochs": 2, "aux_epochs": 1}
    base.update(batch_size=6, data_batch_size=16, k=10, num_negatives=10)

    def run(attack: str, cache=tmp_path, seed: int = 0, **changes):
        name = f"{attack}-{seed}-{len(list(tmp_path.rglob('*.pt')))}-{cache is None}"
        return run_extraction(
            {"attack": attack, **base, **changes}, knowledge, oracle.register_attacker(name), seed=seed, phase_cache=cache
        )

    def same_weights(a, b) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.clone.state_dict().values(), b.clone.state_dict().values()))

    cold_ptq = run("seq_ptq")
    assert cold_ptq.info["phases_shared"] is False and len(list((tmp_path / "phases").glob("*.pt"))) == 1
    ptd, plain_ptd = run("seq_ptd"), run("seq_ptd", cache=None)
    assert ptd.info["phases_shared"] is True and ptd.info["data_losses"] == cold_ptq.info["data_losses"]
    assert "phases_shared" not in plain_ptd.info and same_weights(ptd, plain_ptd)
    warm_ptq = run("seq_ptq")
    assert warm_ptq.info["phases_shared"] is True and same_weights(warm_ptq, cold_ptq) and warm_ptq.queries == cold_ptq.queries
    assert not same_weights(ptd, cold_ptq)  # the steal phase did train on top
    for other in (run("seq_ptd", seed=1), run("seq_ptd", data_lr=2e-3), run("seq_ptaq", budget_queries=30)):
        assert other.info["phases_shared"] is False
    assert len(list((tmp_path / "phases").glob("*.pt"))) == 4
    # a damaged file is trained again and replaced, the run loses nothing
    for saved in (tmp_path / "phases").glob("*.pt"):
        saved.write_bytes(b"not a torch file")
    again = run("seq_ptq")
    assert again.info["phases_shared"] is False and same_weights(again, cold_ptq)
    assert run("seq_ptd").info["phases_shared"] is True


def test_zhu_data_phase_can_stop_on_the_attackers_own_held_out_items(toy, oracle, monkeypatch):
    """data_patience: the PTD phase validates on each sequence's held-out last item (no query,
    no target) and stops when that stops improving, keeping the best weights."""
    import raysteal.extraction.zhu_sequential as zhu

    log, split, _ = toy
    seqs = split.train.padded_sequences(MAX_LEN)
    knowledge = SequenceKnowledge(num_items=NUM_ITEMS, max_len=MAX_LEN, sequences=seqs[:40])
    base = {"student": {"model": "gru4rec", "embedding_dim": 8, "hidden_size": 8}, "data_batch_size": 16, "k": 10}
    # a learning rate too small to move the weights: validation never improves after the first check
    stuck = {**base, "data_epochs": 50, "data_lr": 1e-9, "data_patience": 2, "data_eval_every": 1}
    result = run_extraction({"attack": "seq_ptd", **stuck}, knowledge, oracle.register_attacker("es"), seed=0)
    assert len(result.info["data_losses"]) == 3  # first validation, then 2 without improvement
    seen = {}
    real_fit = zhu.fit_next_item

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(zhu, "fit_next_item", spy)
    run_extraction({"attack": "seq_ptd", **base, "data_epochs": 4}, knowledge, oracle.register_attacker("fixed"), seed=0)
    assert seen["patience"] is None  # default: fixed epochs, as before
