"""The ``ml-1m`` dataset: MovieLens-1M."""

from raysteal.data import formats
from raysteal.data.datasets import FetchSpec, register_dataset


@register_dataset
class MovieLens1M:
    """MovieLens-1M (``ml-1m``): the attributes are its :class:`~raysteal.data.datasets.DatasetSpec`."""

    name = "ml-1m"
    description = "MovieLens-1M: 1,000,209 ratings, 6,040 users, 3,706 movies (GroupLens)"
    folder = "ml-1m"
    files = (
        ("ratings.dat", formats.read_grouplens_ratings),
        ("ratings.dat.gz", formats.read_grouplens_ratings),
        ("ml-1m.seq.tsv.gz", formats.read_user_item_tsv),
        ("ml-1m.seq.tsv", formats.read_user_item_tsv),
    )
    paper = "dedupe"
    fetch = FetchSpec(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        kind="zip",
        target=".",
        size=5917549,
        hash_source="tensorflow/datasets url_checksums/movielens.txt",
    )
    notes = "ratings.dat is preferred when present (ties in a second go by MovieID); the paper uses no filtering."
    expected = {"none": (1_000_209, 6_040, 3_706), "kcore5": (999_611, 6_040, 3_416)}
