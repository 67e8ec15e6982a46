"""R4 (docs/benchmarks.md): a reader refuses unknown schemas, incomplete caches and disagreeing shapes, naming the array."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from ovml.cache.reader import CacheReader
from ovml.cache.schema import CacheError
from ovml.config import ExtractConfig
from ovml.extract.runner import run_extraction


@pytest.fixture
def cache(folder_dataset, tiny_clip, tmp_path) -> str:
    out = str(tmp_path / "c.zarr")
    run_extraction(ExtractConfig(dataset="folder", root=folder_dataset, out=out, model=tiny_clip,
                                 workers=0, unit_rows=4, progress=False))
    return out


def test_unknown_schema_is_refused(cache):
    zarr.open_group(cache, mode="a").attrs["ovml_cache"] = 2
    with pytest.raises(CacheError, match="unknown cache schema ovml_cache=2"):
        CacheReader(cache)


def test_incomplete_cache_is_refused_unless_partial_reads_are_asked(cache):
    group = zarr.open_group(cache, mode="a")
    group.attrs["complete"] = False
    group["splits/train/units_done"][1] = False
    with pytest.raises(CacheError, match="incomplete"):
        CacheReader(cache)
    reader = CacheReader(cache, allow_partial=True)
    usable = reader.usable_rows("train")
    assert not usable[4:8].any() and usable[:4].all()


@pytest.mark.parametrize("key, shape, message", [
    ("labels/text", (4, 64), "labels/text has shape \\(4, 64\\), expected \\(5, 'D'\\)"),
    ("splits/train/labels", (24, 4), "splits/train/labels has shape \\(24, 4\\), expected \\(24, 5\\)"),
    ("splits/test/global", (8, 32), "splits/test/global has shape \\(8, 32\\), expected \\(8, 64\\)"),
    ("pool/c_weight", (64, 128), "pool/c_weight has shape \\(64, 128\\), expected \\(64, 256\\)"),
])
def test_disagreeing_shapes_are_refused_with_the_array_named(cache, key, shape, message):
    group = zarr.open_group(cache, mode="a")
    old = group[key]
    group.create_array(key, shape=shape, dtype=old.dtype, chunks=shape, overwrite=True)
    with pytest.raises(CacheError, match=message):
        CacheReader(cache)


def test_missing_array_is_named(cache):
    group = zarr.open_group(cache, mode="a")
    del group["splits/test/ok"]
    with pytest.raises(CacheError, match="splits/test/ok is missing"):
        CacheReader(cache)


def test_units_stream_in_order_with_prefetch(cache):
    reader = CacheReader(cache)
    units = list(range(len(reader.units_done("train"))))
    streamed = [(u, rows["labels"]) for u, rows in reader.iter_units("train", units, ["labels"], prefetch=2)]
    assert [u for u, _ in streamed] == units
    assert np.array_equal(np.concatenate([rows for _, rows in streamed]), reader.read_labels("train"))
