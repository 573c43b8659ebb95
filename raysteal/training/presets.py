"""Paper settings of every target model: model config + train config, one place for the CLI and
the benchmark. Model hyperparameters follow each paper; the epoch budgets and the learning-rate
/ batch choices for the collaborative models were tuned on ML-1M *validation* NDCG@10 (see
``benchmarks/targets.py`` and the model-zoo report).
"""

from __future__ import annotations

from typing import Any

import raysteal.models  # noqa: F401  (registers every model: the presets ask each whether it is sequential)
from raysteal.models.base import model_class
from raysteal.training.config import make_train_config, with_overrides

COLLABORATIVE_REFERENCE_STEPS = 235
"""Optimiser steps per epoch of a collaborative preset on the target half of ML-1M (3,020 users,
batch 2,048): the smallest log its epoch counts were set on. A smaller log (ML-100K: 48 steps on
the whole log; Steam-200k's target half: 30) trains for as many steps, validated as often in steps
(:func:`~raysteal.training.config.scaled_to_log`); ML-1M, whole or half, trains exactly as before."""

SEQUENTIAL_REFERENCE_STEPS = 24
"""The same for the sequential presets (one window per user, batch 128): 24 steps on ML-1M's
target half; ML-100K has 8."""

NARM_YUE: dict[str, Any] = {
    "embedding_dim": 64,
    "hidden_size": 128,
    "dropout": 0.1,
    "context_dropout": 0.1,
    "attention_activation": "hard_sigmoid",
    "attention_softmax": True,
    "init_std": 0.02,
    "positions_per_sequence": None,
}
"""NARM as Yue et al. released it for their teacher (RecSys 2021, model/narm.py): embedding 64,
hidden size twice that, dropout 0.1 after the embedding and before the decoder, a hard sigmoid and
a softmax in the local encoder's attention, parameters from a normal truncated at 2 x 0.02, and a
target at every position of each window. The ``narm`` preset takes all of it but the last: 32
random targets a window (every position makes a step of 128 windows of 200 items 2.7x dearer on
one CPU thread: 7.4 s against 2.7 s). Every
position: ``{model: narm, params: {positions_per_sequence: null}}``; ``benchmarks/targets.py``
with ``--set narm.positions_per_sequence=null``."""


PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Rendle et al. 2009 with Zhu et al. App. A.1: d=64, Adam lr 1e-3, batch 2048. On ML-1M the
    # validation NDCG@10 still creeps up after 30 epochs at lr 1e-3 (lr 5e-3 peaks by epoch ~11
    # at the same full-ranking NDCG but a lower sampled HR@10). Validation every 5 epochs, never
    # stopping before 20: per-epoch checks on the ML-1M target half are noisy enough that patience 3
    # stopped BPR at epoch 9 (test HR@10 0.52 instead of 0.68). Patience ends it on ML-1M (epoch 50
    # on the target half, 55 on the whole log); the cap of 200 is a safety net that lets a log whose
    # curve rises longer get there (Steam-200k: still rising at a cap of 60 epochs scaled to its steps).
    # Negatives by dynamic negative sampling (Zhang et al. 2013): each the highest-scored of 8
    # uniform draws. Uniform draws (Rendle's LearnBPR) leave BPR at 1.08x popularity's full-ranking
    # NDCG@10 on Ta-feng; 8 draws give 1.30x there and 2.33x (from 2.02x) on ML-1M; 32 draws score
    # the same on Ta-feng validation, and lower on its test, at 4x the draws.
    "bpr": (
        {"model": "bpr", "embedding_dim": 64, "negative_candidates": 8},
        {"epochs": 200, "batch_size": 2048, "lr": 1e-3, "eval_every": 5, "patience": 3, "min_epochs": 20},
    ),
    # Johnson 2014 with Zhu et al. App. A.1: d=64, Adam lr 1e-3, batch 2048, 4 negatives (lr 5e-3
    # peaks at epoch ~4-6 with sampled HR@10 0.71 on validation vs 0.73 at lr 1e-3); the same cap as BPR
    # (patience ends it at epoch 50 on the whole ML-1M log).
    # Each of the 4 negatives the highest-scored of 8 draws, as for BPR (Ta-feng: 1.28x popularity,
    # from 1.06x with uniform draws).
    "lmf": (
        {"model": "lmf", "embedding_dim": 64, "negative_candidates": 8},
        {"epochs": 200, "batch_size": 2048, "lr": 1e-3, "eval_every": 5, "patience": 3, "min_epochs": 20},
    ),
    # He et al. 2017: predictive factors f=16, towers (4f, 2f, f), 4 negatives, batch 2048. Each
    # negative the highest-scored of 8 draws (DNS, as BPR and LMF), lr 1e-3, and a refit on the
    # validation items for the epochs validation chose (He et al. hold out only the test item):
    # on Ta-feng 1.26x popularity, where the earlier preset (uniform draws, lr 5e-3, no refit) was
    # 0.97x and DNS at lr 1e-3 without the refit 1.196x.
    # Validation on at most 20,000 users (a seeded sample): scoring every item through the towers
    # is what a NeuMF epoch costs on a large catalogue (Amazon Beauty, 40,226 users x 54,542 items:
    # 7 minutes a validation against 11 s of training on one core). Every other log here has
    # fewer users, validates on all of them and is trained and keyed as before (scaled_to_log).
    "neumf": (
        {"model": "neumf", "embedding_dim": 16, "negative_candidates": 8},
        {"epochs": 20, "batch_size": 2048, "lr": 1e-3, "patience": 3, "refit": True, "eval_users": 20_000},
    ),
    # Sequential models: each config's defaults are its paper's settings
    # (SASRec: max_len 200, d=50, 2 blocks, dropout 0.2; Adam lr 1e-3, batch 128).
    # lr 3e-3 rather than the paper's 1e-3: on ML-1M validation (CE loss) NDCG@10 (100 neg) after 4
    # epochs was 0.503 vs 0.383 at 1e-3, still rising at both.
    "sasrec": ({"model": "sasrec"}, {"epochs": 200, "batch_size": 128, "lr": 3e-3, "patience": 5}),
    # BERT4Rec: the paper's model (d=64, 2 blocks, 2 heads, mask 0.2, N=200); lr 2e-3, batch 128,
    # length-bucketed batches (1.84x faster epochs on ML-1M). Measured on ML-1M (CPU): validation
    # NDCG@10 (full) still rising at epoch 64 (0.157), best at epoch 80, early stop at 100; test
    # NDCG@10 0.5954 with 100 negatives (Yue et al.'s teacher: 0.602). Slow to converge: validate
    # every 4 epochs with patience 5.
    "bert4rec": (
        {"model": "bert4rec", "length_buckets": 8},
        {"epochs": 200, "batch_size": 128, "lr": 2e-3, "eval_every": 4, "patience": 5},
    ),
    # GRU4Rec / NARM / STAMP: lr 3e-3 as for SASRec. On ML-1M (benchmarks/targets.py, CPU) GRU4Rec
    # peaked at epoch 26 (test NDCG@10 0.611, 100 neg) and STAMP at epoch 32 (0.545). NARM takes
    # Yue et al.'s released settings (NARM_YUE) with 32 random targets a window: it peaked at epoch
    # 44 (0.607; Yue et al.'s teacher 0.625), where the paper's settings (d = 50, 100 hidden units,
    # dropout 0.25 / 0.5, sigmoid attention) had peaked at epoch 30 (0.554).
    "gru4rec": ({"model": "gru4rec"}, {"epochs": 100, "batch_size": 128, "lr": 3e-3, "eval_every": 2, "patience": 3}),
    "narm": (
        {"model": "narm", **NARM_YUE, "positions_per_sequence": 32},
        {"epochs": 100, "batch_size": 128, "lr": 3e-3, "eval_every": 2, "patience": 3},
    ),
    "stamp": ({"model": "stamp"}, {"epochs": 100, "batch_size": 128, "lr": 3e-3, "eval_every": 2, "patience": 3}),
}

for _name, (_, _train) in PRESETS.items():  # every preset's epoch counts scale up on a smaller log
    _sequential = getattr(model_class(_name), "sequential", False)
    _train["reference_steps_per_epoch"] = SEQUENTIAL_REFERENCE_STEPS if _sequential else COLLABORATIVE_REFERENCE_STEPS


NEUMF_PRETRAINED: dict[str, Any] = {"embedding_dim": 64, "pretrain": True, "negative_candidates": 1}
"""NeuMF as He et al. built it (§3.4.1, Table 2's best MovieLens row): f = 64 predictive factors,
negatives drawn uniformly (their sampler; the preset's DNS lowers HR@10 with 100 sampled negatives
on ML-1M for BPR and LMF: ``docs/results/targets/ml-1m-negative-sampling.json``), GMF and MLP pre-trained with the train settings
of :data:`NEUMF_PRETRAINED_TRAIN`, then fused with alpha = 0.5. An option of the ``neumf``
preset: an experiment file asks for it with ``{model: neumf, params: NEUMF_PRETRAINED, train:
NEUMF_PRETRAINED_TRAIN}``; ``benchmarks/targets.py`` with ``--set neumf.embedding_dim=64 --set
neumf.pretrain=true --set neumf.negative_candidates=1 --set neumf.train.lr=5e-3 --set
neumf.train.refit=true``."""

NEUMF_PRETRAINED_TRAIN: dict[str, Any] = {"lr": 5e-3, "refit": True}
"""The train settings of :data:`NEUMF_PRETRAINED`: Adam at lr 5e-3 (pre-trainings and fused
model), and a refit on the validation items for the epochs early stopping chose (He et al. train
on every item but the test one, §4.1; :mod:`raysteal.training.refit`; its ML-1M figures are the
``he-f64-pretrained-refit`` row of ``docs/results/targets/ml-1m.json``)."""


REVISED_SETTINGS: dict[str, dict[str, Any]] = {
    "bpr": {"negative_candidates": 1},
    "lmf": {"negative_candidates": 1},
    "neumf": {"negative_candidates": 1, "train.lr": 5e-3, "train.refit": False},
    "narm": {
        "embedding_dim": 50,
        "hidden_size": 100,
        "dropout": 0.25,
        "context_dropout": 0.5,
        "attention_activation": "sigmoid",
        "attention_softmax": False,
        "init_std": None,
    },
}
"""Settings a preset changed after results had been published with it: ``{model: {key: the
earlier value}}``, a train setting spelled ``train.<key>``. A run whose target resolves to another
value of such a key gets a new id (:func:`revised_settings`,
:attr:`raysteal.experiment.run.Run.id`), so a results directory never passes a row of the earlier
target off as one of today's; a file that pins the earlier value keeps its runs' ids (a pinned
earlier train value is left out of the id: :func:`without_pinned_earlier_train`)."""

TRAIN_PREFIX = "train."


def revised_settings(name: str, params: dict[str, Any], train: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of :data:`REVISED_SETTINGS` that model ``name`` with ``params`` (and the train
    overrides ``train``) resolves to a value other than the earlier one (empty for most targets)."""
    cls = model_class(name)
    earlier = REVISED_SETTINGS.get(cls.name, {})
    if not earlier:
        return {}
    model_cfg, train_cfg = preset_with(name, params, train or {})
    resolved_train = make_train_config(train_cfg).model_dump(mode="json")
    revised = {}
    for key, value in earlier.items():
        if key.startswith(TRAIN_PREFIX):
            now = resolved_train.get(key[len(TRAIN_PREFIX) :], value)
        else:
            now = model_cfg.get(key, value)
        if now != value:
            revised[key] = now
    return revised


def without_pinned_earlier_train(name: str, train: dict[str, Any]) -> dict[str, Any]:
    """``train`` (a target's train overrides in an experiment file) less the settings pinned at the
    earlier value of a revised train setting of model ``name``: such a file names the target its
    runs had before the revision, and keeps their ids."""
    earlier = REVISED_SETTINGS.get(model_class(name).name, {})
    return {key: value for key, value in train.items() if earlier.get(TRAIN_PREFIX + key, _UNSET) != value}


_UNSET = object()


def preset_with(name: str, model_overrides: dict[str, Any], train_overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model's preset with a user's overrides (epoch counts the user sets are not scaled:
    :func:`~raysteal.training.config.with_overrides`)."""
    model_cfg, train_cfg = preset(name)
    return {**model_cfg, **model_overrides}, with_overrides(train_cfg, train_overrides)


def preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model config, train config)`` dicts for a registered model (defaults if no preset)."""
    cls = model_class(name)  # unknown names raise UnknownNameError listing the known ones
    model_cfg, train_cfg = PRESETS.get(cls.name, ({"model": cls.name}, {}))
    return dict(model_cfg), dict(train_cfg)
