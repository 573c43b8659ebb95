"""Typed configs of the sequential extraction recipes (DFME, BAHSD, Zhu et al. on sequences).

Every recipe's config derives from :class:`ExtractionConfigBase` (unknown keys are errors) and is
registered with its recipe; :func:`make_extraction_config` validates a plain dict (from an
experiment file or a Ray Tune trial) into the right class, naming the offending key on error.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from raysteal.attacks.registry import get_recipe
from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.errors import ConfigError, RaystealError, describe_validation
from raysteal.models.base import make_config, model_class


class ExtractionConfigBase(NumbersAreNotBooleans):
    """Fields shared by every sequential extraction recipe.

    Synthesis / querying: ``k`` (length of the ranked list asked of the black box; Yue et al.
    use 100), ``budget_queries`` and/or ``budget_sequences`` (at least one, or a client with a
    finite budget), ``max_len`` (length of synthetic sequences; default the teacher's),
    ``synthesis`` (``"autoregressive"`` or ``"random"``), ``query_batch`` (sequences per request).

    Student training: ``student`` (a model config for :func:`raysteal.models.build_model`; its
    ``max_len`` defaults to the sequences'), ``epochs``, ``batch_size`` (sequences per step, every
    queried prefix of a sequence is trained in the same forward pass), ``lr``, ``weight_decay``
    (defaults: batch 64 sequences, lr 1e-2 — measured on ML-1M/SASRec on a CPU: at a fixed number
    of epochs, agreement grows with the number of optimiser steps, so 250-sequence batches learned
    far slower even at lr 2e-2),
    ``positions_per_sequence`` (subsample that many queried prefixes per sequence per batch;
    ``None`` = all), ``num_negatives`` (uniform items outside the list, per prefix), ``margin``
    (Yue et al.'s hinge margin), ``grad_clip`` (Yue et al. clip at 5), ``amp`` (bf16 autocast on a
    GPU), ``realign`` (share of sequences per batch cut and right-aligned at a random prefix, see
    :func:`raysteal.extraction.student.train_student`).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    family: ClassVar[str] = "sequential"
    """The recipe family whose recipes these configs validate (:data:`raysteal.attacks.registry.FAMILIES`)."""
    uses_real_sequences: ClassVar[bool] = False
    """Whether the recipe needs the attacker's real sequences (``SequenceKnowledge.sequences``)."""
    uses_queries: ClassVar[bool] = True
    """Whether the recipe queries the black box (a budget of 0 leaves it nothing to learn from)."""

    attack: str
    # each recipe's config narrows `attack` to its Literal name, the tag that tells the configs apart;
    # pyright calls that an incompatible override of a mutable field, hence the ignore beside each
    student: dict[str, Any] = Field(default_factory=lambda: {"model": "sasrec"})
    k: int = Field(100, ge=1)
    epochs: int = Field(30, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-2, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    positions_per_sequence: int | None = Field(None, ge=1)
    num_negatives: int = Field(100, ge=0)
    margin: float = Field(0.5, ge=0.0)
    grad_clip: float | None = Field(5.0, gt=0.0)
    amp: bool = True
    realign: float = Field(0.0, ge=0.0, le=1.0)
    budget_queries: int | None = Field(None, ge=0)
    budget_sequences: int | None = Field(None, ge=1)
    max_len: int | None = Field(None, ge=1)
    synthesis: Literal["autoregressive", "random"] = "autoregressive"
    query_batch: int = Field(1024, ge=1)

    @field_validator("student")
    @classmethod
    def _student_names_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "model" not in value:
            raise ValueError("needs a 'model' key naming a registered sequential model")
        # checked now, not after the budget is spent on answers the student could not use
        try:
            if not getattr(model_class(str(value["model"])), "sequential", False):
                raise ValueError(f"model {value['model']!r} is not a sequential model (the student reads item sequences)")
            make_config({"max_len": 50, **value})
        except RaystealError as err:
            raise ValueError(str(err)) from None
        return dict(value)

    def row_labels(self) -> dict[str, Any]:
        """Result-row columns naming the configuration: ``setting`` (``synthetic`` or ``real``
        sequences), ``baseline`` (a one-size-fits-all objective) and ``variant`` (a short name
        shared by every seed's row of one configuration)."""
        return {"setting": "real" if self.uses_real_sequences else "synthetic", "baseline": True, "variant": self.attack}

    def student_config(self, max_len: int) -> dict[str, Any]:
        """The student's model config with ``max_len`` defaulting to the sequences' length."""
        return {"max_len": int(max_len), **self.student}

    def training_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`raysteal.extraction.student.train_student` from this config."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "positions_per_sequence": self.positions_per_sequence,
            "num_negatives": self.num_negatives,
            "amp": self.amp,
            "grad_clip": self.grad_clip,
            "realign": self.realign,
        }


def make_extraction_config(config: dict[str, Any] | ExtractionConfigBase) -> ExtractionConfigBase:
    """Validate ``config`` (a dict with an ``attack`` key) into its recipe's registered config class.

    Raises ``ConfigError`` naming the key: a missing ``attack``, an unknown attack (listing the
    known ones), unknown keys, or bad values.
    """
    if isinstance(config, ExtractionConfigBase):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"attack: an extraction config must be a mapping, got {type(config).__name__}")
    if "attack" not in config:
        raise ConfigError("attack: missing key naming the sequential extraction recipe (e.g. 'dfme')")
    recipe = get_recipe(str(config["attack"]), ExtractionConfigBase.family)
    try:
        return recipe.config_cls(**config)
    except ValidationError as err:
        raise ConfigError(
            f"invalid {recipe.name} config: {describe_validation(err, unknown=f'unknown key for attack {recipe.name!r}')}"
        ) from None
