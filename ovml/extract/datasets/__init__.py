"""Dataset adapters: each reads a dataset's own files into a `DatasetSource`; `select` picks the
adapter, its options and the splits a run reads."""
from __future__ import annotations

from .base import ArraySplit, DatasetError, DatasetSource, SparseSplit, Split, Vocabulary
from .select import ADAPTERS, adapter_options, open_dataset, select_splits

__all__ = ["ADAPTERS", "ArraySplit", "DatasetError", "DatasetSource", "SparseSplit", "Split",
           "Vocabulary", "adapter_options", "open_dataset", "select_splits"]
