"""The registered datasets, one module each: a module defines its :class:`~raysteal.data.datasets.DatasetSpec`
(where the files live, how to parse them, the paper's recipe, the expected counts) and registers
it with :func:`~raysteal.data.datasets.register_dataset`. Importing this package imports every
module in it (in name order), so adding a dataset is one module here and nothing else.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # a dataset module registers its spec on import
