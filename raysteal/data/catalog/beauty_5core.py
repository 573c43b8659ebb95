"""The ``beauty-5core`` dataset: Amazon Beauty 5-core."""

from raysteal.data import formats
from raysteal.data.datasets import register_dataset


@register_dataset
class AmazonBeauty5Core:
    """Amazon Beauty 5-core (``beauty-5core``): the attributes are its :class:`~raysteal.data.datasets.DatasetSpec`."""

    name = "beauty-5core"
    description = "Amazon Beauty 5-core (S3-Rec/ICLRec version): 198,502 interactions, 22,363 users, 12,101 items"
    folder = "beauty"
    files = (("iclrec.Beauty.txt.gz", formats.read_sequence_lines), ("Beauty.txt", formats.read_sequence_lines))
    paper = "dedupe"
    fetch = None
    expected = {"none": (198_502, 22_363, 12_101)}
