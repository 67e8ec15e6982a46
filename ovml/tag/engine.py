"""The mapper of `ovml tag`: what scores units of images in one process (the coordinator, or a
Dask worker) and writes each unit's sidecars, table parts and errors part."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import torch

from ..cache.batches import cache_pool, pool_tensors
from ..cache.reader import CacheReader
from ..extract.backbone import load_backbone
from ..extract.text import embed_labels
from ..files import write_text
from ..train.saved_head import load_trained_head
from .feature_cache import FeatureCache
from .label_text import cache_label_text, load_text_model
from .manifest import STATE_FOLDER
from .plan import TagPlan
from .sidecars import write_txt, xmp_path
from .sources import CacheSource, FolderSource, Scorer, UnitScores
from .tables import TableParts, TaggedUnit, present_order
from .xmp import ExifTool


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
        present, probabilities = rule.decisions(scored.scores)
        tagged = TaggedUnit(scored.unit.index, scored.keys, self.plan.names, scored.scores, present,
                            probabilities, rule.describe(),
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
        backbone = load_backbone(plan.model, device, config.download_root, config.engine, config.tower_precision)
        plan.notes += [backbone.note] if backbone.note else []
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
