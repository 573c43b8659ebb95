"""The one interface every recommender implements, and the model registry.

A model scores a batch of *inputs* against the whole catalogue:

* collaborative models (``sequential = False``): inputs are user ids, ``int64 [B]``;
* sequential models (``sequential = True``): inputs are item sequences, ``int64 [B, L]``,
  **left-padded with ``PAD = -1``** (the most recent item is the last column).

``score`` returns ``float [B, num_items]``. Training goes through ``make_sampler`` (how the
model wants its batches drawn from the training log) and ``loss`` (one batch in, a scalar
out), so one generic trainer (:mod:`raysteal.training`) fits every model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import ConfigDict, Field
from torch import nn

from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.errors import ConfigError, UnknownNameError, describe_validation

PAD = -1
"""Padding value in sequence inputs (public API). Models shift ids internally as they need."""


# frozen as a class keyword, which type checkers read (they ignore model_config): the fields are
# read-only, so a subclass (which repeats frozen=True) may narrow `model` to its Literal name.
# pyright's dataclass rule refuses a frozen class over the non-frozen NumbersAreNotBooleans; pydantic
# allows it, and that base adds a validator, no field.
class ModelConfig(NumbersAreNotBooleans, frozen=True):  # pyright: ignore[reportGeneralTypeIssues]
    """Base of every model's hyperparameters; subclasses add fields. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="registered model name")
    embedding_dim: int = Field(64, ge=1)


class BatchSampler(ABC):
    """Draws one epoch of training batches (dicts of tensors) from a training log."""

    @abstractmethod
    def epoch(self, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the batches of one epoch, drawn with ``generator`` (explicit randomness)."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of batches per epoch."""


ConfigT = TypeVar("ConfigT", bound=ModelConfig)
"""A model's config class (``Recommender[BPRConfig]``: ``self.config`` is a ``BPRConfig``)."""


class Recommender(nn.Module, ABC, Generic[ConfigT]):
    """Base class of all models (see module docstring for the input convention)."""

    name: ClassVar[str]
    sequential: ClassVar[bool]
    Config: ClassVar[type[ModelConfig]]
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names the model answers to (``ncf`` for ``neumf``)."""

    def __init__(self, config: ConfigT, num_users: int, num_items: int):
        super().__init__()
        if num_items < 1 or num_users < 0:
            raise ConfigError("num_items must be >= 1 and num_users >= 0")
        self.config: ConfigT = config
        self.num_users = int(num_users)
        self.num_items = int(num_items)

    @abstractmethod
    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores of every catalogue item for each input row: ``[B, num_items]``."""

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of one batch produced by this model's sampler."""

    @abstractmethod
    def make_sampler(self, train: Any, batch_size: int) -> BatchSampler:
        """The sampler that turns the training log (an ``Interactions``) into batches."""

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (JSON-serialisable)."""
        return {"config": self.config.model_dump(), "num_users": self.num_users, "num_items": self.num_items}


_REGISTRY: dict[str, type[Recommender]] = {}
_ALIASES: dict[str, str] = {}


_Model = TypeVar("_Model", bound=type[Recommender])


def register_model(cls: _Model) -> _Model:
    """Class decorator: add a model to the registry under ``cls.name`` (and its ``aliases``)."""
    if cls.name in _REGISTRY:
        raise ValueError(f"model {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    for alias in cls.aliases:
        register_alias(alias, cls.name)
    return cls


def register_alias(alias: str, name: str) -> None:
    """Let ``alias`` stand for the registered model ``name`` (e.g. ``ncf`` -> ``neumf``)."""
    if alias in _REGISTRY or _ALIASES.get(alias, name) != name:
        raise ValueError(f"model alias {alias!r} already taken")
    _ALIASES[alias] = name


def model_names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_class(name: str) -> type[Recommender]:
    """The class registered as ``name`` (clear error listing the known names otherwise)."""
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except KeyError:
        raise UnknownNameError("model", name, list(_REGISTRY)) from None


def make_config(config: dict[str, Any] | ModelConfig) -> ModelConfig:
    """Validate a config dict (``{"model": name, ...}``) into that model's config class."""
    if isinstance(config, ModelConfig):
        return config
    if "model" not in config:
        raise ConfigError("model config needs a 'model' key naming a registered model")
    cls = model_class(config["model"])
    try:
        return cls.Config(**{**config, "model": cls.name})
    except Exception as err:  # pydantic.ValidationError names the offending key
        raise ConfigError(f"invalid config for model {config['model']!r}: {describe_validation(err)}") from None


def build_model(config: dict[str, Any] | ModelConfig, num_users: int, num_items: int) -> Recommender:
    """Instantiate a registered model from its config."""
    cfg = make_config(config)
    return model_class(cfg.model)(cfg, num_users=num_users, num_items=num_items)
