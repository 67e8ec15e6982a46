"""Dataset adapters: each reads a dataset's own files into a `DatasetSource`."""
from __future__ import annotations

from .base import ArraySplit, DatasetError, DatasetSource, SparseSplit, Split, Vocabulary
from .coco import open_coco
from .folder import open_folder
from .nuswide import open_nuswide
from .openimages import open_openimages

ADAPTERS = {"folder": open_folder, "nuswide": open_nuswide, "openimages": open_openimages, "coco": open_coco}

__all__ = ["ADAPTERS", "ArraySplit", "DatasetError", "DatasetSource", "SparseSplit", "Split",
           "Vocabulary", "open_dataset"]


def open_dataset(name: str, root: str, **options) -> DatasetSource:
    """Open dataset `name` at `root` with the adapter's own options."""
    if name not in ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(sorted(ADAPTERS))})")
    return ADAPTERS[name](root, **options)
