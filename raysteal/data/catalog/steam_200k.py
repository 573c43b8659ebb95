"""The ``steam-200k`` dataset: Steam-200k purchases."""

from raysteal.data import formats
from raysteal.data.datasets import FetchSpec, register_dataset


@register_dataset
class Steam200K:
    """Steam-200k purchases (``steam-200k``): the attributes are its :class:`~raysteal.data.datasets.DatasetSpec`."""

    name = "steam-200k"
    description = "Steam-200k purchases (CaseRecommender ids): 129,511 rows, 12,393 users, 5,155 games"
    folder = "steam"
    files = (("game_purchase.dat.gz", formats.read_caserec), ("game_purchase.dat", formats.read_caserec))
    paper = "dedupe+kcore5"
    fetch = FetchSpec(
        url="https://raw.githubusercontent.com/caserec/Datasets-for-Recommender-Systems/82b08c787a6b50d78129b9df842285b89bc05b85/Processed%20Datasets/Steam/steam.zip",
        sha256="befdc608cb06f83b97f9d7a34437ca3d76a8ad648dd9304d837ebe3fdf92a77e",
        kind="zip",
        target=".",
        hash_source="shared/data/README.md (source sha256 of steam.zip)",
    )
    notes = "a stand-in for the paper's Steam (not the same data); no timestamps, file order kept"
    expected = {"none": (129_511, 12_393, 5_155), "kcore5": (110_889, 3_730, 2_628), "paper": (110_176, 3_726, 2_628)}
