"""Datasets, preprocessing and splits: everything upstream of the models.

>>> from raysteal.data import load_dataset, split_target_auxiliary, leave_one_out
>>> log = load_dataset("synthetic")                      # no files needed
>>> log = load_dataset("tafeng", preprocess="paper")     # 630,767 / 19,451 / 10,480
"""

from raysteal.data import catalog  # noqa: F401  (registers every dataset)
from raysteal.data.datasets import (
    DatasetSpec,
    FetchSpec,
    dataset_names,
    dataset_spec,
    file_formats,
    load_dataset,
    load_file,
    load_table,
    locate,
    register_dataset,
    resolve_preprocess,
)
from raysteal.data.fetch import FetchResult, fetch
from raysteal.data.interactions import Interactions
from raysteal.data.preprocess import Preprocess, build_interactions, first_occurrence_mask, kcore_mask
from raysteal.data.splits import (
    NO_ITEM,
    HeadTailGroups,
    LeaveOneOut,
    TargetAuxiliarySplit,
    attacker_users,
    head_tail_groups,
    leave_one_out,
    split_target_auxiliary,
)
from raysteal.data.synthetic import SyntheticConfig
from raysteal.data.synthetic import generate as generate_synthetic

__all__ = [
    "NO_ITEM",
    "DatasetSpec",
    "FetchResult",
    "FetchSpec",
    "HeadTailGroups",
    "Interactions",
    "LeaveOneOut",
    "Preprocess",
    "SyntheticConfig",
    "TargetAuxiliarySplit",
    "attacker_users",
    "build_interactions",
    "dataset_names",
    "dataset_spec",
    "fetch",
    "file_formats",
    "first_occurrence_mask",
    "generate_synthetic",
    "head_tail_groups",
    "kcore_mask",
    "leave_one_out",
    "load_dataset",
    "load_file",
    "load_table",
    "locate",
    "register_dataset",
    "resolve_preprocess",
    "split_target_auxiliary",
]
