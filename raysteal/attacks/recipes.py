"""Where the collaborative recipes lived before each paper got its own file: Zhu et al.'s are in
:mod:`raysteal.attacks.zhu2023`, the popularity calibration in :mod:`raysteal.attacks.baselines`.
This module hands on the name callers import from here (``train_auxiliary_model``)."""

from raysteal.attacks.zhu2023 import train_auxiliary_model

__all__ = ["train_auxiliary_model"]
