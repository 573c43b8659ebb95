"""Clone construction: plain clones, the PTA fused-embedding clone, PTA(Pre), the frozen-auxiliary
ablation, and the popularity clone (Zhu et al. §4.1–4.2, Table 5).

Every clone scores pairs through :func:`pair_scores` (``users [B]``, ``items [B, n]`` → ``[B, n]``),
so the objectives never depend on the architecture. Three architectures are supported, each
through the registered model (``raysteal.models``) and a small adapter describing which of its
tables are user-side and item-side:

* ``bpr``: ``r = p·q``; ``lmf``: ``r = p·q + b_u + b_j``; ``neumf``: GMF ``p^G ⊙ q^G`` and the
  MLP tower on ``[p^M; q^M]`` fused by the output layer (He et al. 2017, Eq. 12 before σ).

**Fusion (Eq. 5–8).** For each item table ``q`` paired with a user table ``p``, the fused clone
keeps the clone's trainable ``q^c``, a frozen copy ``q^a`` of the auxiliary model's table, and an
attention ``(w, b)`` per table: ``α = wᵀReLU(p_i ⊙ q^c_j) + b``, ``β = wᵀReLU(p_i ⊙ q^a_j) + b``,
``(α', β') = softmax(α, β)``, ``q^f_j = α' q^c_j + β' q^a_j``; the architecture then scores with
``q^f`` in place of ``q``. BPR and LMF fuse their one item table (LMF's item bias stays the
clone's own); NeuMF fuses both its GMF and MLP item tables, each with its own attention. Note that
the shared bias ``b`` cancels in the softmax (it is kept to mirror Eq. 5; its gradient is zero).

Full-catalogue scoring of the dot-product clones (BPR, LMF) is exact and needs no ``B×N×d``
intermediate: since ``ReLU(x·y) = x⁺ReLU(y) + x⁻ReLU(−y)`` for scalars (``x⁺ = max(x, 0)``,
``x⁻ = max(−x, 0)``), ``α − β = (w⊙p⁺)·(ReLU(q^c) − ReLU(q^a)) + (w⊙p⁻)·(ReLU(−q^c) − ReLU(−q^a))``
is two matrix products, ``α' = σ(α − β)`` and ``r = α'(p·q^c) + (1 − α')(p·q^a)``. NeuMF's tower
is not linear in ``q^f``, so its scores are computed item chunk by item chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raysteal.attacks.objectives import data_loss
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.models.base import ModelConfig, Recommender, make_config
from raysteal.models.bpr import BPR
from raysteal.models.lmf import LMF
from raysteal.models.neumf import NeuMF
from raysteal.models.pair_samplers import PairSampler
from raysteal.training.trainer import seeded_model

_CHUNK_ELEMENTS = 1 << 24
"""Upper bound on ``users × items × width`` activations materialised at once when scoring."""

VecFn = Callable[[str], torch.Tensor]


# ----------------------------------------------------------------------------- architectures
def _bpr_pair(model: BPR, users: torch.Tensor, items: torch.Tensor, vec: VecFn) -> torch.Tensor:
    return (model.user_emb(users)[:, None, :] * vec("item_emb")).sum(-1)


def _lmf_pair(model: LMF, users: torch.Tensor, items: torch.Tensor, vec: VecFn) -> torch.Tensor:
    dots = (model.user_emb(users)[:, None, :] * vec("item_emb")).sum(-1)
    return dots + model.user_bias(users) + model.item_bias(items)[..., 0]


def _neumf_pair(model: NeuMF, users: torch.Tensor, items: torch.Tensor, vec: VecFn) -> torch.Tensor:
    gmf = model.user_gmf(users)[:, None, :] * vec("item_gmf")
    p_mlp = model.user_mlp(users)[:, None, :].expand(-1, items.shape[1], -1)
    h = torch.cat([p_mlp, vec("item_mlp")], dim=-1)
    for layer in model.tower:
        h = F.relu(layer(h))
    return model.predict(torch.cat([gmf, h], dim=-1))[..., 0]


def _lmf_bias(model: LMF, users: torch.Tensor) -> torch.Tensor:
    return model.user_bias(users) + model.item_bias.weight.T


@dataclass(frozen=True)
class Arch:
    """How attacks see one registered architecture."""

    name: str
    pair: Callable[[Any, torch.Tensor, torch.Tensor, VecFn], torch.Tensor]
    """Pair scores of the architecture's model (its registered class: ``BPR``, ``LMF``, ``NeuMF``)."""
    fused: tuple[tuple[str, str], ...]
    """(user table, item table) pairs that the PTA fusion applies to."""
    user_side: tuple[str, ...]
    """Parameters owned by users (re-learned by every clone; all else is model-wide)."""
    item_side: tuple[str, ...]
    """Item parameters copied by PTA(Pre)."""
    dot_bias: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    closed_form: bool = True
    """Whether the score is ``p·q`` (+ ``dot_bias``): full-catalogue fused scoring in closed form."""


ARCHS: dict[str, Arch] = {
    "bpr": Arch("bpr", _bpr_pair, (("user_emb", "item_emb"),), ("user_emb",), ("item_emb",)),
    "lmf": Arch("lmf", _lmf_pair, (("user_emb", "item_emb"),), ("user_emb", "user_bias"), ("item_emb", "item_bias"), _lmf_bias),
    "neumf": Arch(
        "neumf",
        _neumf_pair,
        (("user_gmf", "item_gmf"), ("user_mlp", "item_mlp")),
        ("user_gmf", "user_mlp"),
        ("item_gmf", "item_mlp"),
        closed_form=False,
    ),
}
ALIASES = {"ncf": "neumf"}


def arch_of(name: str) -> Arch:
    """The adapter of a clone architecture (``bpr``, ``lmf``, ``neumf``/``ncf``)."""
    key = ALIASES.get(name, name)
    if key not in ARCHS:
        raise ConfigError(f"clone: unsupported clone architecture {name!r}; supported: {', '.join(sorted([*ARCHS, *ALIASES]))}")
    return ARCHS[key]


def pair_scores(model: Recommender, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores ``[B, n]`` of ``items [B, n]`` for ``users [B]``, for any clone built here."""
    if isinstance(model, (FusedClone, PopularityClone)):
        return model.pair_scores(users, items)
    return arch_of(model.name).pair(model, users, items, lambda table: getattr(model, table)(items))


# ----------------------------------------------------------------------------- plain clones
def clone_model_config(clone: str, embedding_dim: int, options: dict[str, Any] | None = None) -> ModelConfig:
    """The validated model config of a clone (``options`` are extra model hyperparameters)."""
    arch = arch_of(clone)
    return make_config({**(options or {}), "model": arch.name, "embedding_dim": embedding_dim})


def plain_clone(config: ModelConfig, num_users: int, num_items: int, seed: int) -> Recommender:
    """A freshly initialised registered model (initialisation drawn from ``seed``)."""
    arch_of(config.model)
    return seeded_model(config, num_users, num_items, seed)


def pretrained_clone(config: ModelConfig, aux: Recommender, num_users: int, seed: int) -> Recommender:
    """PTA(Pre) (Table 5): a clone whose item parameters start from the auxiliary model's."""
    clone = plain_clone(config, num_users, aux.num_items, seed)
    with torch.no_grad():
        for name in arch_of(config.model).item_side:
            getattr(clone, name).weight.copy_(getattr(aux, name).weight)
    return clone


def frozen_aux_clone(config: ModelConfig, aux: Recommender, num_users: int, seed: int) -> Recommender:
    """The ablation: the auxiliary model with fresh user parameters; everything else frozen."""
    clone = plain_clone(config, num_users, aux.num_items, seed)
    user_side = arch_of(config.model).user_side
    state = {k: v for k, v in aux.state_dict().items() if k.split(".")[0] not in user_side}
    clone.load_state_dict(state, strict=False)
    for name, param in clone.named_parameters():
        param.requires_grad_(name.split(".")[0] in user_side)
    return clone


# ----------------------------------------------------------------------------- PTA fusion
class FusedClone(Recommender[ModelConfig]):
    """PTA's clone (Eq. 5–8): a base clone whose item tables are fused with frozen auxiliary ones."""

    name: ClassVar[str] = "pta_fused"
    sequential: ClassVar[bool] = False
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, base: Recommender, aux: Recommender, generator: torch.Generator):
        super().__init__(base.config, base.num_users, base.num_items)
        if aux.num_items != base.num_items or aux.name != base.name:
            raise ConfigError("the auxiliary model must share the clone's architecture and item space")
        self.base = base
        self.arch = arch_of(base.name)
        self.tables = [item for _, item in self.arch.fused]
        self.users_of = dict((item, user) for user, item in self.arch.fused)
        self.attn_w = nn.ParameterDict()
        self.attn_b = nn.ParameterDict()
        for table in self.tables:
            aux_table = getattr(aux, table).weight.detach().clone()
            self.register_buffer(f"aux_{table}", aux_table)
            dim = aux_table.shape[1]
            bound = 1.0 / dim**0.5  # nn.Linear's default initialisation, drawn from our generator
            self.attn_w[table] = nn.Parameter((torch.rand(dim, generator=generator) * 2 - 1) * bound)
            # Eq. 5's bias: it cancels in Eq. 6's softmax over (alpha, beta), so it never moves a score (kept as the paper writes it)
            self.attn_b[table] = nn.Parameter((torch.rand(1, generator=generator) * 2 - 1) * bound)

    def aux_table(self, table: str) -> torch.Tensor:
        return getattr(self, f"aux_{table}")

    def _gathered(self, table: str, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``p [B, 1, d]`` (the user's vector of the table's pair), ``q^c`` and ``q^a`` ``[B, n, d]``."""
        p = getattr(self.base, self.users_of[table])(users)[:, None, :]
        return p, getattr(self.base, table)(items), self.aux_table(table)[items]

    def _clone_weight(self, table: str, p: torch.Tensor, q_c: torch.Tensor, q_a: torch.Tensor) -> torch.Tensor:
        """``α'`` of Eq. 6, ``[B, n]``: the softmax of Eq. 5's ``(α, β)`` over the two is
        ``σ(α − β)``, and ``α − β = (ReLU(p ⊙ q^c) − ReLU(p ⊙ q^a)) · w`` (the shared bias cancels)."""
        return torch.sigmoid((F.relu(p * q_c) - F.relu(p * q_a)) @ self.attn_w[table])

    def fusion_weights(self, table: str, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α', β')`` of Eq. 6 for ``items [B, n]`` of ``users [B]``: ``[B, n]`` each, summing to one."""
        alpha = self._clone_weight(table, *self._gathered(table, users, items))
        return alpha, 1.0 - alpha

    def fused_items(self, table: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``q^f = α' q^c + β' q^a`` of Eq. 7 for ``items [B, n]``: ``[B, n, d]``, each table row
        gathered once (as ``q^a + α' (q^c − q^a)``)."""
        p, q_c, q_a = self._gathered(table, users, items)
        return q_a + self._clone_weight(table, p, q_c, q_a)[..., None] * (q_c - q_a)

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Eq. 8 (and its NeuMF/LMF analogues) for ``items [B, n]``: ``[B, n]``."""
        fused = lambda table: self.fused_items(table, users, items)  # noqa: E731
        return self.arch.pair(self.base, users, items, fused)

    def clone_weight_full(self, table: str, users: torch.Tensor) -> torch.Tensor:
        """``α'`` for every catalogue item, ``[B, N]``, without a ``B×N×d`` intermediate (see module doc)."""
        p = getattr(self.base, self.users_of[table])(users)
        w = self.attn_w[table]
        q_c, q_a = getattr(self.base, table).weight, self.aux_table(table)
        pos, neg = F.relu(p) * w, F.relu(-p) * w
        diff = pos @ (F.relu(q_c) - F.relu(q_a)).T + neg @ (F.relu(-q_c) - F.relu(-q_a)).T
        return torch.sigmoid(diff)

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.arch.closed_form:
            ((user_table, table),) = self.arch.fused
            p = getattr(self.base, user_table)(inputs)
            a = self.clone_weight_full(table, inputs)
            scores = a * (p @ getattr(self.base, table).weight.T) + (1 - a) * (p @ self.aux_table(table).T)
            return scores if self.arch.dot_bias is None else scores + self.arch.dot_bias(self.base, inputs)
        return chunked_scores(self.pair_scores, inputs, self.num_items, width=self._width())

    def _width(self) -> int:
        return max(self.aux_table(t).shape[1] for t in self.tables) * 2

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BPR (Eq. 4) on a ``PairSampler`` batch: Alg. 1 lines 3–13."""
        items = torch.cat([batch["pos"][:, None], batch["neg"]], dim=1)
        s = self.pair_scores(batch["users"], items)
        return data_loss("bpr", s[:, 0], s[:, 1:])

    def make_sampler(self, train: Interactions, batch_size: int) -> PairSampler:
        return PairSampler(train, batch_size, getattr(self.config, "num_negatives", 1))


def chunked_scores(
    pair_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], users: torch.Tensor, num_items: int, width: int
) -> torch.Tensor:
    """Full-catalogue scores from a pair scorer, item chunk by item chunk (bounded memory)."""
    chunk = max(1, _CHUNK_ELEMENTS // max(1, users.shape[0] * width))
    parts = []
    for start in range(0, num_items, chunk):
        items = torch.arange(start, min(start + chunk, num_items), device=users.device)
        parts.append(pair_fn(users, items[None, :].expand(users.shape[0], -1)))
    return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------- popularity
class PopularityConfig(ModelConfig, frozen=True):
    """The popularity clone has no hyperparameters."""

    model: Literal["popularity"] = "popularity"
    embedding_dim: int = 1


class PopularityClone(Recommender[PopularityConfig]):
    """Calibration clone: every user's score of item ``j`` is its interaction count in the
    attacker's own data (target share + auxiliary); ranking excludes seen items downstream."""

    name: ClassVar[str] = "popularity"
    sequential: ClassVar[bool] = False
    Config: ClassVar[type[ModelConfig]] = PopularityConfig
    popularity: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, popularity: np.ndarray, num_users: int):
        pop = np.asarray(popularity, dtype=np.float32)
        super().__init__(PopularityConfig(), num_users, pop.size)
        self.register_buffer("popularity", torch.from_numpy(pop.copy()))

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.popularity[None, :].expand(inputs.shape[0], -1)

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.popularity[items]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise ConfigError("the popularity clone is counted, not trained: it has no loss")

    def make_sampler(self, train: Interactions, batch_size: int) -> PairSampler:
        raise ConfigError("the popularity clone is counted, not trained: it has no sampler")


def popularity_counts(*logs: Interactions | None) -> np.ndarray:
    """Summed item counts of the given logs (``None`` entries skipped)."""
    present = [log for log in logs if log is not None]
    if not present:
        raise ConfigError("popularity needs target_data or auxiliary data")
    return np.sum([log.item_counts for log in present], axis=0)
