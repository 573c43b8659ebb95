"""Datasets register as one decorated class each (raysteal/data/catalog/): the class's attributes
are the DatasetSpec's fields; anything else is refused by name."""

from __future__ import annotations

import pytest

from raysteal.data import dataset_names, dataset_spec
from raysteal.data.datasets import DatasetSpec, register_dataset


def test_every_catalog_module_registers_its_dataset():
    assert {"ml-1m", "ml-100k", "beauty", "beauty-5core", "tafeng", "steam-200k", "synthetic"} <= set(dataset_names())
    assert isinstance(dataset_spec("ml-1m"), DatasetSpec) and dataset_spec("ml-1m").folder == "ml-1m"


def test_a_decorated_class_becomes_its_spec_and_a_stray_attribute_is_refused():
    with pytest.raises(ValueError, match="folders are not DatasetSpec fields"):

        @register_dataset
        class Misspelt:
            name = "misspelt-test"
            description = "a typo in a field name"
            folders = "x"

    assert "misspelt-test" not in dataset_names()
    with pytest.raises(ValueError, match="registered twice"):

        @register_dataset
        class Again:
            name = "ml-1m"
            description = "a second ml-1m"
