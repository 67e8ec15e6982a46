"""Stage 3: ZSL / GZSL evaluation of CLIP-ML, dense CLIP and trained heads (LESA's protocol).

Scores are computed streaming over the cache's test split, one head forward per batch serving
every alpha; `--alpha auto` is chosen on the head's own validation images (a training-split
carve-out), never on test labels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cache.reader import CacheReader
from ..config import EvalConfig
from ..errors import UsageError
from ..metrics import evaluate
from ..precision import mixed_precision
from ..progress import progress
from .batches import BatchStream, RowSelection
from .scoring import (HeadParts, TrainedHead, baseline_scores, batch_tensors, cache_pool, head_parts,
                      load_trained_head)

AUTO_GRID = tuple(round(a, 2) for a in np.linspace(0, 1, 21))
PROTOCOL = "lesa"


@dataclass
class ScoredRow:
    """One line of the results table: a method at one alpha, with its scores."""

    method: str
    alpha: float | None
    scores: np.ndarray
    run: str | None = None
    metrics: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        entry = {"method": self.method, "alpha": self.alpha} | self.metrics
        if self.run:
            entry["run"] = self.run
        return entry


def label_columns(reader: CacheReader, split: str) -> np.ndarray:
    """Column indices scored for --split unseen (ZSL), all (GZSL) or seen."""
    choices = {"unseen": np.flatnonzero(~reader.seen), "seen": np.flatnonzero(reader.seen),
               "all": np.arange(reader.num_labels)}
    if split not in choices:
        raise UsageError(f"--split must be unseen, all or seen, not {split!r}")
    if len(choices[split]) == 0:
        raise UsageError(f"{reader.path}: no {split} labels in this cache")
    return choices[split]


def default_ks(num_labels: int) -> tuple[int, ...]:
    """K = 3, 5, or 10, 20 for vocabularies above 5,000 labels (Open Images)."""
    return (10, 20) if num_labels > 5000 else (3, 5)


def score_split(reader: CacheReader, selection: RowSelection, columns: np.ndarray, heads: list[TrainedHead],
                baselines: tuple[str, ...], config: EvalConfig, desc: str) -> tuple[dict, list, np.ndarray]:
    """Stream the selected rows once: baseline scores, HeadParts per head, and the labels."""
    device = torch.device(config.device)
    precision = mixed_precision(config.amp, device)
    pool = cache_pool(reader, device) if "dense" in baselines else {}
    text = torch.from_numpy(reader.text[columns]).to(device)
    base_scores = {name: [] for name in baselines}
    parts = [[] for _ in heads]
    labels = []
    stream = BatchStream(reader, selection, config.batch_size, prefetch=2)
    for batch in progress(stream.epoch(seed=0, shuffle=False), total=stream.steps(), desc=desc,
                          unit="batch", enabled=config.progress):
        spatial, global_embedding = batch_tensors(batch, device)
        for name in baselines:
            base_scores[name].append(baseline_scores(name, spatial, global_embedding, text, pool,
                                                     config.dense_top_k))
        for index, head in enumerate(heads):
            parts[index].append(head_parts(precision.wrap(head.module), spatial, global_embedding, text))
        labels.append(batch["labels"][:, columns])
    joined = [HeadParts(*(np.concatenate([getattr(p, f) for p in chunks]) for f in
                          ("head_text", "global_text", "head_global"))) for chunks in parts]
    return ({name: np.concatenate(s) for name, s in base_scores.items()}, joined, np.concatenate(labels))


def choose_alpha(reader: CacheReader, head: TrainedHead, config: EvalConfig) -> tuple[float | None, str]:
    """Alpha with the best mAP on the head's validation images, scored on labels it did not train
    on; None (with the reason) when the run kept no validation images."""
    validation = head.config.get("validation") or {}
    units = validation.get("units") or []
    if not units:
        return None, ("alpha auto skipped: the run kept no validation images (train with --val-fraction > 0); "
                      "test labels are never used to choose alpha")
    split = validation.get("split", "train")
    pseudo = np.array(head.config.get("pseudo_unseen_columns") or [], dtype=int)
    how = f"{len(pseudo)} pseudo-unseen seen labels held out of training"
    if len(pseudo) == 0:
        pseudo = np.flatnonzero(reader.seen)
        how = ("all seen labels (the run held none out: train with --pseudo-unseen F for labels "
               "the head never saw)")
    selection = RowSelection.from_mask(split, reader.unit_rows(split), reader.usable_rows(split), units)
    _, (parts,), labels = score_split(reader, selection, pseudo, [head], (), config, "alpha auto")
    sweep = {alpha: evaluate(parts.scores(alpha), labels, ks=(3,))["mAP"] for alpha in AUTO_GRID}
    best = max(sweep, key=lambda a: (sweep[a], -a))
    return best, (f"alpha {best:g} chosen on {selection.count} validation images of split {split} "
                  f"(never test labels), {how}; validation mAP {sweep[best]:.2f}")


@dataclass
class Evaluation:
    """metrics.json's content plus the scores and labels behind it (for plots)."""

    summary: dict
    rows: list[ScoredRow]
    labels: np.ndarray


def evaluate_cache(config: EvalConfig) -> Evaluation:
    """Score every method asked with LESA's protocol (values in percent)."""
    with CacheReader(config.cache, allow_partial=config.allow_partial) as reader:
        device = torch.device(config.device)
        pool = cache_pool(reader, device)
        heads = [load_trained_head(run, pool, reader.num_heads, device) for run in config.heads]
        columns = label_columns(reader, config.split)
        ks = config.ks or default_ks(reader.num_labels)
        notes, head_alphas = [note for note in [mixed_precision(config.amp, device).note] if note], []
        for head in heads:
            alphas = list(config.alphas)
            if config.alpha_auto:
                chosen, how = choose_alpha(reader, head, config)
                notes.append(f"{head.run}: {how}")
                alphas += [] if chosen is None else [chosen]
            head_alphas.append(sorted(set(alphas or [0.0])))
        if config.image_split not in reader.splits:
            raise UsageError(f"{reader.path}: no split {config.image_split!r} (splits: {', '.join(reader.splits)})")
        selection = RowSelection.from_mask(config.image_split, reader.unit_rows(config.image_split),
                                           reader.usable_rows(config.image_split))
        base, parts, labels = score_split(reader, selection, columns, heads, tuple(config.baselines), config,
                                          f"eval {config.image_split}")
        rows = [ScoredRow(name, None, scores) for name, scores in base.items()]
        for head, head_part, alphas in zip(heads, parts, head_alphas):
            rows += [ScoredRow(head.name, alpha, head_part.scores(alpha), run=head.run) for alpha in alphas]
        for row in rows:
            row.metrics = evaluate(row.scores, labels, ks=ks)
        summary = {"protocol": PROTOCOL, "split": config.split, "image_split": config.image_split,
                   "cache": os.path.abspath(config.cache), "dataset": reader.dataset.get("name"),
                   "rows": [row.as_json() for row in rows], "images": int(labels.shape[0]),
                   "labels": int(labels.shape[1]), "ks": list(ks), "notes": notes,
                   "label_names": [reader.names[c] for c in columns]}
        return Evaluation(summary, rows, labels)
