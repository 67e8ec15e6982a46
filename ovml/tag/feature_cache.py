"""`ovml tag --save-cache PATH`: the features computed while tagging image files, kept as a
regular cache, so the same images can be tagged again later with any vocabulary from their
stored features (`ovml tag --cache PATH`), without running the image tower.

The cache's one split, `images`, lists every tagged file (ids relative to the files' common
folder, the `dataset` root, so sidecars can be written from it); its labels are the vocabulary
tagged with (text embeddings included) and no annotations. Its units are written inside the tag
run's units, before each is marked done, so it resumes with the run.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..cache import store as backends
from ..cache.writer import CachePlan, LabelTable, UnitRows, create_cache, mark_complete, open_existing, write_unit
from ..extract.backbone import Backbone
from .sources import UnitScores

SPLIT = "images"
MAX_UNIT_ROWS = 64   # rows per chunk, as extract's default, dividing the tag run's units


class FeatureCache:
    """A cache being written alongside a tag run over image files."""

    def __init__(self, path: str, backbone: Backbone, names: list[str], text: np.ndarray, templates: list[str],
                 images: list[str], folder: str, unit_images: int):
        files = [os.path.abspath(os.path.join(folder, image)) for image in images]
        self.root = os.path.commonpath([os.path.dirname(file) for file in files])
        self.ids = [os.path.relpath(file, self.root) for file in files]
        self.unit_rows = math.gcd(unit_images, MAX_UNIT_ROWS)
        labels = LabelTable(list(names), list(names), np.zeros(len(names), dtype=bool), np.asarray(text, np.float32))
        dataset = {"name": "images", "root": self.root, "made_by": "ovml tag",
                   "splits": {SPLIT: {"listed": len(files)}}}
        plan = CachePlan(backbone.describe(), dataset, list(templates), labels, backbone.pool_weights(),
                         backbone.num_heads, {SPLIT: len(files)}, self.unit_rows)
        self.labels = len(names)
        self.store = open_existing(path, plan) or create_cache(path, plan)
        hw, width = self.store.array(f"splits/{SPLIT}/spatial").shape[1:]
        self.token_shape = (hw + 1, width) if self.store.has(f"splits/{SPLIT}/cls") else (hw, width)
        self.embed_dim = backbone.embed_dim

    def write(self, scored: UnitScores) -> None:
        """Write the cache units inside one tag unit: features of its readable rows, zeros and
        ok = false for the others."""
        unit = scored.unit
        ok = np.zeros(unit.stop - unit.start, dtype=bool)
        ok[np.asarray(scored.rows, dtype=np.int64) - unit.start] = True
        spatial = np.zeros((len(ok),) + self.token_shape, dtype=np.float16)       # (n, tokens, C)
        pooled = np.zeros((len(ok), self.embed_dim), dtype=np.float16)            # (n, D)
        if scored.features is not None:
            spatial[ok], pooled[ok] = scored.features
        for offset in range(0, len(ok), self.unit_rows):
            rows = slice(offset, min(offset + self.unit_rows, len(ok)))
            ids = self.ids[unit.start + rows.start:unit.start + rows.stop]
            write_unit(self.store, SPLIT, (unit.start + offset) // self.unit_rows, self.unit_rows,
                       UnitRows(spatial[rows], pooled[rows], np.zeros((len(ids), self.labels), dtype=np.int8),
                                ids, ok[rows]))

    def finish(self) -> None:
        """Record the ok count and mark the cache complete."""
        dataset = self.store.get_attr("dataset") or {}
        ok = np.asarray(self.store.array(f"splits/{SPLIT}/ok")[...], dtype=bool)
        dataset["splits"] = {SPLIT: {"listed": len(ok), "ok": int(ok.sum())}}
        self.store.set_attr("dataset", dataset)
        mark_complete(self.store)
        self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def unwritable(path: str) -> str | None:
    """Why a cache cannot be saved at `path` (a local path whose folder cannot be written), or None."""
    if backends.is_url(path):
        return None
    parent = os.path.dirname(os.path.abspath(path))
    return None if os.path.isdir(parent) and os.access(parent, os.W_OK) else \
        f"--save-cache {path}: its folder cannot be written"
