"""`ovml tag`: score every image of folders or of a cache against a vocabulary, decide which
labels are present, and write tables and sidecars, one resumable unit of images at a time.

Each unit's outputs are complete files renamed into place, then the unit is marked done in the
manifest; a rerun of the same command skips done units and redoes any other whole, so its outputs
equal an uninterrupted run's. When every unit is done the JSON Lines and CSV parts are joined,
errors.tsv and tag.json written, and the run marked finished.
"""
from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from ..cache.batches import cache_pool, pool_tensors
from ..cache.reader import CacheReader
from ..config import TagConfig
from ..extract.backbone import load_backbone
from ..extract.runner import SteadyRate
from ..extract.text import embed_labels
from ..progress import progress
from ..train.saved_head import load_trained_head
from .feature_cache import FeatureCache
from .label_text import cache_label_text, load_text_model
from .manifest import STATE_FOLDER, Manifest, write_json
from .plan import TagPlan, plan_tag
from .sidecars import write_text, write_txt, xmp_path
from .sources import CacheSource, FolderSource, Scorer, UnitScores
from .tables import TableParts, TaggedUnit, present_order
from .xmp import ExifTool


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


class UnitOutputs:
    """Decides one unit's labels and writes its sidecars, table parts and errors part."""

    def __init__(self, plan: TagPlan, features: FeatureCache | None = None):
        config = plan.config
        self.plan, self.config, self.features = plan, config, features
        self.tables = TableParts(config.out, list(config.formats), config.long, plan.metadata())
        self.exiftool = ExifTool() if "xmp" in config.formats else None
        self.first = plan.first

    def write(self, scored: UnitScores) -> tuple[dict, Counter]:
        rule = self.plan.rule
        present = rule.decide(scored.scores)
        tagged = TaggedUnit(scored.unit.index, scored.keys, self.plan.names, scored.scores, present,
                            rule.probabilities(scored.scores), rule.describe(),
                            present_order(scored.scores, present, self.first))
        sidecars = self.write_sidecars(tagged, scored.files)
        self.tables.write(tagged)
        if self.features is not None:
            self.features.write(scored)
        self.write_errors(scored)
        counts = {"images": len(scored.scores), "failures": len(scored.failures), "skipped": scored.skipped}
        return counts, sidecars

    def write_sidecars(self, tagged: TaggedUnit, files: list[str | None]) -> Counter:
        done: Counter = Counter()
        config = self.config
        if not {"txt", "xmp"} & set(config.formats):
            return done
        for row, image in enumerate(files):
            if image is None or not os.path.isfile(image):
                done["no image file"] += 1
                continue
            tags = tagged.tags(row)
            if "txt" in config.formats:
                done["txt " + write_txt(image, tags, config.caption_extension, config.sidecars)] += 1
            if "xmp" in config.formats and tags:
                done["xmp " + self.exiftool.write(xmp_path(image, config.xmp_name), tags, config.hierarchy,
                                                  replace=config.sidecars == "overwrite")] += 1
        return done

    def write_errors(self, scored: UnitScores) -> None:
        path = errors_part(self.config.out, scored.unit.index)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_text(path, "".join(f"{image}\t{reason}\n" for image, reason in scored.failures))

    def close(self) -> None:
        if self.exiftool is not None:
            self.exiftool.close()


def errors_part(out: str, unit: int) -> str:
    return os.path.join(out, STATE_FOLDER, "parts", "errors", f"{unit:06d}.tsv")


@dataclass
class Engine:
    """What scores units in one process: the source of features and the scorer."""

    source: FolderSource | CacheSource
    scorer: Scorer
    features: FeatureCache | None = None    # --save-cache


def open_engine(plan: TagPlan, reader: CacheReader | None, device: str | None = None) -> Engine:
    """Load what scoring needs here (the backbone for image files; nothing but the head for a
    cache) and fill `plan.text` when it is still empty."""
    config = plan.config
    device = torch.device(device or config.device)
    features = None
    if reader is None:
        backbone = load_backbone(plan.model, device, config.download_root)
        pool, heads = (pool_tensors(backbone.pool_weights(), device) if config.head else {}), backbone.num_heads
        source = FolderSource(plan.images, backbone, config.batch_size, config.workers, config.decode,
                              config.strict, plan.folder, keep_features=bool(config.save_cache))
        if plan.text is None:
            plan.text = embed_labels(backbone.model, plan.names, plan.templates, device, progress=config.progress)
        if config.save_cache:
            features = FeatureCache(config.save_cache, backbone, plan.names, plan.text, plan.templates,
                                    plan.images, plan.folder, config.unit_images)
    else:
        pool, heads = (cache_pool(reader, device) if config.head else {}), reader.num_heads
        source = CacheSource(reader, device)
        if plan.text is None:
            plan.text, notes = cache_label_text(reader, plan.names, plan.templates, config.model, str(device),
                                                config.download_root, config.progress)
            plan.notes += notes
    head = load_trained_head(config.head, pool, heads, device) if config.head else None
    return Engine(source, Scorer(plan.text, head, config.alpha, device), features)


def plan_text(plan: TagPlan, reader: CacheReader | None) -> None:
    """Fill `plan.text` without loading the image tower (the Dask coordinator's way)."""
    config = plan.config
    if reader is not None:
        plan.text, notes = cache_label_text(reader, plan.names, plan.templates, config.model, config.device,
                                            config.download_root, config.progress)
        plan.notes += notes
    else:
        network = load_text_model(plan.model, config.device, config.download_root)
        plan.text = embed_labels(network, plan.names, plan.templates, config.device, progress=config.progress)


def tag_units(plan: TagPlan, engine: Engine, units: list[int], on_unit) -> None:
    """Score and write `units`, calling `on_unit(unit, counts, sidecars)` after each is complete."""
    chosen = [plan.units[index] for index in units]
    outputs = UnitOutputs(plan, engine.features)
    try:
        for scored in engine.source.scores(chosen, engine.scorer):
            counts, sidecars = outputs.write(scored)
            on_unit(scored.unit, counts, sidecars)
    finally:
        outputs.close()


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
        "notes": plan.notes})
    manifest.finish()
    shutil.rmtree(os.path.join(out, STATE_FOLDER, "parts"), ignore_errors=True)
    shutil.rmtree(os.path.join(out, STATE_FOLDER, "tmp"), ignore_errors=True)


def run_tag(config: TagConfig) -> TagSummary:
    """Tag every pending unit (in this process, or on Dask with `config.dask`) and finish the run."""
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
            from .distributed import run_distributed
            plan_text(plan, reader)
            run_distributed(plan, manifest, summary, pending)
        else:
            engine = open_engine(plan, reader)
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
