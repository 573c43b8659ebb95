"""The model zoo: importing this package registers every model (see :mod:`raysteal.models.base`).

Collaborative: ``bpr`` (BPR-MF), ``lmf`` (logistic MF), ``neumf`` (alias ``ncf``).
Sequential: ``sasrec``, ``bert4rec``, ``gru4rec``, ``narm``, ``stamp``.
A new model is one module defining a ``@register_model`` class, imported here.
"""

from raysteal.models import bert4rec, bpr, gru4rec, lmf, narm, neumf, sasrec, stamp  # noqa: F401  (registration)
from raysteal.models.base import (
    PAD,
    BatchSampler,
    ModelConfig,
    Recommender,
    build_model,
    make_config,
    model_class,
    model_names,
    register_alias,
    register_model,
)

__all__ = [
    "PAD",
    "BatchSampler",
    "ModelConfig",
    "Recommender",
    "build_model",
    "make_config",
    "model_class",
    "model_names",
    "register_alias",
    "register_model",
]
