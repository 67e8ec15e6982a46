"""One writer per store and per folder: an exclusive OS lock on a small file, which the kernel
releases when its holder exits however it exits (kill -9 included), so no stale lock is ever
left to clear by hand.

A writer (`extract`, `add-labels`, `train-head`, `finetune`, `reproduce`, and any command that
writes an output folder) holds `writer_lock` for its whole run: a second writer on the same
target fails at once, with a one-line error naming the target, the holder's host and pid, and
what to do. Readers never take it. The lock file holds the holder's host, pid and start time;
it is removed on release (a lock file left by a killed holder is simply taken over).

Store locks sit beside the store (`x.zarr.lock`, since a new store is renamed into place);
folder locks inside the folder (`.ovml.lock`). A file system without locks (flock answering
ENOLCK or EOPNOTSUPP, some network mounts) and a remote URL store are refused unless the
caller passes `enabled=False` (`--no-lock`): the user then promises that no one else writes.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from typing import Iterator

from .errors import OvmlError

FOLDER_LOCK = ".ovml.lock"
STORE_LOCK_SUFFIX = ".lock"
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
_PROCESS_LOCAL: set[str] = set()     # in-memory (memory://) stores held by this process
_PROCESS_LOCAL_GUARD = threading.Lock()
_HELD: set[int] = set()              # descriptors of the lock files this process holds


def _close_in_child() -> None:
    """A forked child (a decode worker) must not keep its parent's lock alive after the parent is
    killed: flock belongs to the open file, shared by every copy of the descriptor until the last
    is closed, so the child closes its copies."""
    for descriptor in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class LockError(OvmlError, RuntimeError):
    """Another writer holds the target, or the target's file system cannot lock."""


def store_lock_file(store: str) -> str:
    """The lock file of a local store: beside it, `<store>.lock`."""
    return store.rstrip("/") + STORE_LOCK_SUFFIX


def folder_lock_file(folder: str) -> str:
    """The lock file of an output folder: inside it."""
    return os.path.join(folder, FOLDER_LOCK)


def holder_text(descriptor: int) -> str:
    """`pid P on host H (since T)` from an open lock file, or a phrase when it is not written yet."""
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    if "pid" not in holder:
        return "another process (not yet recorded)"
    return f"pid {holder['pid']} on host {holder.get('host', '?')} (since {holder.get('since', '?')})"


class WriterLock:
    """An exclusive lock on `lock_file`, taken for writing `target` (the store or folder named in
    messages); `release` (or leaving the `with` block) frees it and removes the lock file."""

    def __init__(self, target: str, lock_file: str):
        self.target, self.lock_file = target, lock_file
        self.descriptor: int | None = None
        self.made_folder: str | None = None

    def acquire(self) -> "WriterLock":
        folder = os.path.dirname(os.path.abspath(self.lock_file))
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            self.made_folder = folder
        while True:
            existed = os.path.exists(self.lock_file)
            descriptor = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = holder_text(descriptor)
                os.close(descriptor)
                raise LockError(f"{self.target}: being written by {holder}; wait for it to finish or stop "
                                "it (a second writer would break it), then run this again") from None
            except OSError as err:
                os.close(descriptor)
                if not existed:
                    with contextlib.suppress(OSError):
                        os.unlink(self.lock_file)
                self._tidy_folder()
                if err.errno in NO_LOCKS:
                    raise LockError(f"{self.target}: this file system cannot lock {self.lock_file} "
                                    f"({err.strerror}); pass --no-lock if you are sure no other process "
                                    "writes it") from None
                raise
            if self._still_named(descriptor):
                break
            os.close(descriptor)     # its holder removed that file on release: take the new one
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                          "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self.descriptor = descriptor
        _HELD.add(descriptor)
        return self

    def _still_named(self, descriptor: int) -> bool:
        """Whether the locked file is still the one at `lock_file` (not one a releasing holder unlinked)."""
        try:
            named = os.stat(self.lock_file)
        except FileNotFoundError:
            return False
        held = os.fstat(descriptor)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _tidy_folder(self) -> None:
        if self.made_folder is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.made_folder)

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one locks the old file), then unlock."""
        if self.descriptor is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock_file)
        _HELD.discard(self.descriptor)
        os.close(self.descriptor)
        self.descriptor = None
        self._tidy_folder()

    def __enter__(self) -> "WriterLock":
        return self.acquire() if self.descriptor is None else self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def process_local_lock(target: str) -> Iterator[None]:
    """The lock of a store that lives in this process's memory (`memory://`)."""
    with _PROCESS_LOCAL_GUARD:
        if target in _PROCESS_LOCAL:
            raise LockError(f"{target}: being written by this process already; wait for it to finish")
        _PROCESS_LOCAL.add(target)
    try:
        yield
    finally:
        with _PROCESS_LOCAL_GUARD:
            _PROCESS_LOCAL.discard(target)


@contextlib.contextmanager
def writer_lock(target: str, lock_file: str | None, enabled: bool = True) -> Iterator[None]:
    """Hold the writer's lock on `target` (through `lock_file`) for the `with` block.

    `lock_file` None means the target has no local file to lock (a remote URL store): refused
    unless `enabled` is False. With `enabled` False nothing is locked (`--no-lock`)."""
    if not enabled:
        yield
        return
    if target.startswith("memory://"):
        with process_local_lock(target):
            yield
        return
    if lock_file is None:
        raise LockError(f"{target}: a store at a URL cannot be locked against a second writer; pass --no-lock "
                        "if you are sure no other process writes it")
    with WriterLock(target, lock_file):
        yield


def folder_lock(folder: str, enabled: bool = True):
    """`writer_lock` for an output folder (run folder, reproduce folder, tag output): the lock file
    inside it; a folder the lock had to create is removed again on release if still empty."""
    return writer_lock(folder, folder_lock_file(folder), enabled)
