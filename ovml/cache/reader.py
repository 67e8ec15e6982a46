"""Reading a cache: validation on open (fault R4, docs/benchmarks.md), label and pool tables, row streams.

A reader refuses an unknown schema, an incomplete cache (unless `allow_partial`, in which case
only rows of finished units are served) and any array whose shape disagrees with the rest,
naming the array and the mismatch. Both backbone kinds (docs/cache.md): a ResNet cache's pool is
CLIP's attention pool; a ViT cache's is the last residual block, and its splits hold `cls` too.
The row field `tokens` is what a head reads: `spatial`, or for a ViT [cls; spatial].
"""
from __future__ import annotations

import hashlib
import queue
import threading
from typing import Iterator, Sequence

import numpy as np

from . import store as backends
from .schema import (BACKBONE_KINDS, LABEL_ARRAYS, POOL_KEYS, ROW_ARRAYS, SCHEMA_VERSION, VIT_POOL_KEYS,
                     CacheError, backbone_kind, expected_pool_shapes, expected_split_shapes, vit_pool_shapes)

ROW_FIELDS = ("spatial", "cls", "tokens", "global", "labels", "ok")


class CacheReader:
    """An open, validated cache. Small tables (labels, pool) are read once; rows on demand."""

    def __init__(self, path: str, allow_partial: bool = False):
        self.path = str(path)
        self.store = backends.open_store(self.path, "r")
        self.allow_partial = allow_partial
        try:
            self._read_tables()
            self._validate()
        except Exception:
            self.store.close()
            raise

    # --- tables -------------------------------------------------------------------------
    def _require(self, key: str) -> None:
        if not self.store.has(key):
            raise CacheError(f"{self.path}: {key} is missing")

    def _read_tables(self) -> None:
        version = self.store.get_attr("ovml_cache")
        if version != SCHEMA_VERSION:
            raise CacheError(f"{self.path}: unknown cache schema ovml_cache={version!r} "
                             f"(this ovml reads version {SCHEMA_VERSION})")
        self.backbone = self.store.get_attr("backbone") or {}
        self.kind = backbone_kind(self.backbone)
        if self.kind not in BACKBONE_KINDS:
            raise CacheError(f"{self.path}: unknown backbone.kind {self.kind!r} (known: {', '.join(BACKBONE_KINDS)})")
        self.dataset = self.store.get_attr("dataset") or {}
        self.prompts = self.store.get_attr("prompts") or []
        self.complete = self.store.get_attr("complete") is True
        for key in LABEL_ARRAYS:
            self._require(f"labels/{key}")
        # An interrupted `add-labels` leaves a journal: keep the vocabulary from before it.
        journal = self.store.get_attr("adding_labels")
        keep = slice(journal["from"]) if journal else slice(None)
        self.names = self.store.read_strings("labels/names")[keep]
        self.ids = self.store.read_strings("labels/ids")[keep]
        self.seen = np.asarray(self.store.array("labels/seen")[...], dtype=bool)[keep]
        self.text = np.asarray(self.store.array("labels/text")[...], dtype=np.float32)[keep]
        self._label_widths = {len(self.ids), journal["to"]} if journal else {len(self.ids)}
        self.pool = {}
        for key in VIT_POOL_KEYS if self.kind == "vit" else POOL_KEYS:
            self._require(f"pool/{key}")
            self.pool[key] = np.asarray(self.store.array(f"pool/{key}")[...], dtype=np.float32)
        heads = self.store.get_attr("num_heads", node="pool")
        if not heads:
            raise CacheError(f"{self.path}: pool attribute num_heads is missing")
        self.num_heads = int(heads)
        self.splits = self.store.children("splits")

    @property
    def num_labels(self) -> int:
        return len(self.ids)

    @property
    def hw(self) -> int:
        """HW, the spatial positions (a ViT's patches, without its class token)."""
        if self.kind == "vit":
            grid = self.backbone.get("grid") or [0, 0]
            return int(grid[0] * grid[1])
        return self.pool["positional_embedding"].shape[0] - 1

    @property
    def channels(self) -> int:
        """C, the width of X' (a ViT's transformer width W)."""
        if self.kind == "vit":
            return self.pool["ln_1_weight"].shape[0]
        return self.pool["positional_embedding"].shape[1]

    @property
    def embed_dim(self) -> int:
        return self.text.shape[1]

    # --- validation ---------------------------------------------------------------------
    def _mismatch(self, key: str, got, want, why: str) -> CacheError:
        return CacheError(f"{self.path}: {key} has shape {tuple(got)}, expected {tuple(want)} ({why})")

    def _validate(self) -> None:
        count = len(self.names)
        for key, value in (("labels/ids", self.ids), ("labels/seen", self.seen)):
            if len(value) != count:
                raise self._mismatch(key, (len(value),), (count,), f"labels/names has {count} labels")
        if len(set(self.ids)) != count:
            raise CacheError(f"{self.path}: labels/ids are not unique")
        if self.text.ndim != 2 or self.text.shape[0] != count:
            raise self._mismatch("labels/text", self.text.shape, (count, "D"), f"{count} labels")
        embed_dim = self.backbone.get("embed_dim", self.embed_dim)
        if self.embed_dim != embed_dim:
            raise self._mismatch("labels/text", self.text.shape, (count, embed_dim), "backbone.embed_dim")
        self._validate_pool()
        if not self.splits:
            raise CacheError(f"{self.path}: no split under splits/")
        for split in self.splits:
            self._validate_split(split)
        if not self.complete and not self.allow_partial:
            raise CacheError(f"{self.path}: the cache is incomplete (complete = false): finish it by "
                             "re-running the same `ovml extract`, or read finished units with --allow-partial")

    def _validate_pool(self) -> None:
        grid = self.backbone.get("grid")
        if self.kind == "vit":
            if not grid:
                raise CacheError(f"{self.path}: backbone.grid is missing (a ViT cache's patch grid)")
            shapes = vit_pool_shapes(self.channels, self.embed_dim)
            source = "from pool/ln_1_weight and labels/text"
        else:
            shapes = expected_pool_shapes(self.hw, self.channels, self.embed_dim)
            source = "from pool/positional_embedding and labels/text"
        for key, want in shapes.items():
            if self.pool[key].shape != want:
                raise self._mismatch(f"pool/{key}", self.pool[key].shape, want, source)
        if self.kind == "resnet" and grid and grid[0] * grid[1] != self.hw:
            raise CacheError(f"{self.path}: pool/positional_embedding has {self.hw + 1} rows but "
                             f"backbone.grid {grid} gives {grid[0] * grid[1] + 1}")

    def _validate_split(self, split: str) -> None:
        base = f"splits/{split}"
        extra = ("units_done", "cls") if self.kind == "vit" else ("units_done",)
        for key in ROW_ARRAYS + extra:
            self._require(f"{base}/{key}")
        n = self.store.array(f"{base}/spatial").shape[0]
        unit_rows = self.unit_rows(split)
        want = expected_split_shapes(n, self.hw, self.channels, self.embed_dim, self.num_labels, unit_rows,
                                     self.kind)
        for key, shape in want.items():
            got = tuple(self.store.array(f"{base}/{key}").shape)
            if key == "labels" and got[:1] == shape[:1] and got[1] in self._label_widths:
                continue
            if got != shape:
                raise self._mismatch(f"{base}/{key}", got, shape,
                                     f"N={n}, HW={self.hw}, C={self.channels}, D={self.embed_dim}, "
                                     f"L={self.num_labels}, R={unit_rows}")

    # --- rows ---------------------------------------------------------------------------
    def unit_rows(self, split: str) -> int:
        """R, the rows per chunk and work unit of `split`."""
        return int(self.store.array(f"splits/{split}/spatial").chunks[0])

    def num_rows(self, split: str) -> int:
        return int(self.store.array(f"splits/{split}/spatial").shape[0])

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise CacheError(f"{self.path}: no split {split!r} (splits: {', '.join(self.splits)})")

    def units_done(self, split: str) -> np.ndarray:
        self._check_split(split)
        return np.asarray(self.store.array(f"splits/{split}/units_done")[...], dtype=bool)

    def usable_rows(self, split: str) -> np.ndarray:
        """(N,) bool: rows that were read (`ok`) in finished units; everything else is skipped."""
        ok = np.asarray(self.store.array(f"splits/{split}/ok")[...], dtype=bool)
        done = np.repeat(self.units_done(split), self.unit_rows(split))[: len(ok)]
        return ok & done

    def image_ids(self, split: str, rows: slice = slice(None)) -> list[str]:
        return self.store.read_strings(f"splits/{split}/ids", rows)

    def read(self, split: str, field: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of one field: spatial, cls (ViT only), tokens, global, labels or ok.

        `tokens` is what a head reads: `spatial` (N, HW, C), or for a ViT the class token first,
        [cls; spatial] (N, 1+HW, W), the tokens CLIP's last block attends over.
        """
        self._check_split(split)
        if field not in ROW_FIELDS:
            raise ValueError(f"unknown row field {field!r} (fields: {', '.join(ROW_FIELDS)})")
        if field == "cls" and self.kind != "vit":
            raise CacheError(f"{self.path}: a ResNet cache has no cls tokens")
        if field == "tokens":
            spatial = self.read(split, "spatial", start, stop)
            if self.kind != "vit":
                return spatial
            cls = self.read(split, "cls", start, stop)
            return np.concatenate([cls[:, None], spatial], axis=1)               # (n, 1+HW, W)
        rows = self.store.array(f"splits/{split}/{field}")
        if field == "labels":
            return np.asarray(rows[start:stop, : self.num_labels])
        return np.asarray(rows[start:stop])

    def read_labels(self, split: str) -> np.ndarray:
        """The whole (N, L) int8 label matrix of a split (small next to the features)."""
        return self.read(split, "labels", 0, self.num_rows(split))

    def read_unit(self, split: str, unit: int, fields: Sequence[str]) -> dict:
        r = self.unit_rows(split)
        start, stop = unit * r, min((unit + 1) * r, self.num_rows(split))
        return {field: self.read(split, field, start, stop) for field in fields}

    def iter_units(self, split: str, units: Sequence[int], fields: Sequence[str],
                   prefetch: int = 2) -> Iterator[tuple[int, dict]]:
        """Yield (unit, {field: rows}) for `units` in order, reading up to `prefetch` units ahead
        in a background thread so disk and decompression overlap with compute."""
        if prefetch <= 0:
            for unit in units:
                yield unit, self.read_unit(split, unit, fields)
            return
        yield from _prefetched((unit, lambda u=unit: self.read_unit(split, u, fields)) for unit in units)

    def fingerprint(self) -> str:
        """A short digest of what the cache holds (backbone, dataset, vocabulary, split sizes)."""
        parts = [str(self.backbone.get("weights_sha256")), str(self.dataset.get("name")),
                 "\n".join(self.ids)] + [f"{s}:{self.num_rows(s)}" for s in self.splits]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _prefetched(jobs, depth: int = 2):
    """Run (key, thunk) jobs one after another in a thread, at most `depth` results ahead."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for key, thunk in jobs:
                if stop.is_set():
                    return
                results.put((key, thunk(), None))
        except BaseException as err:  # handed to the consumer, raised there
            results.put((None, None, err))
            return
        results.put((None, None, StopIteration()))

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            key, value, err = results.get()
            if isinstance(err, StopIteration):
                return
            if err is not None:
                raise err
            yield key, value
    finally:
        stop.set()
        while worker.is_alive():
            try:
                results.get_nowait()
            except queue.Empty:
                worker.join(0.01)
