"""Parsing NUS-WIDE's 0/1 label files (`AllTags1k.txt`, `Labels_<concept>.txt`) with numpy.

`AllTags1k.txt` is 269,648 lines x 1,000 tab-separated values (about 540 MB); a Python loop
over its values would take minutes, so each line-aligned block is checked and converted with
array operations. Values are single characters `0`/`1` separated by tabs or spaces; lines end
in LF or CRLF, often after a trailing tab.
"""
from __future__ import annotations

import numpy as np

from .base import file_error
from .textfiles import BLOCK_BYTES, line_blocks

NEWLINE, TAB, CR, SPACE, ZERO, ONE = (ord(c) for c in "\n\t\r 01")


def parse_block(path: str, first_line: int, block: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(every value of the block in order as uint8 0/1, number of values on each line)."""
    buf = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(buf == NEWLINE)                           # (lines,)
    is_value = (buf != NEWLINE) & (buf != TAB) & (buf != CR) & (buf != SPACE)
    glued = np.flatnonzero(is_value[1:] & is_value[:-1])                # a token longer than 1 char
    wrong = np.flatnonzero(is_value & (buf != ZERO) & (buf != ONE))
    if glued.size or wrong.size:
        index = int(np.searchsorted(newlines, min(glued[:1].tolist() + wrong[:1].tolist())))
        start = int(newlines[index - 1]) + 1 if index else 0
        text = block[start:newlines[index]].decode("utf-8", "replace")
        bad = next(token for token in text.split() if token not in ("0", "1"))
        raise file_error(path, first_line + index, f"expected 0 or 1, got {bad!r}")
    line_starts = np.concatenate([[0], newlines[:-1] + 1])             # blocks end with a newline
    counts = np.add.reduceat(is_value, line_starts, dtype=np.int64)      # (lines,) values per line
    return buf[is_value] - ZERO, counts


def drop_trailing_blanks(path: str, first_line: int, counts: np.ndarray,
                         blank_line: int | None) -> tuple[np.ndarray, int | None]:
    """The block's value counts without trailing blank lines, and the first blank line seen so
    far; a blank line followed by a non-blank one is an error (it would shift every row)."""
    if blank_line is not None and counts.any():
        raise file_error(path, blank_line, "blank line")
    blank = np.flatnonzero(counts == 0)
    if not blank.size:
        return counts, blank_line
    first = int(blank[0])
    if counts[first:].any():
        raise file_error(path, first_line + first, "blank line")
    return counts[:first], blank_line or first_line + first


def read_binary_table(path: str, width: int, lines_expected: int, expected_from: str,
                      block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """(lines_expected, width) uint8 0/1 matrix of a whitespace-separated 0/1 file.

    `expected_from` names the file whose line count this one must match, for the error message.
    """
    rows, lines, blank_line = [], 0, None
    for first_line, block in line_blocks(path, block_bytes):
        values, counts = parse_block(path, first_line, block)
        counts, blank_line = drop_trailing_blanks(path, first_line, counts, blank_line)
        wrong = np.flatnonzero(counts != width)
        if wrong.size:
            raise file_error(path, first_line + int(wrong[0]),
                             f"expected {width} values, got {int(counts[wrong[0]])}")
        rows.append(values.reshape(counts.size, width))                 # (lines in block, width)
        lines += counts.size
    if lines != lines_expected:
        raise file_error(path, None, f"{lines} lines, expected {lines_expected} (the lines of {expected_from})")
    return np.concatenate(rows) if rows else np.zeros((0, width), dtype=np.uint8)
