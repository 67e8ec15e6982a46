"""Where a tag run's scores come from, one unit of images at a time.

Image files: extraction's decode worker processes (`ImageRows`, `collate`; a batch never crosses
a unit, so a unit's batches are the same every run), the backbone on the chosen device, the
scorer. A cache: the ok rows of finished units, scored from the stored global feature (and, for a
head, the stored tokens), with the next unit read in a background thread; no CLIP is loaded.
Either way each unit yields its rows' (n, L) scores, so memory is bounded by a unit's size times
the vocabulary, never by the run.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..cache.reader import CacheReader
from ..errors import UsageError
from ..evaluation.scoring import clip_ml_scores, head_parts
from ..extract.backbone import Backbone
from ..extract.device_decode import DevicePixels, resolve_decode
from ..extract.images import ImageRows, collate, normalise
from ..extract.runner import SteadyRate
from ..train.saved_head import TrainedHead

CACHE_SPLIT_KEY = ("split", "row", "id", "image")   # a cache row's key columns; image files have `image` only


@dataclass(frozen=True)
class Unit:
    """A resumable block of images: rows [start, stop) of the image list or of a cache split."""

    index: int            # run-wide number: the part files' name and the manifest's entry
    split: str            # the cache split ("" for image files)
    start: int
    stop: int


@dataclass
class UnitScores:
    """A unit's scored images: key columns, (n, L) scores, and the images that could not be read."""

    unit: Unit
    keys: dict[str, list]                  # column -> n values (image; with caches split, row, id too)
    scores: np.ndarray                     # (n, L) float32
    files: list[str | None]                # each row's image file, for sidecars (None: no file)
    failures: list[tuple[str, str]] = field(default_factory=list)   # (image, reason)
    skipped: int = 0                       # cache rows that were not ok (unreadable at extraction)
    rows: list[int] = field(default_factory=list)   # image files: the scored rows' numbers in the list
    features: tuple[np.ndarray, np.ndarray] | None = None   # tokens and global float16 of those rows
                                                            # (image files with --save-cache)


def image_units(count: int, unit_images: int) -> list[Unit]:
    return [Unit(index, "", start, min(start + unit_images, count))
            for index, start in enumerate(range(0, count, unit_images))]


def cache_units(reader: CacheReader, splits: list[str], unit_images: int) -> list[Unit]:
    """Units of whole cache chunks (at least `unit_images` rows each), split after split."""
    units = []
    for split in splits:
        chunk = reader.unit_rows(split)
        size = max(1, -(-unit_images // chunk)) * chunk
        total = reader.num_rows(split)
        units += [Unit(len(units) + i, split, start, min(start + size, total))
                  for i, start in enumerate(range(0, total, size))]
    return units


class Scorer:
    """(n, L) scores of features against the vocabulary's text: CLIP-ML, or a head at `alpha`."""

    def __init__(self, text: np.ndarray, head: TrainedHead | None, alpha: float, device: torch.device):
        self.text = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32)).to(device)   # (L, D)
        self.head, self.alpha = head, alpha

    @property
    def needs_tokens(self) -> bool:
        return self.head is not None

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor | None, global_embedding: torch.Tensor) -> np.ndarray:
        """(n, L) float32 scores; `tokens` are read only with a head."""
        if self.head is None:
            return clip_ml_scores(global_embedding.float(), self.text)
        parts = head_parts(self.head.module, tokens.float(), global_embedding.float(), self.text)
        return parts.scores(self.alpha).astype(np.float32)


class FolderSource:
    """Image files decoded by worker processes and encoded by the backbone."""

    def __init__(self, paths: list[str], backbone: Backbone, batch_size: int, workers: int, decode: str,
                 strict: bool, folder: str = "", keep_features: bool = False):
        self.paths, self.backbone = paths, backbone        # as given: the tables' keys
        self.files = [os.path.join(folder, path) for path in paths]   # where they are read from
        self.batch_size, self.workers, self.strict = batch_size, workers, strict
        self.keep_features = keep_features
        self.decode, self.note = resolve_decode(decode, backbone.device)
        self.steady = SteadyRate(skip=max(1, workers))

    def loader(self, units: list[Unit]) -> torch.utils.data.DataLoader:
        """Decode processes yielding DecodedBatches of row batches that never cross a unit."""
        batches = [list(range(start, min(start + self.batch_size, unit.stop)))
                   for unit in units for start in range(unit.start, unit.stop, self.batch_size)]
        side = self.backbone.input_resolution
        rows = ImageRows(self.files, side, None, self.decode)
        return torch.utils.data.DataLoader(
            rows, batch_sampler=batches, num_workers=self.workers,
            collate_fn=functools.partial(collate, side=side), pin_memory=self.backbone.device.type == "cuda",
            prefetch_factor=4 if self.workers else None)

    def scores(self, units: list[Unit], scorer: Scorer) -> Iterator[UnitScores]:
        if not units:
            return
        to_device = DevicePixels(self.backbone.device, self.backbone.input_resolution)
        pending = iter(units)
        unit = next(pending)
        parts: list[np.ndarray] = []
        kept: list[tuple[np.ndarray, np.ndarray]] = []
        rows: list[int] = []
        failures: list[tuple[str, str]] = []
        for batch in self.loader(units):
            pixels = to_device(batch)                                              # (B, 3, S, S) uint8
            tokens, global_embedding = self.backbone.encode(normalise(pixels))
            ok = [i for i, reason in enumerate(batch.reasons) if not reason]
            for row, reason in zip(batch.rows.tolist(), batch.reasons):
                if reason:
                    if self.strict:
                        raise UsageError(f"{self.paths[row]}: {reason} (--strict)")
                    failures.append((self.paths[row], reason))
            if ok:
                keep = torch.tensor(ok, device=global_embedding.device)
                tokens, global_embedding = tokens.index_select(0, keep), global_embedding.index_select(0, keep)
                parts.append(scorer(tokens, global_embedding))
                if self.keep_features:
                    kept.append((tokens.half().cpu().numpy(), global_embedding.half().cpu().numpy()))
                rows += [int(batch.rows[i]) for i in ok]
            self.steady.mark(len(batch.rows))
            if int(batch.rows[-1]) + 1 == unit.stop:
                keys = {"image": [self.paths[row] for row in rows]}
                files = [self.files[row] for row in rows]
                features = tuple(np.concatenate(part) for part in zip(*kept)) if kept else None
                yield UnitScores(unit, keys, join_rows(parts, len(scorer.text)), files, failures, rows=rows,
                                 features=features)
                parts, kept, rows, failures = [], [], [], []
                unit = next(pending, None)


def join_rows(parts: list[np.ndarray], labels: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, labels), dtype=np.float32)


class CacheSource:
    """The ok rows of a cache's finished units, from their stored features, scored a unit at a time
    (the unit is the scoring block, as eval's batches)."""

    def __init__(self, reader: CacheReader, device: torch.device):
        self.reader, self.device = reader, device
        self.usable: dict[str, np.ndarray] = {}
        root = (reader.dataset or {}).get("root")
        self.root = root if isinstance(root, str) and os.path.isdir(root) else None

    def _read(self, unit: Unit, fields: tuple[str, ...]) -> dict:
        if unit.split not in self.usable:
            self.usable[unit.split] = self.reader.usable_rows(unit.split)
        usable = self.usable[unit.split][unit.start:unit.stop]
        rows = {name: self.reader.read(unit.split, name, unit.start, unit.stop)[usable] for name in fields}
        ids = self.reader.image_ids(unit.split, slice(unit.start, unit.stop))
        rows["ids"] = [image for image, keep in zip(ids, usable) if keep]
        rows["row"] = (unit.start + np.flatnonzero(usable)).tolist()
        rows["skipped"] = int((~usable).sum())
        return rows

    def scores(self, units: list[Unit], scorer: Scorer) -> Iterator[UnitScores]:
        fields = ("global", "tokens") if scorer.needs_tokens else ("global",)
        with ThreadPoolExecutor(1) as reader:
            ahead = reader.submit(self._read, units[0], fields) if units else None
            for index, unit in enumerate(units):
                rows = ahead.result()
                if index + 1 < len(units):
                    ahead = reader.submit(self._read, units[index + 1], fields)
                global_embedding = torch.from_numpy(rows["global"]).to(self.device)                 # (n, D)
                tokens = torch.from_numpy(rows["tokens"]).to(self.device) if "tokens" in rows else None
                parts = [scorer(tokens, global_embedding)] if rows["ids"] else []
                files = [os.path.join(self.root, image) for image in rows["ids"]] if self.root else \
                    [None] * len(rows["ids"])
                keys = {"split": [unit.split] * len(rows["ids"]), "row": rows["row"], "id": rows["ids"],
                        "image": [file or image for file, image in zip(files, rows["ids"])]}
                yield UnitScores(unit, keys, join_rows(parts, len(scorer.text)), files, skipped=rows["skipped"])
