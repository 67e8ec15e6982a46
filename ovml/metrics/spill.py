"""A temporary on-disk store of the annotated entries of (images, labels) score matrices, by column block.

Rows arrive in batches. Each batch is cut into column blocks at once and only its annotated
entries (label +1 or -1) are kept: per block one code per entry (column inside the block x 2 +
positive, uint16) and the entry's float32 value in every named matrix, in the same order.
Pending entries are appended to one file per (block, matrix) every FLUSH_ENTRIES entries; a
block is read back whole. Values are stored bit for bit, and the folder is deleted on `close`.
Unannotated entries (label 0) are never stored: LESA's AP ignores them, so Open Images'
sparse annotations take a small fraction of the dense matrix.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np

from ..errors import UsageError, os_reason

MAX_BLOCK_COLUMNS = 1 << 15  # a uint16 code holds column * 2 + positive
FLUSH_ENTRIES = 1 << 23      # pending annotated entries (all blocks) before they are written
CODES = "codes"


class AnnotatedSpill:
    """Annotated entries of the matrices `names`, spilled to `scratch` (None: the system's temp folder)."""

    def __init__(self, names: Sequence[str], n_labels: int, block_columns: int, scratch: str | None = None):
        if not 1 <= block_columns <= MAX_BLOCK_COLUMNS:
            raise ValueError(f"block_columns must lie in [1, {MAX_BLOCK_COLUMNS}], got {block_columns}")
        self.names = list(names)
        self.blocks = [slice(start, min(start + block_columns, n_labels))
                       for start in range(0, n_labels, block_columns)]
        try:
            self.folder = tempfile.mkdtemp(prefix="ovml-scores-", dir=scratch)
        except OSError as err:
            raise UsageError(f"{scratch or tempfile.gettempdir()}: cannot hold the temporary score store "
                             f"({os_reason(err)})") from err
        self.bytes_written = 0
        self._pending: list[list[dict[str, np.ndarray]]] = [[] for _ in self.blocks]
        self._pending_entries = 0

    def append(self, labels: np.ndarray, matrices: dict[str, np.ndarray]) -> None:
        """Keep the annotated entries of a batch: labels (B, L) int8, every named matrix (B, L) float32."""
        for name in self.names:
            if matrices[name].dtype != np.float32 or matrices[name].shape != labels.shape:
                raise ValueError(f"{name}: float32 scores of shape {labels.shape} expected, "
                                 f"got {matrices[name].dtype} {matrices[name].shape}")
        for pending, block in zip(self._pending, self.blocks):
            block_labels = labels[:, block]                                  # (B, w)
            rows, columns = np.nonzero(block_labels)
            entry = {CODES: (columns * 2 + (block_labels[rows, columns] == 1)).astype(np.uint16)}
            for name in self.names:
                entry[name] = matrices[name][:, block][rows, columns]
            pending.append(entry)
            self._pending_entries += len(rows)
        if self._pending_entries >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        """Append every pending entry to its block's files."""
        try:
            for index, pending in enumerate(self._pending):
                for key in [CODES] + self.names:
                    values = np.concatenate([entry[key] for entry in pending]) if pending else None
                    if values is not None and len(values):
                        with open(self._file(index, key), "ab") as handle:
                            values.tofile(handle)
                        self.bytes_written += values.nbytes
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise UsageError(f"{self.folder}: no space left for the temporary score store "
                                 f"({self.bytes_written / 1e9:.1f} GB written so far); "
                                 "point --scratch at a larger disk") from err
            raise
        self._pending = [[] for _ in self.blocks]
        self._pending_entries = 0

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Block `index`: (columns inside the block uint16, positive bool, {name: float32 values})."""
        codes = self._read(index, CODES, np.uint16)
        values = {name: self._read(index, name, np.float32) for name in self.names}
        return codes >> 1, (codes & 1).astype(bool), values

    def _file(self, index: int, key: str) -> str:
        return os.path.join(self.folder, f"{index:05d}.{CODES if key == CODES else self.names.index(key)}")

    def _read(self, index: int, key: str, dtype: type) -> np.ndarray:
        path = self._file(index, key)
        return np.fromfile(path, dtype=dtype) if os.path.exists(path) else np.zeros(0, dtype=dtype)

    def close(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self._pending = [[] for _ in self.blocks]
