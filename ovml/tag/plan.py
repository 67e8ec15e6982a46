"""Everything a tag run decides before any image is read, so every refusal comes first.

In order: formats, the output folder (written to once, to prove it can be), the head and the CLIP
it was trained on, the inputs (image files, or a cache and its splits), the vocabulary (given,
else the head's, else the cache's) after --only/--exclude, the decision rule, sidecar names, and
the fingerprint a rerun must match to resume. The plan is plain data, sent whole to Dask workers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..cache.reader import CacheReader
from ..cache.schema import CacheError
from ..config import TagConfig
from ..errors import UsageError, os_reason
from ..extract.text import load_prompts
from ..calibrate.attach import can_calibrate
from ..predict.predictor import check_head_backbone, expand_images
from ..train.run_folder import RunFolder
from .feature_cache import unwritable
from .manifest import STATE_FOLDER, digest
from .rules import DEFAULT_TOP_K, Rule, build_rule
from .sidecars import SIDECAR_MODES, check_sidecar_paths, txt_path, xmp_path
from .sources import Unit, cache_units, image_units
from .tables import TABLE_FORMATS
from .vocabulary import Vocabulary, choose_vocabulary, given_names, name_key
from .xmp import exiftool_missing

SIDECAR_FORMATS = ("txt", "xmp")
FORMATS = TABLE_FORMATS + SIDECAR_FORMATS


@dataclass
class TagPlan:
    """A tag run, decided: what is scored, with which labels and rule, into which files."""

    config: TagConfig
    vocabulary: Vocabulary
    rule: Rule
    units: list[Unit]
    images: list[str]                  # the image files (empty for a cache)
    model: str                         # CLIP weights: the image tower for files, the text tower's for new names
    templates: list[str]               # prompt templates for names embedded here
    trained_on: dict                   # the head's cache attributes ({} without a head)
    fingerprint: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    text: np.ndarray | None = None     # (L, D), filled once the checks have passed
    folder: str = field(default_factory=os.getcwd)   # where relative image paths are read from

    @property
    def names(self) -> list[str]:
        return self.vocabulary.names

    @property
    def first(self) -> dict[int, int]:
        """column -> --always-first rank, for the names that are in the vocabulary."""
        ranks = self.vocabulary.order()
        return {j: ranks[name_key(name)] for j, name in enumerate(self.names) if name_key(name) in ranks}

    def metadata(self) -> dict:
        """What every output records about the run (tag.json, Parquet metadata)."""
        config = self.config
        source = {"cache": os.path.abspath(config.cache), "splits": sorted({u.split for u in self.units})} \
            if config.cache else {"images": len(self.images)}
        return {"ovml_tag": 1, "rule": self.rule.describe(), "head": config.head and os.path.abspath(config.head),
                "alpha": config.alpha if config.head else None, "model": self.model, "labels": len(self.names),
                "labels_sha256": digest(self.names), "prompts": self.templates, "long": config.long, **source}


def unwritable_out(out: str, err: OSError) -> UsageError:
    """The one-line error of an output folder that cannot be made or written."""
    return UsageError(f"{out}: cannot write the output folder ({os_reason(err)})")


def check_out(out: str) -> None:
    """Create the output folder and prove it can be written, or a one-line error."""
    try:
        os.makedirs(os.path.join(out, STATE_FOLDER), exist_ok=True)
        probe = os.path.join(out, STATE_FOLDER, f"probe.{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise unwritable_out(out, err) from err


def check_formats(config: TagConfig) -> None:
    unknown = [fmt for fmt in config.formats if fmt not in FORMATS]
    if unknown or not config.formats:
        raise UsageError(f"--format: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(FORMATS)})")
    if config.sidecars not in SIDECAR_MODES:
        raise UsageError(f"sidecars must be one of {', '.join(SIDECAR_MODES)}, not {config.sidecars!r}")
    if config.xmp_name not in ("full", "stem"):
        raise UsageError(f"xmp_name must be full (photo.jpg.xmp) or stem (photo.xmp), not {config.xmp_name!r}")
    if "xmp" in config.formats and exiftool_missing():
        raise UsageError(exiftool_missing())
    if bool(config.inputs) == bool(config.cache):
        raise UsageError("give image files or folders, or --cache PATH (not both)")
    if not 0 <= config.alpha <= 1:
        raise UsageError(f"--alpha must lie in [0, 1], got {config.alpha}")
    if config.unit_images < 1 or config.batch_size < 1:
        raise UsageError("--batch-size and the unit size must be at least 1")
    if config.save_cache and (config.cache or config.dask):
        raise UsageError("--save-cache keeps the features of image files tagged in one process "
                         "(not with --cache or --dask)")
    if config.save_cache and unwritable(config.save_cache):
        raise UsageError(unwritable(config.save_cache))


def head_cache(config: TagConfig) -> dict:
    """The `cache` block of the head's config.json ({} without a head)."""
    return RunFolder(config.head).read_config().get("cache", {}) if config.head else {}


def cache_names(path: str | None, reader: CacheReader | None) -> list[str]:
    """The vocabulary of the cache at `path` ([] when there is none or it cannot be read); the
    open `reader`'s when it is that cache."""
    if not path:
        return []
    if reader is not None and os.path.abspath(path) == os.path.abspath(reader.path):
        return list(reader.names)
    try:
        with CacheReader(path, allow_partial=True) as reader:
            return list(reader.names)
    except (CacheError, OSError):
        return []


def plan_images(config: TagConfig) -> list[str]:
    """The image files: files as given, folders expanded (recursive, the suffixes `predict` knows)."""
    missing = [item for item in config.inputs if not os.path.exists(item)]
    if missing:
        raise UsageError(f"{missing[0]}: no such file or folder")
    return list(dict.fromkeys(expand_images(list(config.inputs))))


def file_digest(path: str) -> str:
    """A short digest of a text file's content (a rerun with a changed calibration file starts over)."""
    with open(path, encoding="utf-8") as handle:
        return digest(handle.read())


def plan_tag(config: TagConfig, reader: CacheReader | None = None) -> TagPlan:
    """Check everything and decide the run (no model is loaded, no image read)."""
    check_formats(config)
    check_out(config.out)
    trained_on = head_cache(config)
    if config.cache:
        if reader is None:
            raise UsageError("a cache run needs its open reader")
        expected = trained_on.get("backbone", {}).get("weights_sha256")
        if expected and expected != reader.backbone.get("weights_sha256"):
            raise UsageError(f"{config.head}: the head was trained on features of other CLIP weights "
                             f"({trained_on['backbone'].get('name')}) than {reader.path} holds "
                             f"({reader.backbone.get('name')})")
        splits = list(config.splits or reader.splits)
        unknown = [split for split in splits if split not in reader.splits]
        if unknown:
            raise UsageError(f"{reader.path}: no split {', '.join(unknown)} (splits: {', '.join(reader.splits)})")
        units, images = cache_units(reader, splits, config.unit_images), []
        model = config.model or reader.backbone.get("name") or "RN50"
        templates = load_prompts(config.prompts) if config.prompts else (reader.prompts or load_prompts(None))
        inputs = {"cache": reader.fingerprint(), "splits": splits}
    else:
        images = plan_images(config)
        units = image_units(len(images), config.unit_images)
        model = config.model or trained_on.get("backbone", {}).get("name") or "RN50"
        check_head_backbone(trained_on, model, config.download_root)
        templates = load_prompts(config.prompts) if config.prompts or not trained_on.get("prompts") \
            else trained_on["prompts"]
        inputs = {"images": digest(images), "tower": [config.engine, config.tower_precision, config.decode]}
        if "txt" in config.formats:
            check_sidecar_paths(images, lambda image: txt_path(image, config.caption_extension))
        if "xmp" in config.formats:
            check_sidecar_paths(images, lambda image: xmp_path(image, config.xmp_name))
    names, source = given_names(config.labels, config.labels_file)
    if not names:
        names = cache_names(trained_on.get("path"), reader) or (list(reader.names) if reader is not None else [])
        source = "the head's vocabulary" if trained_on.get("path") else "the cache's vocabulary"
        if not names:
            raise UsageError("no vocabulary: give --labels or --labels-file (or --head / --cache, whose "
                             "labels are used)")
    vocabulary = choose_vocabulary(names, source, config.only, config.exclude, config.always_first)
    automatic = config.threshold == "auto" and (config.thresholds_file or config.top_k)    # the default yields
    threshold, notes = (None if automatic else config.threshold), []                       # to a rule asked for
    calibrated = config.precision is not None or threshold in ("auto", "auto-f1")
    why_not = can_calibrate(config.head, config.cache, config.calibration) if calibrated else None
    if why_not and (config.precision is not None or threshold == "auto-f1"):
        raise UsageError(f"{'--precision' if config.precision is not None else '--threshold auto-f1'}: {why_not}")
    if why_not:
        threshold, notes = None, [f"--threshold auto: {why_not}; top-k {config.top_k or DEFAULT_TOP_K} decides instead"]
    rule, rule_notes = build_rule(vocabulary.names, config.top_k, threshold, config.thresholds_file, config.precision)
    notes += rule_notes
    plan = TagPlan(config, vocabulary, rule, units, images, model, list(templates), trained_on,
                   notes=vocabulary.notes + notes)
    plan.fingerprint = inputs | {
        "labels": digest(vocabulary.names), "always_first": vocabulary.always_first, "rule": rule.describe(),
        "formats": sorted(config.formats), "long": config.long, "model": model, "prompts": digest(plan.templates),
        "head": config.head and os.path.abspath(config.head), "alpha": config.alpha, "unit_images": config.unit_images,
        "sidecars": [config.sidecars, config.caption_extension, config.xmp_name, config.hierarchy],
        "save_cache": config.save_cache and os.path.abspath(config.save_cache),
        "calibration": config.calibration and file_digest(config.calibration)}
    return plan
