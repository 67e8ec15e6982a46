"""Writer threads with a bounded queue: cache writes overlap the next batches' compute while at
most `depth` finished units wait in memory. Units own whole chunks, so several threads may write
a Zarr store at once (zstd compression releases the GIL): on CUDA one thread cannot compress
features as fast as the GPU makes them."""
from __future__ import annotations

import queue
import threading
import time

from ..cache.schema import CacheError
from ..cache.store import Store
from ..cache.writer import UnitRows, write_unit
from ..errors import os_reason


class UnitWriter:
    """Write finished units in the background; a write error is raised in the producer."""

    def __init__(self, store: Store, split: str, unit_rows: int, errors_file: str | None, depth: int = 2,
                 threads: int = 1):
        self.store, self.split, self.unit_rows = store, split, unit_rows
        self.errors_file = errors_file        # None: failures are only collected in `failures`
        self.failures: list[tuple[str, str, str]] = []
        self.seconds = 0.0                    # summed over the threads
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._lock = threading.Lock()         # failures, the errors file, seconds
        self._threads = [threading.Thread(target=self._drain, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "UnitWriter":
        for thread in self._threads:
            thread.start()
        return self

    def put(self, unit: int, rows: UnitRows) -> None:
        """Queue one finished unit (blocks while `depth` units are waiting)."""
        self._raise_if_failed()
        self._queue.put((unit, rows))

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            unit, rows = item
            started = time.perf_counter()
            try:
                write_unit(self.store, self.split, unit, self.unit_rows, rows)
                self._record_failures(rows)
            except OSError as err:
                self._error = CacheError(f"{self.store.path}: cannot write unit {unit} of {self.split} "
                                         f"({os_reason(err)}); fix it and re-run the same command "
                                         "to resume")
            except BaseException as err:
                self._error = err
            with self._lock:
                self.seconds += time.perf_counter() - started

    def _record_failures(self, rows: UnitRows) -> None:
        failures = [(self.split, image, reason) for image, reason in rows.failures]
        with self._lock:
            self.failures.extend(failures)
            if failures and self.errors_file:
                append_errors(self.errors_file, failures)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def __exit__(self, *exc) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        if exc[0] is None:
            self._raise_if_failed()


def append_errors(path: str, failures: list[tuple[str, str, str]]) -> None:
    """Append (split, image id, reason) lines to the errors TSV."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(f"{split}\t{image}\t{reason}\n" for split, image, reason in failures)
