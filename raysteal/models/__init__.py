"""The model zoo: importing this package registers every model (see :mod:`raysteal.models.base`).

Collaborative: ``bpr`` (BPR-MF), ``lmf`` (logistic MF), ``neumf`` (alias ``ncf``).
Sequential: ``sasrec``, ``bert4rec``, ``gru4rec``, ``narm``, ``stamp``.
A new model is one module of this package defining a ``@register_model`` class: importing the
package imports every module in it (in name order, the registry's order), so nothing else is edited.
"""

import importlib
import pkgutil

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

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # a model module registers its class on import

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
