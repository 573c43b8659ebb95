"""Share trained auxiliary models between runs (PTA, PTAQ, PTA(Pre), aux_frozen of one seed, and
the same seed against every target): the auxiliary model depends only on the auxiliary data, the
clone architecture, its training hyperparameters and the seed, never on the target."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from raysteal.attacks import AttackConfig, get_recipe
from raysteal.attacks.zhu2023 import train_auxiliary_model
from raysteal.data.interactions import Interactions
from raysteal.models.base import Recommender
from raysteal.training.checkpoint import load_checkpoint, save_checkpoint

AUX_FIELDS = ("aux_epochs", "lr", "batch_size", "num_negatives", "data_loss", "weight_decay", "amp")


def needs_auxiliary_model(config: AttackConfig) -> bool:
    return "auxiliary" in get_recipe(config.attack).needs


def auxiliary_key(config: AttackConfig, auxiliary: Interactions, seed: int) -> str:
    spec = {
        "data": auxiliary.fingerprint(),
        "clone": config.clone_config().model_dump(mode="json"),
        "train": {f: getattr(config, f) for f in AUX_FIELDS},
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def shared_auxiliary_model(config: AttackConfig, auxiliary: Interactions, seed: int, device: str, cache_dir: str | Path) -> Recommender:
    """The auxiliary model a run of ``config`` with ``seed`` trains, from the cache or trained once."""
    path = Path(cache_dir) / "auxiliary" / f"{auxiliary_key(config, auxiliary, seed)}.pt"
    if path.is_file():
        model, _ = load_checkpoint(path)
        return model.eval().requires_grad_(False)
    model = train_auxiliary_model(config, auxiliary, seed=seed, device=device)
    save_checkpoint(path, model, fingerprint=auxiliary.fingerprint())  # atomic: racing workers never read half a file
    return model
