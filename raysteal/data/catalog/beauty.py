"""The ``beauty`` dataset: Amazon Beauty."""

from raysteal.data import formats
from raysteal.data.datasets import FetchSpec, register_dataset


@register_dataset
class AmazonBeauty:
    """Amazon Beauty (``beauty``): the attributes are its :class:`~raysteal.data.datasets.DatasetSpec`."""

    name = "beauty"
    description = "Amazon Beauty (BERT4Rec version): 353,962 interactions, 40,226 users, 54,542 items"
    folder = "beauty"
    files = (
        ("bert4rec.beauty.txt.gz", formats.read_user_item_lines),
        ("bert4rec.beauty.txt", formats.read_user_item_lines),
        ("beauty.txt", formats.read_user_item_lines),
        ("beauty.txt.gz", formats.read_user_item_lines),
    )
    paper = "dedupe"
    fetch = FetchSpec(
        url="https://raw.githubusercontent.com/FeiSun/BERT4Rec/b5a1c2eddbe5c2cb4ae6c7a7845b3e6f251f90ba/data/beauty.txt",
        sha256="f480b7a7403852342ffd8f9809bb30697dd669be31813d0e204b698fec86ef49",
        kind="file",
        target="beauty/beauty.txt",
        hash_source="shared/data/README.md (source sha256)",
    )
    expected = {"none": (353_962, 40_226, 54_542), "kcore5": (198_502, 22_363, 12_101)}
