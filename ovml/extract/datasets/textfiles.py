"""Reading the benchmarks' own text files: small line lists, huge files in line-aligned blocks,
and which image files a folder holds.

The release files mix LF and CRLF, carry trailing tabs and (Open Images) a UTF-8 BOM; every
reader here accepts all of those. Blank lines are allowed only at the end of a file, because
line i of one file must stay line i of another.
"""
from __future__ import annotations

import os
from typing import Iterator

from .base import file_error

BLOCK_BYTES = 1 << 24  # 16 MiB: big enough for numpy to pay off, small enough to keep memory flat


def require_file(path: str) -> str:
    """`path`, or a one-line error when it is not a file."""
    if not os.path.isfile(path):
        raise file_error(path, None, "file not found")
    return path


def read_lines(path: str) -> list[str]:
    """The stripped lines of a small text file (BOM, CRLF and trailing blanks removed)."""
    with open(require_file(path), encoding="utf-8-sig", newline="") as handle:
        lines = [line.strip() for line in handle.read().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line:
            raise file_error(path, number, "blank line")
    return lines


def read_unique_lines(path: str) -> list[str]:
    """The lines of a name list (`read_lines`), each at most once."""
    lines = read_lines(path)
    first: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if first.setdefault(line, number) != number:
            raise file_error(path, number, f"{line!r} already on line {first[line]}")
    return lines


def line_blocks(path: str, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(number of the block's first line, bytes) for consecutive blocks of whole lines; every
    block ends with a newline (one is added after an unterminated last line)."""
    line = 1
    carry = b""
    with open(require_file(path), "rb") as handle:
        while True:
            chunk = handle.read(block_bytes)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            yield line, block
            line += block.count(b"\n")
    if carry:
        yield line, carry + b"\n"


def folder_names(folder: str) -> set[str]:
    """The entry names in `folder` (one directory read, not a stat per image); empty if absent."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return set()
