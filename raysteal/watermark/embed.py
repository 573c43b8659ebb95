"""Training the watermark into a target (AOW, arXiv 2407.21034, §3.2: the watermark sequence is
"ingrained into the model's memory through training" alongside the normal data).

Each watermark sequence joins the training log as ``copies`` extra users whose whole history is
the sequence, so a next-item model learns every prefix → next-item step of it; the copies set the
watermark's share of the training windows (its strength). The extra users hold no validation or
test item, so early stopping and the reported accuracy concern the real users only.
"""

from __future__ import annotations

import numpy as np

from raysteal.data.interactions import Interactions
from raysteal.data.splits import NO_ITEM, LeaveOneOut
from raysteal.watermark.spec import WatermarkConfig, watermark_sequences


def watermarked_split(split: LeaveOneOut, config: WatermarkConfig) -> LeaveOneOut:
    """``split`` with the watermark's users appended to ``train`` (``sequences × copies`` users, ids
    after the real ones); ``valid`` / ``test`` get :data:`NO_ITEM` for them."""
    train = split.train
    marks = watermark_sequences(config, train.num_items)
    rows = np.repeat(marks, config.copies, axis=0)  # [sequences * copies, length], copies adjacent
    extra = rows.shape[0]
    users = np.concatenate([train.users, np.repeat(np.arange(train.num_users, train.num_users + extra), config.length)])
    items = np.concatenate([train.items, rows.reshape(-1)])
    marked = Interactions(
        users=users, items=items, num_users=train.num_users + extra, num_items=train.num_items, name=f"{train.name}+watermark"
    )
    none = np.full(extra, NO_ITEM, dtype=np.int64)
    return LeaveOneOut(train=marked, valid=np.concatenate([split.valid, none]), test=np.concatenate([split.test, none]))
