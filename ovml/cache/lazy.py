"""A split's row arrays as lazy Dask arrays over the store's own chunks (for analysis in notebooks).

Nothing is read until `.compute()`; one Dask chunk is one stored chunk (R rows, a work unit), so
a reduction reads each chunk once and Zarr's reads run in parallel. HDF5 reads go through a lock
(one h5py file handle is not safe to read from several threads at once).
"""
from __future__ import annotations

from .reader import CacheReader
from .store import HDF5Store

LAZY_FIELDS = ("spatial", "global", "labels", "ok", "cls")  # `cls`: ViT caches only


def lazy_arrays(reader: CacheReader, split: str) -> dict:
    """{field: dask array} of `split`: spatial (N, HW, C), global (N, D), labels (N, L), ok (N,),
    and cls (N, W) where the cache has it."""
    import dask.array as da
    if split not in reader.splits:
        from .schema import CacheError
        raise CacheError(f"{reader.path}: no split {split!r} (splits: {', '.join(reader.splits)})")
    lock = isinstance(reader.store, HDF5Store)
    arrays = {}
    for field in LAZY_FIELDS:
        key = f"splits/{split}/{field}"
        if not reader.store.has(key):
            continue
        stored = reader.store.array(key)
        lazy = da.from_array(stored, chunks=stored.chunks, lock=lock, name=False)  # no hashing of the data
        if field == "labels":  # an interrupted add-labels may have widened it: keep the committed columns
            lazy = lazy[:, :reader.num_labels]
        arrays[field] = lazy
    return arrays
