"""Sequential recommenders (SASRec, BERT4Rec, GRU4Rec, NARM, STAMP) and their samplers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import raysteal.models  # noqa: F401  (registers the models)
from raysteal.data import leave_one_out, load_dataset
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.models.base import PAD, Recommender, make_config, model_class
from raysteal.models.sequence_layers import (
    DROP_LEVELS,
    Dropout,
    PaddedGRU,
    additive_attention_mask,
    attention_mask,
    dropout,
    dropout_attention,
    dropout_noise,
    prefix_additive_attention,
    prefix_mask,
    sampled_scores,
)
from raysteal.models.sequence_samplers import ClozeSampler, NextItemSampler, SeenItems, window_ends, window_matrix
from raysteal.training import evaluate, fit, seeded_model

NAMES = ["sasrec", "bert4rec", "gru4rec", "narm", "stamp"]
NUM_USERS, NUM_ITEMS, MAX_LEN = 50, 30, 12
SMALL = {  # small but learnable sizes, so the whole file stays fast on 2 cores
    "sasrec": {"embedding_dim": 32},
    "bert4rec": {"embedding_dim": 32, "dropout": 0.0},
    "gru4rec": {"embedding_dim": 32, "hidden_size": 32},
    "narm": {"embedding_dim": 32, "hidden_size": 32, "positions_per_sequence": 8},
    "stamp": {"embedding_dim": 32, "positions_per_sequence": 8},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest single-threaded (and leave the shared cores alone)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def log() -> Interactions:
    """50 users over 30 items: each user walks the catalogue with a fixed step (1, 2 or 3) from a
    random start; lengths vary from 4 to 24 so padding, truncation and windows all occur."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 25, NUM_USERS)
    starts = rng.integers(0, NUM_ITEMS, NUM_USERS)
    steps = 1 + np.arange(NUM_USERS) % 3
    users = np.repeat(np.arange(NUM_USERS), lengths)
    pos = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = (starts[users] + steps[users] * pos) % NUM_ITEMS
    return Interactions(users=users, items=items, num_users=NUM_USERS, num_items=NUM_ITEMS, name="walks")


def make(name: str, **overrides) -> Recommender:
    """A small model, initialised from a fixed seed (the global RNG is left alone)."""
    return seeded_model({"model": name, "max_len": MAX_LEN, **SMALL[name], **overrides}, NUM_USERS, NUM_ITEMS, seed=0)


def train_steps(model, log: Interactions, steps: int, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sampler = model.make_sampler(log, 16)
    gen = torch.Generator().manual_seed(0)
    losses: list[float] = []
    model.train()
    while len(losses) < steps:
        for batch in sampler.epoch(gen):
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    model.eval()
    return losses


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", NAMES)
def test_registered_and_sequential(name):
    cls = model_class(name)
    assert cls.name == name and cls.sequential is True


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_in_a_plain_training_loop(name, log):
    model = make(name)
    cloze = name == "bert4rec"  # the cloze task converges slowly (Petrov & Macdonald 2022)
    losses = train_steps(model, log, 150 if cloze else 40, lr=3e-3 if cloze else 1e-2)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < (0.85 if cloze else 0.8) * np.mean(losses[:5]), losses


@pytest.mark.parametrize("name", NAMES)
def test_score_shape_and_padding(name, log):
    model = make(name).eval()
    seqs = torch.from_numpy(log.padded_sequences(MAX_LEN))
    with torch.no_grad():
        scores = model.score(seqs)
        assert scores.shape == (NUM_USERS, NUM_ITEMS) and scores.dtype == torch.float32
        assert torch.isfinite(scores).all()
        # prepending pads changes nothing
        padded = torch.cat([torch.full((NUM_USERS, 9), PAD), seqs], dim=1)
        torch.testing.assert_close(model.score(padded), scores)
        # a short row scores the same alone as in a batch with longer rows
        short = int(np.argmin(log.user_lengths))
        alone = torch.from_numpy(log.padded_sequences(int(log.user_lengths[short]), [short]))
        torch.testing.assert_close(model.score(alone), scores[short : short + 1], atol=1e-5, rtol=1e-5)
        # only the last max_len items are read
        older = torch.randint(0, NUM_ITEMS, (NUM_USERS, 7), generator=torch.Generator().manual_seed(1))
        full = torch.from_numpy(log.padded_sequences(MAX_LEN, np.flatnonzero(log.user_lengths >= MAX_LEN)))
        longer = torch.cat([older[: len(full)], full], dim=1)
        torch.testing.assert_close(model.score(longer), model.score(full))
        # an empty history still gives finite scores
        assert torch.isfinite(model.score(torch.full((2, 5), PAD))).all()


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip(name, log):
    model = make(name)
    train_steps(model, log, 3)
    clone = pickle.loads(pickle.dumps(model))
    seqs = torch.from_numpy(log.padded_sequences(MAX_LEN))
    with torch.no_grad():
        assert torch.equal(clone.score(seqs), model.score(seqs))
    assert clone.spec() == model.spec()
    assert make_config(model.spec()["config"]) == model.config


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [{"max_len": 0}, {"embedding_dim": -4}, {"dropout": 1.0}, {"no_such_key": 1}])
def test_bad_configs_raise(name, bad):
    with pytest.raises(ConfigError):
        make_config({"model": name, **bad})


def test_transformer_heads_must_divide_dim():
    with pytest.raises(ConfigError, match="divisible"):
        make_config({"model": "sasrec", "embedding_dim": 50, "num_heads": 3})
    with pytest.raises(ConfigError):
        make_config({"model": "bert4rec", "mask_prob": 0.0})


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise(name):
    model = make(name)
    with pytest.raises(ValueError, match="item ids"):
        model.score(torch.tensor([[0, NUM_ITEMS]]))
    with pytest.raises(ValueError, match="2-d"):
        model.score(torch.tensor([0, 1]))


def test_sasrec_bce_loss_trains(log):
    model = make("sasrec", loss="bce")
    batch = next(iter(model.make_sampler(log, 8).epoch(torch.Generator().manual_seed(0))))
    assert batch["negatives"].shape == batch["targets"].shape
    losses = train_steps(model, log, 40)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_bert4rec_scores_with_mask_appended(log):
    model = make("bert4rec").eval()
    seqs = torch.from_numpy(log.padded_sequences(MAX_LEN))
    indices = model.prepare(seqs)
    assert indices.shape[1] == MAX_LEN and (indices[:, -1] == NUM_ITEMS + 1).all()
    torch.testing.assert_close(indices[:, :-1], seqs[:, 1:] + 1)


# ------------------------------------------------------------ through the trainer
class _Popularity(Recommender):
    """Test double: every user gets the training popularity ranking (the floor to beat)."""

    name, sequential, Config = "popularity", False, None

    def __init__(self, counts: np.ndarray):
        torch.nn.Module.__init__(self)
        self.counts = torch.as_tensor(counts, dtype=torch.float32)
        self.num_items = len(counts)

    def score(self, inputs):
        return self.counts.expand(len(inputs), -1)

    def loss(self, batch):
        raise NotImplementedError("test double")

    def make_sampler(self, train, batch_size):
        raise NotImplementedError("test double")


def fit_and_compare(name: str, split, model_cfg: dict, train_cfg: dict) -> tuple[float, float]:
    model = seeded_model({"model": name, **model_cfg}, split.train.num_users, split.train.num_items, seed=0)
    epochs = train_cfg["epochs"]
    result = fit(model, split, {"early_stopping": False, "eval_every": epochs, **train_cfg}, seed=0, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    popularity = evaluate(_Popularity(split.train.item_counts), split, "test")["ndcg@10_full"]
    return evaluate(model, split, "test")["ndcg@10_full"], popularity


@pytest.mark.parametrize("name", NAMES)
def test_trainer_fits_the_walks_beyond_popularity(name, log):
    """Through the generic trainer, every model learns the walks far beyond popularity (~0.32)."""
    cloze = name == "bert4rec"
    train_cfg = {"epochs": 80 if cloze else 20, "batch_size": 16, "lr": 3e-3 if cloze else 1e-2}
    ndcg, popularity = fit_and_compare(name, leave_one_out(log), {"max_len": MAX_LEN, **SMALL[name]}, train_cfg)
    assert ndcg > popularity + 0.1, (ndcg, popularity)


@pytest.mark.parametrize("name, epochs", [("sasrec", 6), ("gru4rec", 6), ("narm", 15), ("stamp", 12)])
def test_trainer_beats_popularity_on_the_synthetic_long_tail_log(name, epochs):
    """The project's synthetic generator (popularity-driven successors): popularity is a strong
    floor there; BERT4Rec needs far more steps than a unit test allows to pass it (see the
    walks test for its check)."""
    split = leave_one_out(load_dataset("synthetic", num_users=300, num_items=100, max_len=30, seed=0))
    ndcg, popularity = fit_and_compare(name, split, {"max_len": 20, **SMALL[name]}, {"epochs": epochs, "batch_size": 64, "lr": 1e-2})
    assert ndcg > 1.2 * popularity, (ndcg, popularity)


# ---------------------------------------------------------------------------- layers
def test_attention_mask_handles_padding():
    valid = torch.tensor([[False, False, True, True], [False, False, False, False]])
    causal = attention_mask(valid, causal=True)[:, 0]
    assert causal[0, 3].tolist() == [False, False, True, True]
    assert causal[0, 2].tolist() == [False, False, True, False]
    assert causal[1].diagonal().all() and causal[1].sum() == 4  # pure padding: self only, no NaN
    assert attention_mask(valid, causal=False)[0, 0, 2].tolist() == [False, False, True, True]


def test_dropout_noise_drops_p_of_every_lane_and_keeps_the_expectation():
    """Four 16-bit draws per 64-bit generator word: every lane of a word is uniform (a draw that
    left a word's top bit clear would keep every fourth element more often), the drop rate is p to
    1/65,536, the kept values undo it exactly, and the generator's seed fixes the draws."""
    like = torch.empty(0)
    torch.manual_seed(3)
    noise = dropout_noise((1_000_003,), 0.2, like)  # not a multiple of four
    drop = round(0.2 * DROP_LEVELS)
    assert noise.shape == (1_000_003,) and noise.dtype == torch.float32
    values = noise.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(DROP_LEVELS / (DROP_LEVELS - drop))]
    dropped = (noise == 0).float()
    for lane in range(4):  # binomial std of a quarter of 1e6 draws at p = 0.2: 0.0008
        assert abs(float(dropped[lane::4].mean()) - 0.2) < 0.004
    assert abs(float(noise.mean()) - 1.0) < 0.005
    torch.manual_seed(3)
    assert torch.equal(dropout_noise((1_000_003,), 0.2, like), noise)
    assert not torch.equal(dropout_noise((1_000_003,), 0.2, like), noise)
    assert torch.equal(dropout_noise((2, 3), 1.0, like), torch.zeros(2, 3))
    assert dropout_noise((4, 5), 0.5, torch.empty(0, dtype=torch.float64)).dtype == torch.float64


def test_dropout_module_draws_dropout_noise_in_training_and_passes_through_otherwise():
    x = torch.randn(6, 7, 8)
    layer = Dropout(0.3)
    assert isinstance(layer, torch.nn.Dropout)
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    assert torch.equal(out, x * dropout_noise(tuple(x.shape), 0.3, x))
    assert torch.equal(layer.eval()(x), x) and torch.equal(dropout(x, 0.0, True), x) and torch.equal(dropout(x, 0.3, False), x)
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))  # no 0 * inf


@pytest.mark.parametrize("heads", [1, 2])
def test_dropout_attention_is_sdpa_with_the_same_dropout_masks(heads, monkeypatch):
    """Training with dropout on a CPU: the same outputs and gradients as scaled_dot_product_attention,
    whose math kernel draws F.dropout's masks (``bernoulli_noise``) from the same generator."""
    import torch.nn.functional as F

    from raysteal.models import sequence_layers

    monkeypatch.setattr(sequence_layers, "dropout_noise", sequence_layers.bernoulli_noise)

    gen = torch.Generator().manual_seed(0)
    batch, length, width = 3, 7, 4
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[1, :3] = False
    valid[2, :] = False  # all padding: each query attends to itself only
    for causal in (True, False):
        mask = attention_mask(valid, causal)
        additive = additive_attention_mask(mask)
        assert torch.equal(additive == 0, mask) and torch.isneginf(additive[~mask]).all()
        q, k, v = (torch.randn(batch, heads, length, width, generator=gen) for _ in range(3))
        grad_out = torch.randn(batch, heads, length, width, generator=gen)
        results = []
        for attend in (
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.3),
            lambda q, k, v: dropout_attention(q, k, v, additive, 0.3),
            lambda q, k, v: dropout_attention(q, k, v, mask, 0.3),
        ):
            leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
            torch.manual_seed(5)
            out = attend(*leaves)
            out.backward(grad_out)
            results.append((out.detach(), [x.grad for x in leaves]))
        for out, grads in results[1:]:
            assert torch.allclose(out, results[0][0], atol=1e-6)
            assert all(torch.allclose(g, want, atol=1e-5) for g, want in zip(grads, results[0][1]))


def test_sampled_scores_equal_the_gathered_full_scores(monkeypatch):
    """The fused CPU kernel: the values and gradients of gathering the full scores; duplicates add up."""
    import raysteal.models.sequence_layers as layers

    monkeypatch.setattr(layers, "SAMPLED_SCORES_CHUNK", 3)  # several gradient blocks, a ragged last one
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 6, generator=gen)
    table = torch.randn(9, 6, generator=gen)
    indices = torch.randint(0, 9, (10, 5), generator=gen)
    indices[0, :3] = 4  # the same row scored three times for one prefix
    grad_out = torch.randn(10, 5, generator=gen)
    results = []
    for score in (lambda h, t: (h @ t.t()).gather(1, indices), lambda h, t: sampled_scores(h, t, indices)):
        h, t = hidden.clone().requires_grad_(True), table.clone().requires_grad_(True)
        out = score(h, t)
        out.backward(grad_out)
        results.append((out.detach(), h.grad, t.grad))
    for mine, want in zip(results[1], results[0]):
        assert torch.allclose(mine, want, atol=1e-5)
    only_hidden = hidden.clone().requires_grad_(True)  # a frozen table gets no gradient
    sampled_scores(only_hidden, table, indices).sum().backward()
    assert only_hidden.grad is not None
    with pytest.raises(IndexError):  # the kernel reads rows unchecked: out-of-range ids are refused
        sampled_scores(hidden, table, indices + 9)

    sasrec = make("sasrec").eval()  # scores_at of the models: the catalogue scores' columns
    gru = make("gru4rec").eval()
    items = torch.randint(0, NUM_ITEMS, (10, 4), generator=gen)
    for model in (sasrec, gru):
        states = torch.randn(10, 32, generator=gen)  # both small models have 32-dim states
        with torch.no_grad():
            assert torch.allclose(model.scores_at(states, items), model.logits(states).gather(1, items), atol=1e-5)
    with pytest.raises(IndexError):
        sasrec.scores_at(torch.randn(10, 32), items + NUM_ITEMS)


@pytest.mark.parametrize("chunks", [1, 3, 8, 100])
def test_prefix_attention_over_visible_columns_equals_scoring_every_column(chunks):
    gen = torch.Generator().manual_seed(0)
    batch, length, hidden = 5, 12, 6
    valid = torch.ones(batch, length, dtype=torch.bool)
    for row, pad in enumerate([0, 3, 7, 11, 12]):  # left padding of every size, one row all padding
        valid[row, :pad] = False
    rows = torch.tensor([0, 0, 1, 2, 3, 1, 0, 2, 4])
    cols = torch.tensor([11, 2, 5, 11, 11, 2, 0, 8, 11])  # row 1 col 2 and row 4 see no item at all
    keys = torch.randn(batch, length, hidden, generator=gen, requires_grad=True)
    values = torch.randn(batch, length, hidden + 1, generator=gen, requires_grad=True)
    query = torch.randn(len(rows), hidden, generator=gen, requires_grad=True)
    score = torch.nn.Linear(hidden, 1, bias=False)

    # the formula as written in NARM / STAMP: every prefix against every column, masked
    alpha = score(torch.sigmoid(keys[rows] + query[:, None, :])).squeeze(-1) * prefix_mask(valid, rows, cols)
    expected = torch.einsum("nl,nld->nd", alpha, values[rows])
    got = prefix_additive_attention(keys, query, values, valid, rows, cols, score, chunks=chunks)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(got[5], torch.zeros(hidden + 1)) and torch.equal(got[8], torch.zeros(hidden + 1))
    grads = torch.autograd.grad(expected.square().sum(), [keys, values, query, score.weight])
    for mine, want in zip(torch.autograd.grad(got.square().sum(), [keys, values, query, score.weight]), grads):
        assert torch.allclose(mine, want, atol=1e-5)
    empty = prefix_additive_attention(keys, query[:0], values, valid, rows[:0], cols[:0], score)
    assert empty.shape == (0, hidden + 1)


def test_padded_gru_matches_unpadded_runs():
    gen = torch.Generator().manual_seed(0)
    gru = PaddedGRU(4, 6, 1, 0.0)
    x = torch.randn(3, 5, 4, generator=gen)
    valid = torch.tensor([[True] * 5, [False, False, True, True, True], [False] * 4 + [True]])
    out = gru(x, valid)
    for row in range(3):
        n = int(valid[row].sum())
        ref, _ = gru.gru(x[row : row + 1, 5 - n :])
        torch.testing.assert_close(out[row, 5 - n :], ref[0])
        assert (out[row, : 5 - n] == 0).all()


# -------------------------------------------------------------------------- samplers
def test_window_ends_and_matrix(log):
    lengths = np.array([1, 3, 10, 12])
    users, ends = window_ends(lengths, width=4, stride=0)
    assert users.tolist() == [1, 2, 3] and ends.tolist() == [3, 10, 12]
    users, ends = window_ends(lengths, width=4, stride=3)
    assert users.tolist() == [1, 2, 2, 2, 3, 3, 3, 3] and ends.tolist() == [3, 10, 7, 4, 12, 9, 6, 4]
    users, ends = window_ends(log.user_lengths, width=5, stride=5)
    windows = window_matrix(log, users, ends, 5)
    covered = np.zeros(log.num_interactions, bool)  # every interaction lies in some window
    for u, e in zip(users, ends):
        covered[log.indptr[u] + max(e - 5, 0) : log.indptr[u] + e] = True
    assert covered[np.repeat(log.user_lengths >= 2, log.user_lengths)].all()
    row = int(np.flatnonzero(users == 0)[0])
    assert windows[row].tolist() == log.sequence(0)[ends[row] - 5 : ends[row]].tolist()


def test_next_item_sampler(log):
    sampler = NextItemSampler(log, 16, MAX_LEN, num_negatives=1)
    assert len(sampler) == 4
    batches = list(sampler.epoch(torch.Generator().manual_seed(0)))
    assert sampler.to("cpu") is sampler  # the trainer moves samplers to its device this way
    again = list(sampler.epoch(torch.Generator().manual_seed(0)))
    assert all(torch.equal(a["negatives"], b["negatives"]) for a, b in zip(batches, again))
    seen = SeenItems(log)
    rows = 0
    for batch in batches:
        inputs, targets, negatives = batch["inputs"], batch["targets"], batch["negatives"]
        assert inputs.shape == targets.shape == negatives.shape and inputs.shape[1] <= MAX_LEN
        assert ((targets == PAD) | (inputs != PAD)).all()  # no target without an input item
        has = targets != PAD
        assert torch.equal(targets[:, :-1][has[:, :-1]], inputs[:, 1:][has[:, :-1]])  # targets = inputs shifted
        rows += len(inputs)
    assert rows == NUM_USERS
    owners = sampler.owners[torch.randperm(len(sampler.owners), generator=torch.Generator().manual_seed(0))[:16]]
    assert not seen.contains(owners[:, None], batches[0]["negatives"]).any()


def test_next_item_sampler_keeps_random_positions(log):
    sampler = NextItemSampler(log, 64, MAX_LEN, positions_per_sequence=3)
    batch = next(iter(sampler.epoch(torch.Generator().manual_seed(0))))
    kept = (batch["targets"] != PAD).sum(dim=1)
    full = torch.from_numpy(np.minimum(log.user_lengths, MAX_LEN + 1) - 1)
    order = torch.randperm(NUM_USERS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept, full[order].clamp(max=3))


def test_cloze_sampler(log):
    sampler = ClozeSampler(log, 64, MAX_LEN, mask_prob=0.3, mask_token=NUM_ITEMS)
    batch = next(iter(sampler.epoch(torch.Generator().manual_seed(0))))
    inputs, targets = batch["inputs"], batch["targets"]
    masked = inputs == NUM_ITEMS
    assert torch.equal(masked, targets != PAD) and masked.any(dim=1).all()
    assert 0.2 < masked.sum() / (inputs != PAD).sum() < 0.45


@pytest.mark.parametrize("kind", ["next", "cloze"])
def test_length_buckets_visit_every_window_once_with_less_padding(log, kind):
    def sampler(buckets: int):
        if kind == "next":
            return NextItemSampler(log, 8, MAX_LEN, length_buckets=buckets)
        return ClozeSampler(log, 8, MAX_LEN, mask_prob=0.3, mask_token=NUM_ITEMS, length_buckets=buckets)

    uniform, bucketed = sampler(0), sampler(3)
    order = torch.randperm(len(uniform.windows), generator=torch.Generator().manual_seed(0))
    plain = list(uniform._batches(torch.Generator().manual_seed(0)))
    assert [b.tolist() for b in plain] == [b.tolist() for b in order.split(8)]  # off: the uniform batching as before
    batches = list(bucketed._batches(torch.Generator().manual_seed(0)))
    assert sorted(torch.cat(batches).tolist()) == list(range(len(bucketed.windows)))  # each window exactly once
    assert len(batches) == len(bucketed)
    spread = [int(bucketed.lengths[b].max() - bucketed.lengths[b].min()) for b in batches]
    uniform_spread = [int(uniform.lengths[b].max() - uniform.lengths[b].min()) for b in plain]
    assert sum(spread) < sum(uniform_spread)
    tokens = sum(b["inputs"].numel() for b in bucketed.epoch(torch.Generator().manual_seed(0)))
    uniform_tokens = sum(b["inputs"].numel() for b in uniform.epoch(torch.Generator().manual_seed(0)))
    assert tokens < uniform_tokens
    with pytest.raises(ConfigError, match="length_buckets"):
        sampler(-1)


def test_length_buckets_is_a_model_option(log):
    model = make("sasrec", length_buckets=2)
    assert model.make_sampler(log, 8).length_buckets == 2
    assert make("bert4rec", length_buckets=2).make_sampler(log, 8).length_buckets == 2
    with pytest.raises(ConfigError):
        make_config({"model": "gru4rec", "length_buckets": -1})


def test_samplers_reject_bad_arguments(log):
    with pytest.raises(ConfigError):
        NextItemSampler(log, 0, MAX_LEN)
    with pytest.raises(ConfigError):
        ClozeSampler(log, 8, MAX_LEN, mask_prob=0.0, mask_token=NUM_ITEMS)
    empty = Interactions(users=np.arange(3), items=np.arange(3), num_users=3, num_items=3)
    with pytest.raises(ConfigError, match="at least 2"):
        NextItemSampler(empty, 8, MAX_LEN)


def test_attention_dropout_reaches_the_fused_kernel_off_the_cpu(monkeypatch):
    """Off the CPU the attention's dropout is the fused kernel's ``dropout_p`` (training only); a
    speed-up of the CPU path once left it out, so a GPU-trained SASRec had no attention dropout."""
    import torch.nn.functional as F

    import raysteal.models.sequence_layers as layers

    seen = []
    fused = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dropout_p", 0.0))
        return fused(*args, **{**kwargs, "dropout_p": 0.0})

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", spy)
    attention = layers.MultiHeadSelfAttention(8, 2, dropout=0.3)
    x, mask = torch.randn(2, 5, 8), torch.ones(2, 1, 5, 5, dtype=torch.bool)

    class OffCpu(torch.Tensor):  # a tensor reporting a GPU device: the fused path, as on a GPU
        @property
        def device(self):  # type: ignore[override]
            return torch.device("cuda")

    attention.train()
    attention(x.as_subclass(OffCpu), mask)
    attention.eval()
    attention(x.as_subclass(OffCpu), mask)
    assert seen == [0.3, 0.0]


@pytest.mark.parametrize("bias", [False, True])
def test_catalogue_cross_entropy_equals_the_plain_loss_and_gradients(bias, monkeypatch):
    """The tiled CPU cross-entropy (40 rows at 16 a tile, 20,000 items at 512: both ragged) gives
    F.cross_entropy's value and gradients; bad targets get a clear error."""
    import torch.nn.functional as F

    from raysteal.models import catalogue_loss

    monkeypatch.setattr(catalogue_loss, "ROW_BLOCK", 16)
    assert catalogue_loss.COLUMN_BLOCK == 512

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 8, generator=g, requires_grad=True)
    weight = torch.randn(20000, 8, generator=g, requires_grad=True)
    b = torch.randn(20000, generator=g, requires_grad=True) if bias else None
    targets = torch.randint(0, 20000, (40,), generator=g)
    params = [hidden, weight] + ([b] if b is not None else [])
    plain = F.cross_entropy(hidden @ weight.t() + (b if b is not None else 0.0), targets)
    want = torch.autograd.grad(plain * 3.0, params)
    got_loss = catalogue_loss.catalogue_cross_entropy(hidden, weight, b, targets)
    got = torch.autograd.grad(got_loss * 3.0, params)
    assert float(got_loss) == pytest.approx(float(plain), rel=1e-6)
    for a, c in zip(want, got):
        assert torch.allclose(a, c, atol=1e-6, rtol=1e-4)  # sums over 20,000 items in another order
    with pytest.raises(IndexError, match="targets must lie"):
        catalogue_loss.catalogue_cross_entropy(hidden, weight, b, torch.full((40,), 20000))


def test_catalogue_cross_entropy_is_stable_when_the_largest_logit_lies_in_a_late_tile():
    """The running log-sum-exp rescales its sum when a later item tile holds a larger logit: logits
    of several hundred (exp overflows float32 without the rescaling) give F.cross_entropy's loss."""
    import torch.nn.functional as F

    from raysteal.models import catalogue_loss

    hidden = torch.ones(3, 1, requires_grad=True)
    weight = torch.zeros(2000, 1)
    weight[5], weight[700], weight[1999] = 300.0, 600.0, 900.0  # tiles 0, 1 and 3: each a new maximum
    targets = torch.tensor([5, 700, 1999])
    got = catalogue_loss.catalogue_cross_entropy(hidden, weight, None, targets)
    want = F.cross_entropy(hidden @ weight.t(), targets)
    assert torch.isfinite(got) and float(got) == pytest.approx(float(want), rel=1e-6)
    (grad,) = torch.autograd.grad(got, hidden)
    assert torch.allclose(grad, torch.autograd.grad(F.cross_entropy(hidden @ weight.t(), targets), hidden)[0], atol=1e-4)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "narm", "stamp", "bert4rec"])
def test_each_next_item_loss_is_the_cross_entropy_of_its_logits(name):
    """Every model's output_layer reproduces its logits, so the blocked loss is its plain loss."""
    from raysteal.training.trainer import seeded_model

    model = seeded_model({"model": name, "max_len": 12}, 0, 30, seed=0).eval()
    weight, bias = model.output_layer()
    hidden = torch.randn(5, weight.shape[1])
    want = model.logits(hidden)
    assert torch.allclose(hidden @ weight.t() + (bias if bias is not None else 0.0), want, atol=1e-6)
    seqs = torch.randint(0, 30, (4, 13), generator=torch.Generator().manual_seed(1))
    batch = {"inputs": seqs[:, :-1], "targets": seqs[:, 1:]}
    if name == "bert4rec":
        return  # its loss reads masked batches (covered by its own tests); the layer check above is what changed
    with torch.no_grad():
        blocked = model.loss(batch)
        original = model.output_layer
        model.output_layer = lambda: None
        plain = model.loss(batch)
        model.output_layer = original
    assert float(blocked) == pytest.approx(float(plain), rel=1e-5)


def test_narm_as_yue_et_al_released_it_attends_by_a_softmax_of_hard_sigmoid_scores():
    """NARM_YUE's options: the local encoder's weights are a softmax (over each prefix's items) of
    v . hard_sigmoid(A1 h_t + A2 h_j), computed here by hand for one sequence; every parameter lies
    within 2 std of 0 and padding stays zero."""
    from raysteal.models.narm import NARM
    from raysteal.training.presets import NARM_YUE
    from raysteal.training.trainer import seeded_model

    model = seeded_model({"model": "narm", **NARM_YUE, "max_len": 6}, 0, 20, seed=0).eval()
    assert isinstance(model, NARM)
    assert all(float(p.abs().max()) <= 0.04 + 1e-7 for p in model.parameters())
    assert float(model.items.table.weight[0].abs().max()) == 0.0
    seq = torch.tensor([[-1, -1, 3, 7, 1, 12]])
    indices = model.prepare(seq)  # the all-padding leading columns are dropped: items 3, 7, 1, 12
    assert indices.shape[1] == 4
    rows, cols = torch.tensor([0, 0]), torch.tensor([1, 3])
    with torch.no_grad():
        got = model.represent(indices, rows, cols)
        states = model.gru(model.items(indices), indices != 0)
        want = []
        for c in (1, 3):
            last = states[0, c]
            visible = states[0, : c + 1]
            scores = model.v(torch.clamp((model.a1(last) + model.a2(visible)) / 6 + 0.5, 0, 1)).squeeze(-1)
            local = (torch.softmax(scores, 0)[:, None] * visible).sum(0)
            want.append(model.bilinear(torch.cat([last, local])))
    assert torch.allclose(got, torch.stack(want), atol=1e-6)
    plain = seeded_model({"model": "narm", "max_len": 6}, 0, 20, seed=0)
    assert plain.config.attention_softmax is False and plain.config.attention_activation == "sigmoid"
