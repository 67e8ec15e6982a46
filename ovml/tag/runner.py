"""`ovml tag`: score every image of folders or of a cache against a vocabulary, decide which
labels are present, and write tables and sidecars, one resumable unit of images at a time.

Each unit's outputs are complete files renamed into place, then the unit is marked done in the
manifest; a rerun of the same command skips done units and redoes any other whole, so its outputs
equal an uninterrupted run's. When every unit is done the JSON Lines and CSV parts are joined,
errors.tsv and tag.json written, and the run marked finished.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from ..cache.reader import CacheReader
from ..cache.writer import cache_writer_lock
from ..calibrate.attach import attach
from ..config import TagConfig
from ..extract.summary import SteadyRate
from ..files import write_json, write_text
from ..lock import folder_lock
from ..progress import progress
from .distributed import run_distributed
from .engine import errors_part, open_engine, plan_text, tag_units
from .manifest import STATE_FOLDER, Manifest
from .plan import TagPlan, plan_tag, unwritable_out
from .tables import TableParts


@dataclass
class TagSummary:
    """What one `ovml tag` did."""

    out: str
    images: int = 0                      # images tagged in this run
    failures: int = 0                    # unreadable images in this run
    skipped: int = 0                     # cache rows that were not ok
    units_skipped: int = 0               # units a previous run had finished
    seconds: float = 0.0
    sidecars: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    errors_file: str | None = None
    notes: list[str] = field(default_factory=list)
    steady: SteadyRate | None = None     # images/s once the decode workers run full (image files)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def add(self, counts: dict, sidecars: Counter) -> None:
        self.images += counts["images"]
        self.failures += counts["failures"]
        self.skipped += counts["skipped"]
        self.sidecars.update(sidecars)

    def lines(self) -> list[str]:
        first = (f"{self.out}: {self.images} images tagged in {self.seconds:.1f} s "
                 f"({self.images_per_second:.1f} images/s)")
        if self.failures:
            first += f", {self.failures} unreadable"
        if self.skipped:
            first += f", {self.skipped} cache rows not ok skipped"
        if self.units_skipped:
            first += f"; resumed, {self.units_skipped} finished units skipped"
        lines = [first]
        if self.files:
            lines.append("tables: " + ", ".join(self.files))
        if self.sidecars:
            lines.append("sidecars: " + ", ".join(f"{key} {count}" for key, count in sorted(self.sidecars.items())))
        if self.errors_file:
            lines.append(f"unreadable images listed in {self.errors_file}")
        return lines + self.notes


def finish(plan: TagPlan, manifest: Manifest, summary: TagSummary) -> None:
    """Join the parts, write errors.tsv and tag.json, mark the run finished."""
    out = plan.config.out
    units = list(range(len(plan.units)))
    tables = TableParts(out, list(plan.config.formats), plan.config.long, plan.metadata())
    summary.files = tables.join(units)
    errors = os.path.join(out, "errors.tsv")
    lines = []
    for unit in units:
        with open(errors_part(out, unit), encoding="utf-8") as handle:
            lines += handle.readlines()
    if lines:
        write_text(errors, "".join(lines))
        summary.errors_file = errors
    elif os.path.exists(errors):
        os.remove(errors)
    write_json(os.path.join(out, "tag.json"), plan.metadata() | {
        "vocabulary": plan.names, "always_first": plan.vocabulary.always_first, "formats": list(plan.config.formats),
        "totals": manifest.totals(), "tables": [os.path.relpath(path, out) for path in summary.files],
        "notes": plan.notes}, sort_keys=True)
    manifest.finish()
    shutil.rmtree(os.path.join(out, STATE_FOLDER, "parts"), ignore_errors=True)


def calibrate_rule(plan: TagPlan, reader: CacheReader | None) -> None:
    """Give a calibrated rule its label maps (once the label text is known), noting what it says."""
    config = plan.config
    plan.notes += attach(plan.rule, plan.names, plan.text, config.head, config.alpha, reader, config.device,
                         config.calibration)


def run_tag(config: TagConfig) -> TagSummary:
    """Tag every pending unit (in this process, or on Dask with `config.dask`) and finish the run,
    holding the output folder's writer lock (and `--save-cache`'s store's) throughout."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(folder_lock(config.out, config.lock))
        except OSError as err:
            raise unwritable_out(config.out, err) from err
        if config.save_cache:
            held.enter_context(cache_writer_lock(config.save_cache, config.lock))
        return tag_pending(config)


def tag_pending(config: TagConfig) -> TagSummary:
    """`run_tag`'s work, once the locks are held."""
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    summary = TagSummary(config.out)
    reader = CacheReader(config.cache) if config.cache else None
    try:
        plan = plan_tag(config, reader)
        manifest = Manifest(config.out, plan.fingerprint, len(plan.units))
        summary.units_skipped = len(manifest.done)
        if manifest.finished:
            summary.notes.append(f"{config.out}: this run had finished; nothing to do")
            return summary
        manifest.save()
        pending = manifest.pending
        if config.dask:
            plan_text(plan, reader)
            calibrate_rule(plan, reader)
            run_distributed(plan, manifest, summary, pending)
        else:
            engine = open_engine(plan, reader)
            calibrate_rule(plan, reader)
            bar = progress(total=sum(plan.units[u].stop - plan.units[u].start for u in pending), desc="tag",
                           unit="img", enabled=config.progress, leave=True)

            def on_unit(unit, counts, sidecars):
                manifest.mark(unit.index, counts)
                summary.add(counts, sidecars)
                bar.update(unit.stop - unit.start)

            try:
                tag_units(plan, engine, pending, on_unit)
                if engine.features is not None:
                    engine.features.finish()
                    summary.notes.append(f"features kept in {config.save_cache}: tag these images again with "
                                         f"`ovml tag --cache {config.save_cache} ...`")
            finally:
                if engine.features is not None:
                    engine.features.close()
            bar.close()
            summary.steady = getattr(engine.source, "steady", None)
            summary.notes += [note for note in [getattr(engine.source, "note", None)] if note]
        finish(plan, manifest, summary)
        summary.notes = plan.notes + summary.notes
    finally:
        if reader is not None:
            reader.close()
        summary.seconds = time.perf_counter() - started
    return summary
