"""Atomic file writes: a JSON document, a text or a tensor file is written whole or not at all.

Each is written to a hidden `.NAME.tmp` in the destination's own folder (so the rename never
crosses file systems, and a tool listing an image folder skips it), flushed to disk, then renamed
over PATH: an interruption leaves either the old file or the new one, never half of one (a
leftover temporary file is overwritten by the next write).
"""
from __future__ import annotations

import json
import os
from typing import Callable

import torch


def replace_atomically(path: str, write: Callable[[str], None]) -> None:
    """`write(temporary)` writes the new content to the temporary path given; it is then fsynced
    and renamed to `path`. On any failure the temporary file is removed and `path` left as it was."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.tmp")
    try:
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException as err:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(err, OSError) and err.filename is None:   # a failed write() names no file
            raise OSError(err.errno, err.strerror, path) from err
        raise


def write_json(path: str, value, indent: int = 2, sort_keys: bool = False) -> None:
    """`value` as JSON (json.dump's `indent` and `sort_keys`), written atomically."""
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=indent, sort_keys=sort_keys)
    replace_atomically(path, write)


def write_text(path: str, text: str) -> None:
    """`text` (UTF-8), written atomically."""
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
    replace_atomically(path, write)


def save_tensors(path: str, state: dict) -> None:
    """`torch.save(state)`, written atomically. torch writes through a Python file, so a failed
    write (a full disk) is the OSError itself, not torch's multi-line RuntimeError."""
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            try:
                torch.save(state, handle)
            except RuntimeError as err:   # torch's own complaint while closing after the write failed
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from None
                raise
    replace_atomically(path, write)
