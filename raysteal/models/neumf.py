"""NeuMF (He et al. 2017, "Neural Collaborative Filtering"), registered as ``neumf`` (alias ``ncf``).

GMF branch ``φ^GMF = p^G_u ⊙ q^G_i`` (Eq. 9), MLP branch ``φ^MLP = a_L(W_L^T(... a_1(W_1^T
[p^M_u; q^M_i] + b_1) ...))`` with ReLU towers halving at each layer (Eq. 10/§3.3), fused as
``ŷ_ui = σ(h^T [φ^GMF; φ^MLP])`` (Eq. 12). Trained pointwise with binary cross-entropy
(Eq. 7) on each positive and ``num_negatives`` (4) sampled negatives. As in the authors'
code, for predictive factors f the MLP hidden layers are (4f, 2f, f) and each MLP embedding
has 4f dims.

``pretrain: true`` trains NeuMF as He et al. built it (§3.4.1): GMF (``variant: gmf``, the GMF
branch and its own output layer) and MLP (``variant: mlp``) are first trained from random
initialisation until validation stops improving, then NeuMF starts from their weights, its
output layer the concatenation ``h ← [α h^GMF; (1 − α) h^MLP]`` (``pretrain_alpha`` α = 0.5; the
bias likewise ``α b^GMF + (1 − α) b^MLP``, as in the authors' code), and is trained on. The
generic trainer (:func:`raysteal.training.fit`) runs the pre-training when it starts a model
whose :meth:`NeuMF.pretraining` names parts (:mod:`raysteal.training.pretrain`).

Full-catalogue scoring splits the first MLP layer as ``W_1 [p; q] = W_u p + W_i q``, so the
item half is computed once per item and broadcast against the users, item chunk by chunk.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.models.base import ModelConfig, Recommender, register_model
from raysteal.models.pair_samplers import PairSampler, hardest_candidates

_SCORE_CHUNK_ELEMENTS = 1 << 24
"""Upper bound on ``users x items x hidden`` activations materialised at once by ``score``."""


class NeuMFConfig(ModelConfig, frozen=True):
    """Hyperparameters of NeuMF; ``embedding_dim`` is the number of predictive factors f."""

    model: Literal["neumf"] = "neumf"
    embedding_dim: int = Field(16, ge=1, description="predictive factors f (GMF embedding size)")
    mlp_layers: tuple[int, ...] | None = Field(None, description="MLP hidden sizes; default (4f, 2f, f)")
    num_negatives: int = Field(4, ge=1, description="sampled negatives per positive")
    init_std: float = Field(0.01, gt=0.0, description="std of the embeddings' normal initialisation")
    reject_seen: bool = Field(True, description="redraw negatives the user already interacted with")
    negative_candidates: int = Field(1, ge=1, le=1024, description="uniform draws per negative; the highest-scored one trains (DNS)")
    variant: Literal["neumf", "gmf", "mlp"] = Field(
        "neumf", description="neumf: both branches fused; gmf / mlp: that branch alone with its own output layer (He et al.'s GMF and MLP)"
    )
    pretrain: bool = Field(False, description="pre-train GMF and MLP, then fuse them into NeuMF before training it (He et al. 2017 §3.4.1)")
    pretrain_alpha: float = Field(
        0.5, gt=0.0, lt=1.0, description="weight of the pre-trained GMF output layer in the fused one (1 - alpha: MLP's)"
    )
    pretrain_epochs: int | None = Field(None, ge=1, description="epoch budget of each pre-training (None: the train config's epochs)")
    pretrain_lr: float | None = Field(None, gt=0.0, description="learning rate of the pre-trainings (None: the train config's lr)")

    @model_validator(mode="after")
    def _positive_layers(self) -> NeuMFConfig:
        if self.mlp_layers is not None and (not self.mlp_layers or min(self.mlp_layers) < 1):
            raise ValueError(f"mlp_layers must be non-empty positive sizes, got {self.mlp_layers}")
        if self.pretrain and self.variant != "neumf":
            raise ValueError(f"pretrain fuses GMF and MLP into NeuMF: variant must be 'neumf', got {self.variant!r}")
        return self

    def hidden_sizes(self) -> tuple[int, ...]:
        f = self.embedding_dim
        return self.mlp_layers or (4 * f, 2 * f, f)


def _linears(tower: nn.ModuleList) -> list[nn.Linear]:
    """The tower's layers, typed: torch's ``nn.ModuleList`` is not generic, its items type as ``Module``."""
    return cast("list[nn.Linear]", list(tower))


@register_model
class NeuMF(Recommender[NeuMFConfig]):
    """GMF and MLP towers fused by one output layer (He et al. 2017, Fig. 3)."""

    name = "neumf"
    aliases = ("ncf",)
    sequential = False
    Config = NeuMFConfig

    def __init__(self, config: NeuMFConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        f = config.embedding_dim
        hidden = config.hidden_sizes()
        self.mlp_dim = hidden[0]
        self.has_gmf, self.has_mlp = config.variant in ("neumf", "gmf"), config.variant in ("neumf", "mlp")
        if self.has_gmf:
            self.user_gmf = nn.Embedding(num_users, f)
            self.item_gmf = nn.Embedding(num_items, f)
        if self.has_mlp:
            self.user_mlp = nn.Embedding(num_users, self.mlp_dim)
            self.item_mlp = nn.Embedding(num_items, self.mlp_dim)
        for emb in (getattr(self, name) for name in ("user_gmf", "item_gmf", "user_mlp", "item_mlp") if hasattr(self, name)):
            nn.init.normal_(emb.weight, std=config.init_std)
        if self.has_mlp:
            sizes = (2 * self.mlp_dim, *hidden)
            self.tower = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # the output layer reads [φ^GMF; φ^MLP] (the GMF part first), or the one branch there is
        self.gmf_width = f if self.has_gmf else 0
        self.predict = nn.Linear(self.gmf_width + (hidden[-1] if self.has_mlp else 0), 1)

    def _logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid ``ŷ`` for paired ``users`` / ``items`` of the same shape."""
        parts = []
        if self.has_gmf:
            parts.append(self.user_gmf(users) * self.item_gmf(items))
        if self.has_mlp:
            h = torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1)
            for layer in self.tower:
                h = F.relu(layer(h))
            parts.append(h)
        return self.predict(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])[..., 0]

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        f = self.gmf_width
        w_out = self.predict.weight[0]
        out = self.predict.bias.expand(inputs.shape[0], self.num_items)
        if self.has_gmf:
            out = out + (self.user_gmf(inputs) * w_out[:f]) @ self.item_gmf.weight.T  # [B, I]
        if not self.has_mlp:
            return out
        first = _linears(self.tower)[0]
        h_user = self.user_mlp(inputs) @ first.weight[:, : self.mlp_dim].T + first.bias  # [B, H1]
        h_item = self.item_mlp.weight @ first.weight[:, self.mlp_dim :].T  # [I, H1]
        chunk = max(1, _SCORE_CHUNK_ELEMENTS // max(1, inputs.shape[0] * h_user.shape[1]))
        parts = []
        for start in range(0, self.num_items, chunk):
            h = F.relu(h_user[:, None, :] + h_item[None, start : start + chunk, :])
            for layer in self.tower[1:]:
                h = F.relu(layer(h))
            parts.append(h @ w_out[f:])
        return out + torch.cat(parts, dim=1)

    def pretraining(self) -> dict[str, dict]:
        """The parts to pre-train before this model trains (``{name: model config}``; empty unless
        ``pretrain``): GMF and MLP with this model's factors and towers (He et al. §3.4.1)."""
        if not self.config.pretrain:
            return {}
        base = self.config.model_dump()
        base.update(pretrain=False, pretrain_epochs=None, pretrain_lr=None)
        return {"gmf": {**base, "variant": "gmf"}, "mlp": {**base, "variant": "mlp"}}

    def pretraining_settings(self, train: object) -> dict:
        """Train-config overrides of the pre-trainings: Adam, as He et al. train GMF and MLP from
        scratch, and ``pretrain_epochs`` / ``pretrain_lr`` where set. ``train``: NeuMF's own train
        config; when that fine-tunes with SGD, the pre-trainings need their own (Adam) ``pretrain_lr``."""
        cfg = self.config
        if getattr(train, "optimizer", "adamw") != "adamw" and cfg.pretrain_lr is None:
            raise ConfigError(
                "pretrain: NeuMF fine-tunes with sgd here, so its GMF and MLP pre-trainings (Adam) need their own pretrain_lr (e.g. 5e-3)"
            )
        over = {"optimizer": "adamw"}
        return {**over, **{k: v for k, v in (("epochs", cfg.pretrain_epochs), ("lr", cfg.pretrain_lr)) if v is not None}}

    def fuse_pretrained(self, parts: dict[str, NeuMF]) -> None:
        """Start from the pre-trained GMF and MLP (He et al. §3.4.1): their embeddings and towers
        as they are, the output layer ``[α h^GMF; (1 − α) h^MLP]`` with bias ``α b^GMF + (1 − α) b^MLP``."""
        gmf, mlp = parts["gmf"], parts["mlp"]
        alpha = float(self.config.pretrain_alpha)
        f = self.gmf_width
        with torch.no_grad():
            for name in ("user_gmf", "item_gmf"):
                getattr(self, name).weight.copy_(getattr(gmf, name).weight)
            for name in ("user_mlp", "item_mlp"):
                getattr(self, name).weight.copy_(getattr(mlp, name).weight)
            for mine, theirs in zip(_linears(self.tower), _linears(mlp.tower)):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
            self.predict.weight[:, :f].copy_(alpha * gmf.predict.weight)
            self.predict.weight[:, f:].copy_((1.0 - alpha) * mlp.predict.weight)
            self.predict.bias.copy_(alpha * gmf.predict.bias + (1.0 - alpha) * mlp.predict.bias)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, pos, neg = batch["users"], batch["pos"], batch["neg"]
        if self.config.negative_candidates > 1:  # DNS: keep each negative's highest-scored draw
            with torch.no_grad():
                drawn = self._logits(users[:, None].expand_as(neg), neg)
            neg = neg.gather(1, hardest_candidates(drawn, self.config.negative_candidates))
        items = torch.cat([pos[:, None], neg], dim=1)  # [B, 1 + n]
        logits = self._logits(users[:, None].expand_as(items), items)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)

    def make_sampler(self, train: Interactions, batch_size: int) -> PairSampler:
        draws = self.config.num_negatives * self.config.negative_candidates
        return PairSampler(train, batch_size, draws, self.config.reject_seen)
