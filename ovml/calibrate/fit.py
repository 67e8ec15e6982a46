"""Fitting calibrations: a run's head on its validation images, CLIP-ML on a cache's seen labels,
and the score statistics of new labels over the images at hand.

A run's validation images (held out of training, annotated with every seen label of the cache)
calibrate the labels the head trained on, one Platt map each, drawn towards the shared map; the
shared map is fitted on the run's pseudo-unseen labels (`train-head --pseudo-unseen`), labels the
head never trained on as a new label is, else on its trained labels (noted in the record).
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable

import numpy as np
import torch

from ..cache.batches import BatchStream, RowSelection, batch_tensors, cache_pool, validation_rows
from ..cache.reader import CacheReader
from ..config import TrainConfig
from ..errors import UsageError
from ..evaluation.scoring import clip_ml_scores, head_parts
from ..lock import LockError, folder_lock
from ..metrics.calibration import fit_platt, fit_shared_map, label_statistics, sigmoid, standardise
from ..train.run_folder import RunFolder
from ..train.saved_head import TrainedHead, load_trained_head
from ..train.trainer import TrainResult, train_head
from .record import Calibration, read_calibrations, scorer_key, write_calibration

REFERENCE_ROWS = 2048     # images whose scores standardise new labels (a cache's first usable rows)
PRIOR_STRENGTH = 32.0     # pull of the shared map on a label's own Platt map (in log-loss units; E6 measured 0.5-32)

Score = Callable[[torch.Tensor, torch.Tensor], np.ndarray]   # (tokens, global) -> (n, L) scores


def head_scorer(head: TrainedHead | None, alpha: float, text: np.ndarray, device: torch.device) -> Score:
    """(tokens, global) -> (n, L) scores of `text` (L, D): the head at `alpha`, or CLIP-ML."""
    text_tensor = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32)).to(device)

    def score(tokens, global_embedding):
        if head is None:
            return clip_ml_scores(global_embedding.float(), text_tensor)
        return head_parts(head.module, tokens.float(), global_embedding.float(), text_tensor).scores(alpha)
    return score


@torch.no_grad()
def score_rows(reader: CacheReader, selection: RowSelection, score: Score, columns: np.ndarray | None,
               device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, L) scores of the selected rows and, with `columns`, their (n, len(columns)) ±1/0 labels."""
    stream = BatchStream(reader, selection, 256, prefetch=1)
    scores, labels = [], []
    for batch in stream.epoch(seed=0, shuffle=False):
        tokens, global_embedding = batch_tensors(batch, device)
        scores.append(np.asarray(score(tokens, global_embedding), dtype=np.float64))
        if columns is not None:
            labels.append(batch["labels"][:, columns])
    return np.concatenate(scores), (np.concatenate(labels) if columns is not None else None)


def first_rows(reader: CacheReader, split: str, limit: int = REFERENCE_ROWS) -> RowSelection:
    """Up to `limit` usable rows of `split`, from its first units."""
    usable = reader.usable_rows(split).copy()
    usable[np.flatnonzero(usable)[limit:]] = False
    return RowSelection.from_mask(split, reader.unit_rows(split), usable)


def fit_labels(scores: np.ndarray, labels: np.ndarray, names: list[str], shared: tuple[float, float],
               source: str, reference: np.ndarray | None = None) -> dict[str, dict]:
    """Own maps of `names` from scores (n, L) and ±1 labels (n, L) of the same images, drawn to
    `shared`; standardised over the (m, L) scores of `reference` images (default: these images)."""
    reference = scores if reference is None else reference
    mean, spread = label_statistics(reference)
    slope, intercept = fit_platt(standardise(scores, mean, spread), labels, prior=shared, strength=PRIOR_STRENGTH)
    highest = sigmoid(slope * standardise(reference, mean, spread).max(axis=0) + intercept)
    return {name: {"mean": float(mean[j]), "spread": float(spread[j]), "slope": float(slope[j]),
                   "intercept": float(intercept[j]), "highest": float(highest[j]), "source": source}
            for j, name in enumerate(names)}


def fit_run(run: str, alpha: float = 0.0, device: str = "cpu") -> Calibration:
    """A run's calibration at `alpha`, fitted on its validation images (see the module docstring)."""
    config = RunFolder(run).read_config()
    validation = config.get("validation") or {}
    if not validation.get("units"):
        raise UsageError(f"{run}: the run kept no validation images (train with --val-fraction > 0); "
                         "calibrate it with `ovml calibrate --annotations`")
    cache = config["cache"]["path"]
    if not os.path.exists(cache):
        raise UsageError(f"{run}: its training cache {cache} is gone; calibrate it with `ovml calibrate --annotations`")
    torch_device = torch.device(device)
    with CacheReader(cache) as reader:
        head = load_trained_head(run, cache_pool(reader, torch_device), reader.num_heads, torch_device)
        selection = validation_rows(reader, validation)
        seen = np.flatnonzero(reader.seen)
        scores, labels = score_rows(reader, selection, head_scorer(head, alpha, reader.text[seen], torch_device),
                                    seen, torch_device)
        names = [reader.names[c] for c in seen]
    held = np.isin(seen, np.array(config.get("pseudo_unseen_columns") or [], dtype=int))
    if held.any():
        shared_on, shared_from = held, f"{int(held.sum())} pseudo-unseen labels on {len(scores)} validation images"
    else:
        shared_on, shared_from = ~held, (f"{len(seen)} trained labels on {len(scores)} validation images (the run "
                                         "held none out: --pseudo-unseen F fits it on labels the head never saw)")
    mean, spread = label_statistics(scores[:, shared_on])
    shared = fit_shared_map(standardise(scores[:, shared_on], mean, spread), labels[:, shared_on])
    trained = ~held
    fitted = fit_labels(scores[:, trained], labels[:, trained], [n for n, t in zip(names, trained) if t], shared,
                        "validation images")
    return Calibration(scorer_key(run, alpha), shared, shared_from, fitted)


def fit_clip_ml(reader: CacheReader, device: str = "cpu", split: str | None = None) -> Calibration:
    """CLIP-ML's calibration from a cache's seen labels on up to REFERENCE_ROWS rows of its training split
    (CLIP-ML trains on nothing, so every seen label stands for a new one)."""
    split = split or ("train" if "train" in reader.splits else reader.splits[0])
    seen = np.flatnonzero(reader.seen)
    if len(seen) == 0:
        raise UsageError(f"{reader.path}: no annotated labels to calibrate CLIP-ML on")
    torch_device = torch.device(device)
    selection = first_rows(reader, split)
    scores, labels = score_rows(reader, selection, head_scorer(None, 0.0, reader.text[seen], torch_device), seen,
                                torch_device)
    mean, spread = label_statistics(scores)
    shared = fit_shared_map(standardise(scores, mean, spread), labels)
    return Calibration(scorer_key(None, None), shared, f"{len(seen)} labels on {len(scores)} images of "
                       f"{os.path.basename(reader.path)}:{split}", {})


def run_calibration(run: str, alpha: float = 0.0, device: str = "cpu") -> Calibration:
    """The run's stored calibration at `alpha`, fitted now when absent (runs made before it) and
    stored in the run when its folder can be written and no writer holds it (a reader such as
    `tag` or `predict` never waits for, nor fails on, a run it cannot write: it uses the fit)."""
    key = scorer_key(run, alpha)
    stored = read_calibrations(run)
    if key not in stored:
        stored[key] = fit_run(run, alpha, device)
        with contextlib.suppress(LockError, OSError), folder_lock(run):
            write_calibration(run, stored[key])
    return stored[key]


def train_calibrated(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """`ovml train-head` and `ovml.train_head`: train, then fit the run's calibration on its
    validation images and store it (calibration.json), so that `tag --threshold auto` finds it.
    The trainer sits a layer below calibration, so the two steps are joined here."""
    result = train_head(config, resume=resume, overwrite=overwrite)
    if config.val_fraction > 0:
        run_calibration(result.out, 0.0, config.device)
    return result
