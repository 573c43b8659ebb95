"""The generic trainer, evaluation protocol, checkpoints and the target cache."""

from raysteal.training.checkpoint import load_checkpoint, save_checkpoint
from raysteal.training.config import TrainConfig, make_train_config
from raysteal.training.evaluate import evaluate, validation_ndcg
from raysteal.training.presets import PRESETS, preset
from raysteal.training.target_cache import get_or_train_target, load_trained_target, make_split, train_target
from raysteal.training.trainer import TrainResult, fit, resolve_device, seeded_model

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "fit",
    "get_or_train_target",
    "load_checkpoint",
    "load_trained_target",
    "make_split",
    "make_train_config",
    "preset",
    "resolve_device",
    "save_checkpoint",
    "seeded_model",
    "train_target",
    "validation_ndcg",
]
