"""`eval --decisions`: how good the `auto` decisions are, beside LESA's ranking metrics.

For CLIP-ML and each head (at alpha 0, the alpha its calibration.json is fitted at), every label of
the cache is scored on the test images, calibrated as `tag --cache` calibrates (new labels
standardised over these images, unlabelled use only), decided at probability 0.5 (`auto`) and at
each label's level of best expected F1 over these images (`auto-f1`, no labels used), and reported
for seen and unseen labels apart: macro-F1 (labels with a positive), micro-F1 and the expected
calibration error (15 equal-width bins over every annotated pair). The score matrix is held whole:
an opt-in report for caches of planted or benchmark size.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..cache.batches import RowSelection, cache_pool
from ..cache.reader import CacheReader
from ..config import EvalConfig
from ..metrics.calibration import ece, f1_scores
from ..train.saved_head import load_trained_head
from .fit import fit_clip_ml, head_scorer, run_calibration, score_rows
from .record import reference_statistics


def decision_rows(config: EvalConfig) -> list[dict]:
    """One entry per scorer and label group: method, run, labels, macro_f1, micro_f1, ece (F1 in percent)."""
    device = torch.device(config.device)
    entries = []
    with CacheReader(config.cache, allow_partial=config.allow_partial) as reader:
        selection = RowSelection.usable(reader, config.image_split)
        columns, names = np.arange(reader.num_labels), list(reader.names)
        scorers = [("clip-ml", None, None)] + [(None, run, load_trained_head(run, cache_pool(reader, device),
                                                                              reader.num_heads, device))
                                               for run in config.heads]
        for method, run, head in scorers:
            scores, labels = score_rows(reader, selection, head_scorer(head, 0.0, reader.text, device), columns, device)
            calibration = run_calibration(run, 0.0, config.device) if run else fit_clip_ml(reader, config.device)
            maps = calibration.maps(names, reference_statistics(scores)).choose_f1_levels(scores)
            probabilities = maps.probabilities(scores)
            for group, chosen in (("unseen", ~reader.seen), ("seen", reader.seen)):
                for rule, level in (("auto", np.full(len(names), 0.5)), ("auto-f1", maps.f1_levels)):
                    if not chosen.any():
                        continue
                    quality = f1_scores(probabilities[:, chosen] >= level[chosen][None], labels[:, chosen])
                    entries.append({"method": method or head.name, "run": run and os.path.abspath(run),
                                    "labels": group, "rule": rule, "level": float(np.median(level[chosen])),
                                    "macro_f1": quality["macro_f1"],
                                    "micro_f1": quality["micro_f1"], "ece": ece(probabilities[:, chosen],
                                                                                 labels[:, chosen])})
    return entries


def decision_lines(entries: list[dict]) -> list[str]:
    lines = ["decisions (auto: probability >= 0.5; auto-f1: >= each label's level of best expected F1, median shown)",
             f"{'method':10s} {'labels':7s} {'rule':13s} {'macro-F1':>8s} {'micro-F1':>8s} {'ECE':>6s}"]
    lines += [f"{e['method']:10s} {e['labels']:7s} {e['rule'] + ' ' + format(e['level'], 'g'):13s} "
              f"{e['macro_f1']:8.2f} {e['micro_f1']:8.2f} {e['ece']:6.3f}" for e in entries]
    return lines
