"""`ovml calibrate`: labels' own maps from a few labelled images, of a cache (here) or image files
(`images.py`).

The annotations file is `add-labels --annotations`'s (`id,labels`, labels joined by `;`): every
listed image is a positive of its labels and a negative of the file's other labels. The labels'
scores are standardised over the cache's first unlabelled rows, as a new label's are when tagged,
and each label's Platt map is fitted drawn towards the run's shared map, so that five images move
the shared map rather than replace it. A label without a positive or without a negative is refused.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..cache.batches import RowSelection, cache_pool
from ..cache.reader import CacheReader
from ..config import CalibrateConfig
from ..errors import UsageError
from ..lock import STORE_LOCK_SUFFIX, folder_lock, writer_lock
from ..tag.label_text import cache_label_text
from ..train.run_folder import RunFolder
from ..train.saved_head import load_trained_head
from .annotated import Annotated, check_both_kinds, labelled_lines, signs
from .fit import first_rows, fit_clip_ml, fit_labels, head_scorer, run_calibration, score_rows
from .images import annotated_images
from .record import read_calibrations, write_calibration


def read_labelled(path: str, reader: CacheReader) -> tuple[list[str], dict[str, np.ndarray]]:
    """(label names in first-seen order, split -> (rows, ±1 labels (rows, names))) of the annotated images."""
    names, lines = labelled_lines(path)
    wanted = {image: set(labels) for _, image, labels in lines}
    found, matched = {}, set()
    for split in reader.splits:
        ids = reader.image_ids(split)
        rows = [i for i, image in enumerate(ids) if image in wanted]
        if rows:
            matched.update(ids[i] for i in rows)
            found[split] = (np.array(rows), np.array([signs(names, wanted[ids[i]]) for i in rows], dtype=np.int8))
    missing = [image for image in wanted if image not in matched]
    if missing:
        raise UsageError(f"{path}: {len(missing)} id(s) not in {reader.path}: {', '.join(missing[:5])}")
    return names, found


def annotated_rows(reader: CacheReader, split: str, rows: np.ndarray) -> RowSelection:
    mask = np.zeros(reader.num_rows(split), dtype=bool)
    mask[rows] = True
    return RowSelection.from_mask(split, reader.unit_rows(split), mask)


def destination_lock(config: CalibrateConfig):
    """The writer's lock on where the maps go: the run folder's, or one beside the `--out` file."""
    if config.out is not None:
        return writer_lock(config.out, config.out + STORE_LOCK_SUFFIX, config.lock)
    return folder_lock(config.head, config.lock)


def calibrate_from_annotations(config: CalibrateConfig) -> tuple[str, list[str]]:
    """Fit the annotated labels' maps and store them in the run (or `out`), holding the
    destination's writer lock throughout; returns (the file, the labels)."""
    if config.head is None and config.out is None:
        raise UsageError("calibrating CLIP-ML (no --head) needs --out FILE to store it in")
    with destination_lock(config):
        return fit_annotated(config)


def fit_annotated(config: CalibrateConfig) -> tuple[str, list[str]]:
    """`calibrate_from_annotations`'s work, once the lock is held."""
    if config.images is not None:
        annotated = annotated_images(config)
    elif config.cache is not None:
        annotated = annotated_cache(config)
    else:
        raise UsageError("give --images DIR (the annotated image files) or --cache PATH (their features, from "
                         "`ovml extract` or `ovml tag --save-cache`)")
    source = f"{len(annotated.labels)} images of {os.path.basename(config.annotations)}" + annotated.note
    base = annotated.base
    base.labels.update(fit_labels(annotated.scores, annotated.labels, annotated.names, base.shared, source,
                                  annotated.reference))
    if config.out is not None and config.head is not None and not os.path.exists(config.out):
        for key, record in read_calibrations(config.head).items():
            if key != base.scorer:
                write_calibration(config.out, record)
    return write_calibration(config.out or config.head, base), annotated.names


def annotated_cache(config: CalibrateConfig) -> Annotated:
    """The annotated images' scores from their features in `config.cache`, standardised over the
    cache's first rows."""
    head, alpha, device = config.head, config.alpha, config.device
    torch_device = torch.device(device)
    with CacheReader(config.cache) as reader:
        names, found = read_labelled(config.annotations, reader)
        labels = np.concatenate([values for _, values in found.values()])
        check_both_kinds(config.annotations, names, labels)
        if head is not None:
            base = run_calibration(head, alpha, device)
            trained = load_trained_head(head, cache_pool(reader, torch_device), reader.num_heads, torch_device)
            templates = RunFolder(head).read_config()["cache"].get("prompts") or reader.prompts
        else:
            base, trained, templates = fit_clip_ml(reader, device), None, reader.prompts
        text, _ = cache_label_text(reader, names, templates, None, device, None, False)
        score = head_scorer(trained, alpha, text, torch_device)
        scores = np.concatenate([score_rows(reader, annotated_rows(reader, split, rows), score, None, torch_device)[0]
                                 for split, (rows, _) in found.items()])
        reference, _ = score_rows(reader, first_rows(reader, reader.splits[0]), score, None, torch_device)
    return Annotated(names, scores, labels, reference, base)
