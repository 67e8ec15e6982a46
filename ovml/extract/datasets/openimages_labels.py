"""Reading an Open Images human-label CSV (`ImageID,Source,LabelName,Confidence`) into CSR rows.

The train file has tens of millions of rows, so it is never held as one Python object per row:
it is read in line-aligned 16 MiB blocks, and each block is split with numpy (newline and comma
positions, each field read as a few 64-bit words). Consecutive rows of one image share one dict
lookup (ImageID -> image index, one entry per image); MIDs are looked up as whole arrays by
binary search among the vocabulary's (exactly verified) keys. Each block leaves three small
arrays (image int32, column int32, value int8); one stable sort by (image, column) at the end
gives the CSR rows. Benchmark B12 (docs/benchmarks.md) measures its rate against a plain Python
loop over lines and against `np.loadtxt`.

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
from .textfiles import BLOCK_BYTES, line_blocks

HEADER = b"ImageID,Source,LabelName,Confidence"
NEWLINE, CR, COMMA, QUOTE, ZERO, ONE = (ord(c) for c in "\n\r,\"01")
MIX_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so each step is a bijection of the key
BYTE_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)  # low n bytes


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


def field_words(data: np.ndarray, start: np.ndarray, stop: np.ndarray, words: int) -> np.ndarray:
    """(rows, words) little-endian uint64: the bytes data[start:stop] of each row, zero-padded
    (or cut) to `words` 64-bit words, so that fields compare and sort word by word.

    `data` must end in 8 zero bytes. Each word is one unaligned 8-byte read (a strided view of
    the buffer), masked to the field's bytes: 2 reads per 16-byte ImageID instead of 16.
    """
    unaligned = np.ndarray((data.size - 7,), dtype="<u8", buffer=data, strides=(1,))
    offsets = start[:, None] + 8 * np.arange(words)                     # (rows, words)
    valid = np.clip(stop[:, None] - offsets, 0, 8)                      # bytes of the field in each word
    return (unaligned[np.minimum(offsets, data.size - 8)] & BYTE_MASKS[valid]).astype("<u8", copy=False)


def word_count(longest: int) -> int:
    """64-bit words needed for a field of `longest` bytes."""
    return max(1, -(-longest // 8))


def mix(words: np.ndarray) -> np.ndarray:
    """(rows,) uint64 key of (rows, k) words; equal words give equal keys (not conversely)."""
    key = words[:, 0].copy()
    for column in range(1, words.shape[1]):
        key = key * MIX_MULTIPLIER + words[:, column]                   # wraps modulo 2**64
    return key


class MidColumns:
    """MID -> label column for whole arrays of MIDs, without a Python call per row: each MID's
    words are mixed into one key, looked up by binary search among the vocabulary's keys, and a
    hit counts only if all its words equal that vocabulary MID's (so the lookup is exact)."""

    def __init__(self, path: str, column_of: dict[str, int]):
        mids = [mid.encode() for mid in column_of]
        self.width = word_count(max(map(len, mids), default=1))
        data = np.frombuffer(b"".join(mids) + bytes(8), dtype=np.uint8)
        stop = np.cumsum([len(mid) for mid in mids])
        words = field_words(data, stop - [len(mid) for mid in mids], stop, self.width)  # (labels, width)
        keys = mix(words)
        order = np.argsort(keys)
        self.keys, self.words = keys[order], words[order]
        self.columns = np.array(list(column_of.values()), dtype=np.int32)[order]
        if np.unique(self.keys).size != self.keys.size:
            raise file_error(path, None, "two label MIDs mix to the same 64-bit lookup key (odds about "
                                         "1e-12); please report this vocabulary")

    def lookup(self, data: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """(rows,) int32 column of each row's MID data[start:stop], -1 when not a label."""
        words = field_words(data, start, stop, self.width)              # (rows, width)
        keys = mix(words)
        at = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        hit = ((self.keys[at] == keys) & (stop - start <= 8 * self.width)
               & (self.words[at] == words).all(axis=1))
        return np.where(hit, self.columns[at], -1).astype(np.int32)


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
        self.mid_columns = MidColumns(path, column_of)
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
        if QUOTE in buf:
            raise file_error(self.path, first_line + block.count(b"\n", 0, block.index(b'"')),
                             "quoted fields are not supported")
        cut = self.comma_positions(buf, starts, stops, lines)           # (rows, 3)
        if (cut[:, 0] == starts).any():
            raise file_error(self.path, int(lines[np.argmax(cut[:, 0] == starts)]), "empty ImageID")
        data = np.frombuffer(block + bytes(8), dtype=np.uint8)         # padded for field_words
        image = self.image_numbers(data, starts, cut[:, 0])
        column = self.mid_columns.lookup(data, cut[:, 1] + 1, cut[:, 2])
        value = confidence_values(self.path, block, lines, cut[:, 2] + 1, stops)
        keep = column >= 0
        self.rows += starts.size
        self.rows_ignored += int(starts.size - keep.sum())
        return image[keep], column[keep], value[keep]

    def comma_positions(self, buf: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                        lines: np.ndarray) -> np.ndarray:
        """(rows, 3) positions of each row's three commas; an error at a row without exactly 3.
        Fast check: 3 commas per row in total and every row's triple inside that row."""
        commas = np.flatnonzero(buf == COMMA)
        if commas.size == 3 * starts.size:
            cut = commas.reshape(-1, 3)                                 # (rows, 3)
            if (cut[:, 0] >= starts).all() and (cut[:, 2] < stops).all():
                return cut
        per_row = np.searchsorted(commas, stops) - np.searchsorted(commas, starts)
        raise file_error(self.path, int(lines[np.argmax(per_row != 3)]),
                         "expected 4 fields ImageID,Source,LabelName,Confidence")

    def image_numbers(self, data: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """(rows,) int32 image index of each row; one dict lookup per run of equal ImageIDs."""
        width = word_count(int((stop - start).max(initial=1)))
        words = field_words(data, start, stop, width)                   # (rows, width)
        new_run = np.ones(len(words), dtype=bool)
        new_run[1:] = (words[1:] != words[:-1]).any(axis=1)
        keys = words[new_run].view(f"S{8 * width}")[:, 0].tolist()      # bytes, zero padding dropped
        index = self.image_index
        run_images = np.fromiter((index.setdefault(key, len(index)) for key in keys),
                                 dtype=np.int32, count=len(keys))
        return run_images[np.cumsum(new_run) - 1]

    def image_ids(self) -> list[str]:
        """The ImageIDs in order of first appearance."""
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


def read_image_labels(path: str, column_of: dict[str, int], block_bytes: int = BLOCK_BYTES) -> ImageLabels:
    """Read one `*-annotations-human-imagelabels.csv`; `column_of` maps MID -> label column."""
    started = time.perf_counter()
    reader = CsvReader(path, column_of)
    parts = []
    for first_line, block in line_blocks(path, block_bytes):
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
