"""Reading an Open Images human-label CSV (`ImageID,Source,LabelName,Confidence`) into CSR rows.

The train file has tens of millions of rows, so it is never held as one Python object per row:
it is read in line-aligned 32 MiB blocks; each block is split into fields with numpy (comma
positions, fixed-width byte matrices), consecutive rows of one image share one dict lookup
(ImageID -> image index, one entry per image), each distinct MID of the block one lookup
(MID -> column), and the block leaves three small arrays (image int32, column int32,
value int8). At the end one stable sort by (image, column) gives the CSR rows.

Rows of one image are merged wherever they appear in the file (LESA's 40,000-row chunking split
such images into two records). Images are numbered in order of first appearance, and every image
in the file is listed, also one whose MIDs are all outside the vocabulary (its row is all 0).
A repeated (image, MID) keeps the value of its last row, as LESA's in-order writes do.
Fields must not be quoted (the release files never are).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .base import file_error
from .textfiles import line_blocks

HEADER = b"ImageID,Source,LabelName,Confidence"
NEWLINE, CR, COMMA, QUOTE, ZERO, ONE = (ord(c) for c in "\n\r,\"01")


@dataclass
class ImageLabels:
    """One annotation CSV as CSR label rows, one row per image."""

    ids: list[str]            # ImageIDs, order of first appearance
    indptr: np.ndarray        # (images + 1,) int64
    columns: np.ndarray       # (nnz,) int32, ascending within a row
    values: np.ndarray        # (nnz,) int8: +1 (Confidence 1), -1 (Confidence 0)
    rows: int                 # data rows read
    rows_ignored: int         # rows whose MID is in no label column
    rows_repeated: int        # rows whose (image, MID) came again later (the last one counts)
    seconds: float


def field_bytes(buf: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """(rows, width) uint8: the bytes buf[start:stop] of each row, zero-padded to the widest."""
    width = max(int((stop - start).max()), 1)
    index = start[:, None] + np.arange(width)                           # (rows, width)
    return np.where(index < stop[:, None], buf[np.minimum(index, buf.size - 1)], 0).astype(np.uint8)


def as_strings(chars: np.ndarray) -> np.ndarray:
    """(rows,) bytes strings of a (rows, width) uint8 matrix (trailing zeros dropped)."""
    return np.ascontiguousarray(chars).view(f"S{chars.shape[1]}")[:, 0]


def confidence_values(path: str, block: bytes, lines: np.ndarray, start: np.ndarray,
                      stop: np.ndarray) -> np.ndarray:
    """(rows,) int8 2*Confidence-1; `0`/`1` vectorised, other spellings (`1.0`) one by one."""
    buf = np.frombuffer(block, dtype=np.uint8)
    first = buf[np.minimum(start, buf.size - 1)]
    values = np.where(first == ONE, 1, -1).astype(np.int8)
    for row in np.flatnonzero((stop - start != 1) | ((first != ZERO) & (first != ONE))):
        text = block[start[row]:stop[row]].decode("utf-8", "replace").strip()
        try:
            number = float(text)
        except ValueError:
            raise file_error(path, int(lines[row]), f"non-numeric Confidence {text!r}") from None
        if number not in (0.0, 1.0):
            raise file_error(path, int(lines[row]), f"Confidence must be 0 or 1, got {text!r}")
        values[row] = 1 if number == 1.0 else -1
    return values


class CsvReader:
    """State kept across the blocks of one file: image numbering and MID lookup."""

    def __init__(self, path: str, column_of: dict[str, int]):
        self.path = path
        self.column_of = {mid.encode(): column for mid, column in column_of.items()}
        self.image_index: dict[bytes, int] = {}
        self.rows = self.rows_ignored = 0

    def block(self, first_line: int, block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image index, column, value) of the block's rows whose MID is a label column."""
        buf = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(buf == NEWLINE)                           # (lines,)
        starts = np.zeros_like(ends)
        starts[1:] = ends[:-1] + 1
        stops = ends - (buf[np.maximum(ends - 1, 0)] == CR)
        lines = first_line + np.flatnonzero(stops > starts)             # blank lines dropped
        starts, stops = starts[stops > starts], stops[stops > starts]
        if not starts.size:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8)
        if QUOTE in buf:
            raise file_error(self.path, first_line + block.count(b"\n", 0, block.index(b'"')),
                             "quoted fields are not supported")
        commas = np.flatnonzero(buf == COMMA)
        first_comma = np.searchsorted(commas, starts)
        wrong = np.flatnonzero(np.searchsorted(commas, stops) - first_comma != 3)
        if wrong.size:
            raise file_error(self.path, int(lines[wrong[0]]),
                             "expected 4 fields ImageID,Source,LabelName,Confidence")
        cut = commas[first_comma[:, None] + np.arange(3)]               # (rows, 3) comma positions
        if (cut[:, 0] == starts).any():
            raise file_error(self.path, int(lines[np.argmax(cut[:, 0] == starts)]), "empty ImageID")
        image = self.image_numbers(field_bytes(buf, starts, cut[:, 0]))
        mids, mid_of_row = np.unique(as_strings(field_bytes(buf, cut[:, 1] + 1, cut[:, 2])),
                                     return_inverse=True)
        column = np.array([self.column_of.get(mid, -1) for mid in mids.tolist()],
                          dtype=np.int32)[mid_of_row]
        value = confidence_values(self.path, block, lines, cut[:, 2] + 1, stops)
        keep = column >= 0
        self.rows += starts.size
        self.rows_ignored += int(starts.size - keep.sum())
        return image[keep], column[keep], value[keep]

    def image_numbers(self, chars: np.ndarray) -> np.ndarray:
        """(rows,) int32 image index of each row; one dict lookup per run of equal ImageIDs."""
        new_run = np.ones(len(chars), dtype=bool)
        new_run[1:] = (chars[1:] != chars[:-1]).any(axis=1)
        index = self.image_index
        run_images = np.fromiter((index.setdefault(key, len(index)) for key in as_strings(chars[new_run]).tolist()),
                                 dtype=np.int32, count=int(new_run.sum()))
        return run_images[np.cumsum(new_run) - 1]

    def image_ids(self) -> list[str]:
        try:
            return [key.decode("utf-8") for key in self.image_index]
        except UnicodeDecodeError as err:
            raise file_error(self.path, None, f"an ImageID is not UTF-8 ({err})") from None


def to_csr(image: np.ndarray, column: np.ndarray, value: np.ndarray, images: int,
           labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(indptr, columns, values, repeated rows): rows sorted by (image, column); of repeated
    (image, column) pairs the last in file order is kept."""
    key = image.astype(np.int64) * labels + column
    order = np.argsort(key, kind="stable")
    key = key[order]
    last = np.ones(key.size, dtype=bool)
    last[:-1] = key[1:] != key[:-1]
    order = order[last]
    indptr = np.zeros(images + 1, dtype=np.int64)
    np.cumsum(np.bincount(image[order], minlength=images), out=indptr[1:])
    return indptr, column[order], value[order], int(key.size - order.size)


def read_image_labels(path: str, column_of: dict[str, int]) -> ImageLabels:
    """Read one `*-annotations-human-imagelabels.csv`; `column_of` maps MID -> label column."""
    started = time.perf_counter()
    reader = CsvReader(path, column_of)
    parts = []
    for first_line, block in line_blocks(path):
        if first_line == 1:
            header, _, block = block.partition(b"\n")
            if header.rstrip(b"\r").removeprefix(b"\xef\xbb\xbf") != HEADER:
                raise file_error(path, 1, f"expected the header {HEADER.decode()}")
            first_line = 2
        parts.append(reader.block(first_line, block))
    if not parts:
        raise file_error(path, None, f"empty file (expected the header {HEADER.decode()})")
    image, column, value = (np.concatenate([part[i] for part in parts]) for i in range(3))
    indptr, columns, values, repeated = to_csr(image, column, value, len(reader.image_index),
                                               max(column_of.values(), default=0) + 1)
    return ImageLabels(reader.image_ids(), indptr, columns, values, reader.rows, reader.rows_ignored,
                       repeated, time.perf_counter() - started)
