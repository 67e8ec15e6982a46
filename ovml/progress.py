"""Progress that suits where the output goes.

On a terminal, a tqdm bar. Anywhere else (CI, `nohup`, Slurm and Dask worker logs) carriage-return
updates would pile up on one line of the log, so a phase prints plain lines instead: one every
`interval` seconds while it runs and one when it ends, with the same figures (items, rate, time
left). `OVML_PROGRESS=bar|log|off` forces a style.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, TextIO

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two lines of a long phase


def style(stream: TextIO) -> str:
    """'bar', 'log' or 'off': `$OVML_PROGRESS` if set, else 'bar' on a terminal, 'log' elsewhere."""
    forced = os.environ.get("OVML_PROGRESS", "").strip().lower()
    if forced in ("bar", "log", "off"):
        return forced
    return "bar" if getattr(stream, "isatty", lambda: False)() else "log"


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = False, stream: TextIO | None = None):
    """A tqdm bar or a `LogProgress` (same calls: iteration, update, set_postfix, close)."""
    stream = stream or sys.stderr
    chosen = style(stream) if enabled else "off"
    if chosen == "bar":
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, stream=stream, silent=chosen == "off")


def notice(message: str | None, enabled: bool = True, stream: TextIO | None = None) -> None:
    """One plain line to stderr (a fallback taken, an option ignored), unless there is none, it
    is disabled, or `OVML_PROGRESS=off`."""
    if message and enabled and style(stream or sys.stderr) != "off":
        print(message, file=stream or sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class LogProgress:
    """Plain-line progress for logs: a line every `interval` seconds and one at the end."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", stream: TextIO | None = None, silent: bool = False,
                 interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n = total, 0
        self.stream, self.silent, self.interval, self.clock = stream or sys.stderr, silent, interval, clock
        self.started = self.last_line = clock()
        self.postfix = ""
        self.closed = False

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._write(self.line(now, final=False))

    def line(self, now: float, final: bool) -> str:
        """'desc: n/total unit (p%), r unit/s, m:ss left' while running; '... in m:ss' at the end."""
        elapsed = now - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total and not final:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if final:
            parts.append(f"in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        if not self.silent:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self.line(self.clock(), final=True))
