"""`ovml check`: a store against schema v1 (docs/cache.md) in full, every problem reported, none fatal.

Unlike `CacheReader`, which refuses a cache at its first problem, the checker goes on and lists
them all, one line each naming the attribute or array: root attributes, every array's presence,
dtype and shape, label values in {-1, 0, 1}, unique `labels/ids`, L2-normalised `labels/text`,
`units_done` against `complete`, and the pool invariant (`pool/*` applied to `spatial`, and `cls`
for a ViT, gives `global`) on up to `rows` ok rows of each split. Both backbone kinds.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config import CheckConfig
from . import store as backends
from .pooling import resnet_pool_global, vit_pool_global
from .schema import BACKBONE_KINDS, SCHEMA_VERSION, CacheError, expected_pool_shapes, vit_pool_shapes

BACKBONE_KEYS = ("name", "weights_sha256", "input_resolution", "grid", "channels", "embed_dim", "feature_dtype")
ROW_DTYPES = {"spatial": np.float16, "global": np.float16, "cls": np.float16, "labels": np.int8, "ids": None,
              "ok": np.bool_, "units_done": np.bool_}  # None: strings
INVARIANT_TOLERANCE = 2e-2  # relative to the largest |global|: fp16 storage of X' and global
NORM_TOLERANCE = 1e-3


def is_string(array) -> bool:
    """Zarr's StringDType (kind T), HDF5's object strings (O), or fixed-width bytes/unicode."""
    return getattr(array.dtype, "kind", None) in ("O", "S", "U", "T")


class CacheCheck:
    """One pass over a store, collecting problems."""

    def __init__(self, store: backends.Store, rows: int):
        self.store, self.rows, self.problems = store, rows, []
        self.backbone: dict = {}
        self.kind = "resnet"
        self.pool: dict[str, np.ndarray] = {}
        self.num_heads: int | None = None
        self.num_labels = self.embed_dim = None

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def array(self, key: str):
        """The array at `key`, or None (with a problem) when it is missing."""
        if not self.store.has(key):
            self.problem(f"{key} is missing")
            return None
        return self.store.array(key)

    def expect(self, key: str, array, dtype, shape: tuple) -> bool:
        """Report a dtype or shape mismatch of `array` (dtype None: a string array)."""
        fine = True
        if dtype is None and not is_string(array):
            self.problem(f"{key} has dtype {array.dtype}, expected strings")
            fine = False
        elif dtype is not None and np.dtype(array.dtype) != np.dtype(dtype):
            self.problem(f"{key} has dtype {array.dtype}, expected {np.dtype(dtype)}")
            fine = False
        if tuple(array.shape) != tuple(shape):
            self.problem(f"{key} has shape {tuple(array.shape)}, expected {tuple(shape)}")
            fine = False
        return fine

    # --- sections -----------------------------------------------------------------------
    def attributes(self) -> bool:
        version = self.store.get_attr("ovml_cache")
        if version != SCHEMA_VERSION:
            self.problem(f"root attribute ovml_cache is {version!r}, expected {SCHEMA_VERSION} (unknown schema)")
            return False
        for key in ("backbone", "dataset", "prompts", "complete"):
            if self.store.get_attr(key) is None:
                self.problem(f"root attribute {key} is missing")
        self.backbone = self.store.get_attr("backbone") or {}
        for key in BACKBONE_KEYS:
            if key not in self.backbone:
                self.problem(f"root attribute backbone.{key} is missing")
        self.kind = self.backbone.get("kind", "resnet")
        if self.kind not in BACKBONE_KINDS:
            self.problem(f"root attribute backbone.kind is {self.kind!r}, expected 'resnet' or 'vit'")
            return False
        if self.store.get_attr("adding_labels"):
            self.problem("root attribute adding_labels is set: an interrupted `ovml add-labels`; "
                         "run the same command again to finish it")
        return True

    def labels(self) -> None:
        arrays = {key: self.array(f"labels/{key}") for key in ("names", "ids", "seen", "text")}
        if any(value is None for value in arrays.values()):
            return
        count = arrays["names"].shape[0]
        self.num_labels = count
        self.expect("labels/names", arrays["names"], None, (count,))
        if self.expect("labels/ids", arrays["ids"], None, (count,)):
            ids = self.store.read_strings("labels/ids")
            if len(set(ids)) != len(ids):
                self.problem(f"labels/ids are not unique ({len(ids) - len(set(ids))} repeated)")
        self.expect("labels/seen", arrays["seen"], np.bool_, (count,))
        text = arrays["text"]
        self.embed_dim = text.shape[1] if len(text.shape) == 2 else None
        want_dim = self.backbone.get("embed_dim", self.embed_dim)
        if self.expect("labels/text", text, np.float32, (count, want_dim)):
            norms = np.linalg.norm(np.asarray(text[...], dtype=np.float64), axis=1)
            if len(norms) and np.abs(norms - 1).max() > NORM_TOLERANCE:
                self.problem(f"labels/text rows are not L2-normalised (norms {norms.min():.4g} to {norms.max():.4g})")
        self.embed_dim = want_dim

    def pool_arrays(self) -> None:
        heads = self.store.get_attr("num_heads", node="pool") if self.store.has("pool") else None
        if not heads:
            self.problem("pool attribute num_heads is missing")
        else:
            self.num_heads = int(heads)
        grid, channels = self.backbone.get("grid") or [0, 0], self.backbone.get("channels")
        if not channels or not self.embed_dim:
            return
        if self.num_heads and channels % self.num_heads:
            self.problem(f"pool attribute num_heads {self.num_heads} does not divide backbone.channels {channels}")
            self.num_heads = None
        shapes = (vit_pool_shapes(channels, self.embed_dim) if self.kind == "vit"
                  else expected_pool_shapes(grid[0] * grid[1], channels, self.embed_dim))
        for key, shape in shapes.items():
            array = self.array(f"pool/{key}")
            if array is not None and self.expect(f"pool/{key}", array, np.float32, shape):
                self.pool[key] = np.asarray(array[...])
        if len(self.pool) < len(shapes):
            self.pool = {}

    def split(self, split: str, complete: bool) -> None:
        base = f"splits/{split}"
        needed = ("spatial", "global", "labels", "ids", "ok", "units_done") + (("cls",) if self.kind == "vit" else ())
        arrays = {key: self.array(f"{base}/{key}") for key in needed}
        if arrays["spatial"] is None:
            return
        n = arrays["spatial"].shape[0]
        unit_rows = (arrays["spatial"].chunks or arrays["spatial"].shape)[0] or 1
        grid, channels = self.backbone.get("grid") or [0, 0], self.backbone.get("channels")
        shapes = {"spatial": (n, grid[0] * grid[1], channels), "global": (n, self.embed_dim),
                  "labels": (n, self.num_labels), "ids": (n,), "ok": (n,), "cls": (n, channels),
                  "units_done": (math.ceil(n / unit_rows),)}
        fine = {key: array is not None and self.expect(f"{base}/{key}", array, ROW_DTYPES[key], shapes[key])
                for key, array in arrays.items()}
        if fine["labels"]:
            self.label_values(f"{base}/labels", arrays["labels"], unit_rows)
        if not fine["units_done"] or not fine["ok"]:
            return
        done = np.asarray(arrays["units_done"][...], dtype=bool)
        if complete and not done.all():
            self.problem(f"{base}/units_done: {int((~done).sum())} of {len(done)} units not done in a cache "
                         "marked complete")
        usable = np.asarray(arrays["ok"][...], dtype=bool) & np.repeat(done, unit_rows)[:n]
        if all(fine.values()) and self.pool and self.num_heads and self.rows:
            self.invariant(base, arrays, np.flatnonzero(usable)[: self.rows])

    def label_values(self, key: str, labels, unit_rows: int) -> None:
        for start in range(0, labels.shape[0], unit_rows):
            block = np.asarray(labels[start:start + unit_rows])
            if block.size and (block.min() < -1 or block.max() > 1):
                self.problem(f"{key} holds values outside {{-1, 0, 1}} (first in rows {start}-{start + len(block) - 1})")
                return

    def invariant(self, base: str, arrays: dict, rows: np.ndarray) -> None:
        if not len(rows):
            return
        stop = int(rows.max()) + 1
        tensor = lambda key: torch.from_numpy(np.asarray(arrays[key][:stop])[rows].astype(np.float64))
        pool = {key: torch.from_numpy(value) for key, value in self.pool.items()}
        if self.kind == "vit":
            pooled = vit_pool_global(tensor("cls"), tensor("spatial"), pool, self.num_heads, torch.float64)
            what = "the last ViT block (pool/*) applied to cls and spatial"
        else:
            pooled = resnet_pool_global(tensor("spatial"), pool, self.num_heads, torch.float64)
            what = "CLIP's attention pool (pool/*) applied to spatial"
        stored = tensor("global")
        error = float((pooled - stored).abs().max() / stored.abs().max().clamp_min(1e-12))
        if error > INVARIANT_TOLERANCE:
            self.problem(f"{base}/global: {what} does not give global on {len(rows)} ok rows "
                         f"(relative error {error:.3g} > {INVARIANT_TOLERANCE})")

    def run(self) -> list[str]:
        if not self.attributes():
            return self.problems
        self.labels()
        self.pool_arrays()
        splits = self.store.children("splits")
        if not splits:
            self.problem("splits/ holds no split")
        complete = self.store.get_attr("complete") is True
        if self.num_labels is not None and self.embed_dim:
            for split in splits:
                self.split(split, complete)
        if not complete:
            self.problem("root attribute complete is not true (an unfinished cache: re-run the same "
                         "`ovml extract` to finish it)")
        return self.problems


def check_cache(config: CheckConfig) -> list[str]:
    """Every problem of the cache at `config.path` (empty when it conforms to schema v1)."""
    try:
        store = backends.open_store(config.path, "r")
    except CacheError as err:
        return [str(err)]
    try:
        return CacheCheck(store, config.rows).run()
    finally:
        store.close()
