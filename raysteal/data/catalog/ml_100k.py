"""The ``ml-100k`` dataset: MovieLens-100K."""

from raysteal.data import formats
from raysteal.data.datasets import FetchSpec, register_dataset


@register_dataset
class MovieLens100K:
    """MovieLens-100K (``ml-100k``): the attributes are its :class:`~raysteal.data.datasets.DatasetSpec`."""

    name = "ml-100k"
    description = "MovieLens-100K: 100,000 ratings, 943 users, 1,682 movies (GroupLens u.data)"
    folder = "ml-100k"
    files = (("u.data", formats.read_ml100k), ("u.data.gz", formats.read_ml100k))
    paper = "dedupe"
    fetch = FetchSpec(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        kind="zip",
        target=".",
        size=4924029,
        hash_source="tensorflow/datasets url_checksums/movielens.txt",
    )
    expected = {"none": (100_000, 943, 1_682)}
