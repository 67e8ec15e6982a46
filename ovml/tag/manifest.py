"""The resume manifest of a tag run: which units are done, under the settings that made them.

`<out>/.ovml-tag/state.json` holds the run's fingerprint (inputs, vocabulary, rule, formats,
model...) and the finished units; it is rewritten whole through a temporary file and a rename
after each unit, so a kill leaves the previous version. A rerun of the same command skips the
finished units; a rerun with other settings is refused rather than mixing two runs' outputs.
"""
from __future__ import annotations

import hashlib
import json
import os

from ..errors import UsageError
from ..files import write_json

STATE_FOLDER = ".ovml-tag"


def digest(values) -> str:
    """sha256 (first 16 hex digits) of a JSON-able value."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class Manifest:
    """Finished units of the run described by `fingerprint`."""

    def __init__(self, out: str, fingerprint: dict, units: int):
        self.path = os.path.join(out, STATE_FOLDER, "state.json")
        self.fingerprint, self.units = fingerprint, units
        self.done: dict[int, dict] = {}        # unit -> its counts (images, failures, skipped)
        self.finished = False
        if os.path.exists(self.path):
            self._resume(out)

    def _resume(self, out: str) -> None:
        with open(self.path, encoding="utf-8") as handle:
            state = json.load(handle)
        old = state.get("fingerprint", {})
        keys = set(old) | set(self.fingerprint)
        changed = sorted(key for key in keys if old.get(key) != self.fingerprint.get(key))
        if changed:
            raise UsageError(f"{out}: holds a tag run made with other {', '.join(changed)}; rerun that command "
                             "to finish it, or choose another --out")
        self.done = {int(unit): counts for unit, counts in state.get("done", {}).items()}
        self.finished = bool(state.get("finished"))

    @property
    def pending(self) -> list[int]:
        return [unit for unit in range(self.units) if unit not in self.done]

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        done = {str(unit): self.done[unit] for unit in sorted(self.done)}
        write_json(self.path, {"fingerprint": self.fingerprint, "units": self.units, "done": done,
                               "finished": self.finished}, sort_keys=True)

    def mark(self, unit: int, counts: dict) -> None:
        self.done[unit] = counts
        self.save()

    def totals(self) -> dict:
        """Counts summed over the finished units."""
        totals: dict[str, int] = {}
        for counts in self.done.values():
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def finish(self) -> None:
        self.finished = True
        self.save()
