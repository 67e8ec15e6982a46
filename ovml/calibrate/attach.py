"""Giving a calibrated rule (`--threshold auto`, `--precision P`) the label maps of a vocabulary.

Where each part comes from: labels with their own map (a run's trained labels, labels fitted by
`ovml calibrate`) from the run's calibration.json, or from a calibration file given beside it;
every other label through the shared map, standardised over the images at hand: the first rows
of the cache being tagged, else the run's validation images (for image files, a single image
included), scored for those labels here.
CLIP-ML without a head is calibrated on the seen labels of the cache being tagged.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from ..cache.batches import cache_pool, validation_rows
from ..cache.reader import CacheReader
from ..errors import UsageError
from ..tag.rules import AllOf, Calibrated, Rule
from ..train.run_folder import RunFolder
from ..train.saved_head import TrainedHead, load_trained_head
from .fit import first_rows, fit_clip_ml, head_scorer, run_calibration, score_rows
from .record import CALIBRATION_FILE, Calibration, LabelMaps, read_calibrations, reference_statistics, scorer_key


def calibrated_part(rule: Rule) -> Calibrated | None:
    """The rule's calibrated part, if it has one."""
    if isinstance(rule, Calibrated):
        return rule
    if isinstance(rule, AllOf):
        return next((part for part in rule.rules if isinstance(part, Calibrated)), None)
    return None


def can_calibrate(head: str | None, cache: str | None, calibration_file: str | None = None) -> str | None:
    """None when a calibration can be made for a head (or CLIP-ML) over these images, else why not."""
    if head is None:
        return None if cache or calibration_file else ("CLIP-ML without a head is calibrated on a cache's labels "
                                                       "(give --cache, --head or --calibration FILE)")
    config = RunFolder(head).read_config()
    if (config.get("validation") or {}).get("units") and os.path.exists(config["cache"]["path"]):
        return None
    if os.path.exists(os.path.join(head, CALIBRATION_FILE)):
        return None
    return f"{head}: no validation images and no calibration.json (run `ovml calibrate --head {head} ...`)"


def reference_rows(head_run: str | None, reader: CacheReader | None) -> tuple[str, str | None]:
    """(cache path, split or None for the run's validation units) whose images standardise new labels."""
    if reader is not None:
        return reader.path, reader.splits[0]
    return RunFolder(head_run).read_config()["cache"]["path"], None


def scorer_calibration(head_run: str | None, alpha: float, reader: CacheReader | None, device: str,
                       calibration_file: str | None) -> Calibration:
    """The scorer's calibration: the run's (CLIP-ML's fitted on the cache's seen labels), with the
    labels' own maps of `calibration_file` (`ovml calibrate --out`) over it, label by label."""
    key = scorer_key(head_run, alpha)
    given = None
    if calibration_file:
        records = read_calibrations(calibration_file)
        if key not in records:
            raise UsageError(f"{calibration_file}: no calibration of {key} (it has {', '.join(records) or 'none'}); "
                             "run `ovml calibrate` with the same --head and --alpha")
        given = records[key]
    if head_run:
        base = run_calibration(head_run, alpha, device)
    elif reader is not None:
        base = fit_clip_ml(reader, device)
    elif given is not None:
        return given
    else:
        raise UsageError("a calibrated decision for CLIP-ML needs a cache's labels (--cache) or a calibration "
                         "file (`ovml calibrate --out FILE`, then --calibration FILE)")
    return base if given is None else dataclasses.replace(base, labels=base.labels | given.labels)


def label_maps(names: list[str], text: np.ndarray, head_run: str | None, alpha: float,
               reader: CacheReader | None, device: str = "cpu", calibration_file: str | None = None) -> LabelMaps:
    """The maps of `names` (text (L, D)) for the head of `head_run` at `alpha` (CLIP-ML without one),
    with each label's `auto-f1` level chosen over the same reference images."""
    torch_device = torch.device(device)
    calibration = scorer_calibration(head_run, alpha, reader, device, calibration_file)
    if head_run is None and reader is None:
        return calibration.maps(names, None)       # nothing to standardise new labels on: each needs its own map
    path, split = reference_rows(head_run, reader)
    opened = reader if reader is not None and reader.path == path else CacheReader(path)
    try:
        head: TrainedHead | None = (load_trained_head(head_run, cache_pool(opened, torch_device), opened.num_heads,
                                                      torch_device) if head_run else None)
        selection = (validation_rows(opened, RunFolder(head_run).read_config()["validation"]) if split is None
                     else first_rows(opened, split))
        reference, _ = score_rows(opened, selection, head_scorer(head, alpha, text, torch_device), None,
                                  torch_device)                                                  # (m, L)
        return calibration.maps(names, reference_statistics(reference)).choose_f1_levels(reference)
    finally:
        if opened is not reader:
            opened.close()


def attach(rule: Rule, names: list[str], text: np.ndarray, head_run: str | None, alpha: float,
           reader: CacheReader | None, device: str = "cpu", calibration_file: str | None = None) -> list[str]:
    """Fill the rule's calibrated part with maps (nothing for other rules); notes on labels that cannot
    reach the precision asked."""
    calibrated = calibrated_part(rule)
    if calibrated is None:
        return []
    calibrated.maps = label_maps(names, text, head_run, alpha, reader, device, calibration_file)
    unreachable = calibrated.unreachable(names) if calibrated.word == "precision" else []
    if not unreachable:
        return []
    return [f"--precision {calibrated.level:g}: {len(unreachable)} label(s) cannot reach it on the reference images "
            f"(never tagged): {', '.join(unreachable[:20])}{' ...' if len(unreachable) > 20 else ''}"]
