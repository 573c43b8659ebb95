"""The ``synthetic`` dataset: seeded synthetic long-tail log."""

from raysteal.data.datasets import register_dataset
from raysteal.data.synthetic import generate as generate_synthetic
from raysteal.data.synthetic import make_config as synthetic_options


@register_dataset
class Synthetic:
    """seeded synthetic long-tail log (``synthetic``): the attributes are its :class:`~raysteal.data.datasets.DatasetSpec`."""

    name = "synthetic"
    description = "seeded synthetic long-tail log (power-law activity, Zipf items, taste clusters, item successors); no files"
    generator = generate_synthetic
    check_options = synthetic_options
    paper = "none"
    notes = "options: num_users, num_items, seed, user_exponent, item_exponent, min_len, max_len, ..."
