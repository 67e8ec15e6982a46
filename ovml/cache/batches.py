"""Row batches for training, streamed from the cache chunk by chunk.

The order is shuffled across chunks (a seeded permutation of units) and within a buffer of
`shuffle_buffer` chunks, so a cache larger than RAM trains with bounded memory while chunks
are read ahead in a background thread. `in_memory` reads every unit once and keeps it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..progress import progress as progress_bar
from .reader import CacheReader

# A batch's fields, as the reader names them. "tokens" is what a head reads: X' (N, HW, C) for a
# ResNet, [cls; X'] (N, 1+HW, W) for a ViT, so every head keeps one signature for both kinds.
FIELDS = ("tokens", "global", "labels")


@dataclass
class RowSelection:
    """Which rows of a split take part, grouped by the unit (chunk) that holds them."""

    split: str
    unit_rows: int
    rows_by_unit: dict[int, np.ndarray]   # unit -> row offsets inside the unit

    @property
    def count(self) -> int:
        return int(sum(len(rows) for rows in self.rows_by_unit.values()))

    @classmethod
    def from_mask(cls, split: str, unit_rows: int, mask: np.ndarray, units=None) -> "RowSelection":
        """The rows where `mask` (N,) is true, in `units` (default: every unit holding one)."""
        units = np.unique(np.flatnonzero(mask) // unit_rows) if units is None else units
        return cls(split, unit_rows, {int(u): np.flatnonzero(mask[u * unit_rows:(u + 1) * unit_rows])
                                      for u in units})

    @classmethod
    def usable(cls, reader: CacheReader, split: str, units=None) -> "RowSelection":
        """The usable rows of `split` (ok, in finished units), in `units` (default: every unit holding one)."""
        return cls.from_mask(split, reader.unit_rows(split), reader.usable_rows(split), units)


def trainable_rows(reader: CacheReader, split: str, columns: np.ndarray, progress: bool = True) -> np.ndarray:
    """(N,) bool: ok rows of finished units with at least one positive among `columns`.

    Labels are streamed unit by unit, so this works for label matrices larger than memory.
    """
    usable = reader.usable_rows(split)
    has_positive = np.zeros_like(usable)
    r, n = reader.unit_rows(split), reader.num_rows(split)
    units = range(len(reader.units_done(split)))
    for unit, rows in progress_bar(reader.iter_units(split, units, ["labels"]), total=len(units),
                                   desc="scan labels", unit="unit", enabled=progress):
        has_positive[unit * r: min((unit + 1) * r, n)] = (rows["labels"][:, columns] == 1).any(axis=1)
    return usable & has_positive


def carve_validation(mask: np.ndarray, unit_rows: int, fraction: float, seed: int,
                     split: str) -> tuple[RowSelection, RowSelection]:
    """Split the selected rows into training and validation by whole units (seeded)."""
    units = np.unique(np.flatnonzero(mask) // unit_rows)
    rng = np.random.default_rng([seed, 7])
    count = int(round(len(units) * fraction)) if fraction > 0 else 0
    if fraction > 0 and len(units) > 1:
        count = min(max(count, 1), len(units) - 1)
    held_out = set(rng.permutation(units)[:count].tolist())

    return (RowSelection.from_mask(split, unit_rows, mask, [u for u in units if u not in held_out]),
            RowSelection.from_mask(split, unit_rows, mask, sorted(held_out)))


def validation_rows(reader: CacheReader, validation: dict) -> RowSelection:
    """A run's validation images in its training cache: config.json's `validation`, the units
    `carve_validation` held out (split 'train' where an older run did not record it)."""
    return RowSelection.usable(reader, validation.get("split", "train"), validation["units"])


class BatchStream:
    """Shuffled batches of (tokens, global, labels) rows from a `RowSelection`."""

    def __init__(self, reader: CacheReader, selection: RowSelection, batch_size: int,
                 shuffle_buffer: int = 8, prefetch: int = 2, in_memory: bool = False):
        self.reader, self.selection = reader, selection
        self.batch_size, self.shuffle_buffer, self.prefetch = batch_size, max(1, shuffle_buffer), prefetch
        self.memory: dict[int, dict] | None = {} if in_memory else None

    def steps(self) -> int:
        """Batches per epoch."""
        return -(-self.selection.count // self.batch_size)

    def _read(self, units: list[int]) -> Iterator[tuple[int, dict]]:
        """(unit, {field: rows}) for `units`, read ahead in a background thread."""
        yield from self.reader.iter_units(self.selection.split, units, FIELDS, self.prefetch)

    def _units(self, order: list[int]) -> Iterator[tuple[int, dict]]:
        if self.memory is None:
            yield from self._read(order)
            return
        missing = [u for u in order if u not in self.memory]
        for unit, rows in self._read(missing):
            self.memory[unit] = rows
        for unit in order:
            yield unit, self.memory[unit]

    def epoch(self, seed: int, shuffle: bool = True) -> Iterator[dict]:
        """One pass: chunk order permuted, rows mixed within a buffer of chunks, fixed by `seed`."""
        rng = np.random.default_rng(seed)
        order = sorted(self.selection.rows_by_unit)
        if shuffle:
            order = [order[i] for i in rng.permutation(len(order))]
        pending: list[dict] = []
        buffer: list[dict] = []
        for unit, rows in self._units(order):
            keep = self.selection.rows_by_unit[unit]
            buffer.append({field: rows[field][keep] for field in FIELDS})
            if len(buffer) >= self.shuffle_buffer:
                pending = yield from self._emit(pending + [self._mix(buffer, rng, shuffle)], final=False)
                buffer = []
        if buffer:
            pending.append(self._mix(buffer, rng, shuffle))
        yield from self._emit(pending, final=True)

    @staticmethod
    def _mix(buffer: list[dict], rng: np.random.Generator, shuffle: bool) -> dict:
        joined = {field: np.concatenate([part[field] for part in buffer]) for field in FIELDS}
        if not shuffle:
            return joined
        order = rng.permutation(len(joined["labels"]))
        return {field: values[order] for field, values in joined.items()}

    def _emit(self, parts: list[dict], final: bool):
        """Yield full batches from `parts`; return what is left over (all of it is yielded if final)."""
        if not parts:
            return []
        joined = {field: np.concatenate([part[field] for part in parts]) for field in FIELDS}
        total = len(joined["labels"])
        full = total if final else total - total % self.batch_size
        for start in range(0, full, self.batch_size):
            yield {field: values[start:start + self.batch_size] for field, values in joined.items()}
        return [{field: values[full:] for field, values in joined.items()}] if full < total else []


def batch_tensors(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's (tokens, global embeddings) as float32 tensors on `device`."""
    tokens = torch.from_numpy(batch["tokens"]).to(device).float()             # (B, T, C)
    global_embedding = torch.from_numpy(batch["global"]).to(device).float()   # (B, D)
    return tokens, global_embedding


def pool_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """CLIP's pool weights (`pool/*` names) as float32 tensors on `device`."""
    return {key: torch.from_numpy(value).float().to(device) for key, value in arrays.items()}


def cache_pool(reader: CacheReader, device: torch.device) -> dict[str, torch.Tensor]:
    return pool_tensors(reader.pool, device)
