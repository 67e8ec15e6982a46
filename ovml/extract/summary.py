"""What one `ovml extract` reports: the counts, the time per phase, the steady-state rate apart
from the fixed start-up, and the one-line notes (a fallback, a setting ignored)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..progress import notice


@dataclass
class PhaseTimes:
    """Seconds spent per phase, summed over the run (decode is summed over worker processes)."""

    decode: float = 0.0
    forward: float = 0.0
    write: float = 0.0

    def add(self, other: "PhaseTimes") -> None:
        self.decode += other.decode
        self.forward += other.forward
        self.write += other.write


@dataclass
class ExtractSummary:
    """What one `ovml extract` did."""

    out: str
    images: int = 0                      # images processed in this run
    failures: int = 0                    # of those, rows written with ok = false
    seconds: float = 0.0
    bytes_on_disk: int = 0
    resumed: bool = False
    units_skipped: int = 0
    phases: PhaseTimes = field(default_factory=PhaseTimes)
    steady: "SteadyRate" = field(default_factory=lambda: SteadyRate(1))  # summed over splits
    errors_file: str | None = None
    notes: list[str] = field(default_factory=list)   # one line each: a fallback, a setting ignored

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def fixed_seconds(self) -> float:
        """What the run took beyond its images at the steady rate: model load, text embeddings,
        store layout, the decode workers' start and first round, the last writes, `complete`."""
        rate = self.steady.images_per_second
        return max(0.0, self.seconds - self.images / rate) if rate else self.seconds

    def note(self, message: str | None, show: bool) -> None:
        """Record a one-line note once (and print it to stderr now when `show`)."""
        if message and message not in self.notes:
            self.notes.append(message)
            notice(message, show)

    def lines(self) -> list[str]:
        """The human summary printed at the end of a run."""
        first = (f"{self.out}: {self.images} images ({self.failures} unreadable) in {self.seconds:.1f} s, "
                 f"{self.images_per_second:.1f} images/s, {self.bytes_on_disk / 1e6:.1f} MB on disk")
        if self.resumed:
            first += f"; resumed, {self.units_skipped} finished units skipped"
        phases = (f"phases: decode {self.phases.decode:.1f} s (summed over workers), "
                  f"forward {self.phases.forward:.1f} s, write {self.phases.write:.1f} s")
        if self.steady.images:
            phases += (f"; steady state {self.steady.images_per_second:.1f} images/s after "
                       f"{self.fixed_seconds:.1f} s of fixed cost (start-up, loader fill, last writes)")
        lines = [first, phases] + self.notes
        if self.errors_file:
            lines.append(f"unreadable images listed in {self.errors_file}")
        return lines


class SteadyRate:
    """Images per second once a loader runs full: the batches after its first `skip` (the
    workers' first round, decoded while they started up) over the time since that round."""

    def __init__(self, skip: int):
        self.skip, self.batches, self.images, self.seconds = skip, 0, 0, 0.0
        self._last = 0.0

    def mark(self, images: int, now: float | None = None) -> None:
        """A batch of `images` was handed on at `now` (default: the current perf_counter)."""
        now = time.perf_counter() if now is None else now
        self.batches += 1
        if self.batches > self.skip:
            self.images += images
            self.seconds += now - self._last
        self._last = now

    def add(self, other: "SteadyRate") -> None:
        self.images += other.images
        self.seconds += other.seconds

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0
