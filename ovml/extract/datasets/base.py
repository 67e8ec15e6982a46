"""What a dataset adapter hands the extractor: a vocabulary and, per split, images and labels.

Label matrices can be far larger than memory (Open Images train: 5.5M x 7,186), so a split gives
its labels by row range; adapters keep them dense (`ArraySplit`) or sparse (`SparseSplit`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...cache.schema import TRAINING_SPLIT, UNSEEN_ON_TRAINING
from ...errors import OvmlError


class DatasetError(OvmlError, ValueError):
    """Malformed dataset files; the message names the file, the line and the problem."""


def file_error(path: str, line: int | None, problem: str) -> DatasetError:
    """A one-line error naming the file (and line, when there is one)."""
    where = f"{path}:{line}" if line is not None else path
    return DatasetError(f"{where}: {problem}")


@dataclass(frozen=True)
class Vocabulary:
    """The label columns shared by every split."""

    names: list[str]          # display names, column order
    ids: list[str]            # unique identifiers (MID for Open Images, else the name)
    seen: np.ndarray          # (L,) bool

    def __len__(self) -> int:
        return len(self.ids)


class Split:
    """One split: image ids (relative to the root), where each image is, and its label rows."""

    name: str
    ids: list[str]
    paths: list[str]
    # Optional check of a file's bytes: returns a reason to reject it (e.g. a placeholder) or None.
    file_check: Callable[[bytes], str | None] | None = None
    # Resolved folders every image must lie within (`open_dataset` sets them); None: anywhere.
    roots: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, L) int8 rows: 1 positive, -1 annotated negative, 0 not annotated."""
        raise NotImplementedError


@dataclass
class ArraySplit(Split):
    """A split whose label matrix is held dense in memory."""

    name: str
    ids: list[str]
    paths: list[str]
    matrix: np.ndarray        # (N, L) int8
    file_check: Callable[[bytes], str | None] | None = None

    def labels(self, start, stop):
        return self.matrix[start:stop]


@dataclass
class SparseSplit(Split):
    """A split whose labels are kept in CSR form (rows of (column, value) pairs)."""

    name: str
    ids: list[str]
    paths: list[str]
    indptr: np.ndarray        # (N + 1,) int64 row offsets
    columns: np.ndarray       # (nnz,) int32 label columns
    values: np.ndarray        # (nnz,) int8 in {-1, 1}
    num_labels: int
    file_check: Callable[[bytes], str | None] | None = None

    def labels(self, start, stop):
        block = np.zeros((stop - start, self.num_labels), dtype=np.int8)
        lo, hi = self.indptr[start], self.indptr[stop]
        rows = np.repeat(np.arange(stop - start), np.diff(self.indptr[start:stop + 1]))
        block[rows, self.columns[lo:hi]] = self.values[lo:hi]
        return block


@dataclass
class SeenOnlySplit(Split):
    """A split whose unseen columns are all 0 (not annotated): what the training split must be."""

    inner: Split
    seen: np.ndarray          # (L,) bool

    def __post_init__(self):
        self.name, self.ids, self.paths = self.inner.name, self.inner.ids, self.inner.paths
        self.file_check, self.roots = self.inner.file_check, self.inner.roots

    def labels(self, start, stop):
        block = np.array(self.inner.labels(start, stop), dtype=np.int8)
        block[:, ~self.seen] = 0
        return block


@dataclass
class DatasetSource:
    """An opened dataset: vocabulary, splits, and what the adapter read (for the cache attrs)."""

    name: str                 # adapter name: folder, nuswide, openimages, coco
    root: str
    vocabulary: Vocabulary
    splits: dict[str, Split]
    attrs: dict = field(default_factory=dict)  # files read, counts per split, adapter version

    def __post_init__(self):
        """Every adapter's training split loses its unseen annotations here, so no adapter (and no
        later code path) can hand them to training."""
        training = self.splits.get(TRAINING_SPLIT)
        if training is not None and not isinstance(training, SeenOnlySplit):
            self.splits[TRAINING_SPLIT] = SeenOnlySplit(inner=training, seen=np.asarray(self.vocabulary.seen))

    def describe(self) -> dict:
        """The cache's `dataset` root attribute."""
        return {"name": self.name, "root": os.path.abspath(self.root), **self.attrs,
                "unseen_labels_on_training_split": {"split": TRAINING_SPLIT, "value": UNSEEN_ON_TRAINING}}
