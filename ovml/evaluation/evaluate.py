"""Stage 3: ZSL / GZSL evaluation of CLIP-ML, dense CLIP and trained heads (LESA's protocol).

Scores are computed streaming over the cache's test split, one head forward per batch serving
every alpha, and go straight into `StreamingMetrics`: top-K counts per batch, annotated entries
spilled column-blocked to a temporary store, per-label AP one column block at a time; no
(images, labels) matrix is ever held. `--alpha auto` is chosen the same way on the head's own
validation images (a training-split carve-out), never on test labels.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cache.reader import CacheReader
from ..config import KS, LARGE_VOCABULARY, LARGE_VOCABULARY_KS, EvalConfig
from ..errors import UsageError
from ..metrics.stream import Recipe, StreamingMetrics
from ..precision import mixed_precision
from ..progress import progress
from ..cache.batches import BatchStream, RowSelection, batch_tensors, cache_pool, validation_rows
from ..train.saved_head import TrainedHead, load_trained_head
from .scoring import HeadParts, baseline_scores, head_parts

AUTO_GRID = tuple(round(float(a), 2) for a in np.linspace(0, 1, 21))  # Python floats: float32 scores
PROTOCOL = "lesa"
PR_SAMPLE = 2_000_000  # annotated (image, label) entries behind the PR curves (a seeded sample)
PARTS = tuple(f.name for f in dataclasses.fields(HeadParts))


@dataclass
class ScoredRow:
    """One line of the results table: a method at one alpha, with its metrics and what the plots need."""

    method: str
    alpha: float | None
    run: str | None = None
    metrics: dict = field(default_factory=dict)
    per_label_ap: np.ndarray | None = None                 # (L,) AP per label column
    pr_sample: tuple[np.ndarray, np.ndarray] | None = None  # scores, positive flags of sampled entries

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


def evaluated_labels(config: EvalConfig) -> np.ndarray:
    """The (images, labels) int8 matrix `evaluate_cache(config)` scores, read whole: for small
    caches (tests, benchmarks scoring a random ranker), never at Open Images size."""
    with CacheReader(config.cache, allow_partial=config.allow_partial) as reader:
        usable = reader.usable_rows(config.image_split)
        return reader.read_labels(config.image_split)[usable][:, label_columns(reader, config.split)]


def default_ks(num_labels: int) -> tuple[int, ...]:
    """The top-K of P/R/F1 that LESA reports: larger for vocabularies of Open Images' size."""
    return LARGE_VOCABULARY_KS if num_labels > LARGE_VOCABULARY else KS


def head_recipes(key: str, alphas: list[float]) -> dict[float, Recipe]:
    """alpha -> Recipe for a head stored under `key`: its scores at each alpha when there are at
    most three alphas, else its three HeadParts, from which every alpha is computed."""
    if len(alphas) <= len(PARTS):
        return {alpha: Recipe.stored(f"{key}@{alpha}") for alpha in alphas}
    names = tuple(f"{key}.{part}" for part in PARTS)
    return {alpha: Recipe(names, lambda *parts, alpha=alpha: HeadParts(*parts).scores(alpha)) for alpha in alphas}


def head_matrices(key: str, parts: HeadParts, alphas: list[float]) -> dict[str, np.ndarray]:
    """A batch's matrices that `head_recipes(key, alphas)` reads."""
    if len(alphas) <= len(PARTS):
        return {f"{key}@{alpha}": parts.scores(alpha) for alpha in alphas}
    return {f"{key}.{part}": getattr(parts, part) for part in PARTS}


def score_split(reader: CacheReader, selection: RowSelection, columns: np.ndarray, heads: list[TrainedHead],
                head_alphas: list[list[float]], baselines: tuple[str, ...], config: EvalConfig,
                metrics: StreamingMetrics, desc: str) -> None:
    """Stream the selected rows once into `metrics`: baseline scores and each head's matrices
    (keys "<baseline>" and "head<index>..."), with the labels of `columns`."""
    device = torch.device(config.device)
    precision = mixed_precision(config.amp, device)
    pool = cache_pool(reader, device) if "dense" in baselines else {}
    text = torch.from_numpy(reader.text[columns]).to(device)
    stream = BatchStream(reader, selection, config.batch_size, prefetch=2)
    for batch in progress(stream.epoch(seed=0, shuffle=False), total=stream.steps(), desc=desc,
                          unit="batch", enabled=config.progress):
        tokens, global_embedding = batch_tensors(batch, device)
        matrices = {name: baseline_scores(name, tokens, global_embedding, text, pool, config.dense_top_k)
                    for name in baselines}
        for index, (head, alphas) in enumerate(zip(heads, head_alphas)):
            matrices |= head_matrices(f"head{index}", head_parts(precision.wrap(head.module), tokens, global_embedding, text),
                                      alphas)
        metrics.add(batch["labels"][:, columns], matrices)


def choose_alpha(reader: CacheReader, head: TrainedHead, config: EvalConfig) -> tuple[float | None, str]:
    """Alpha with the best mAP on the head's validation images, scored on labels it did not train
    on; None (with the reason) when the run kept no validation images."""
    validation = head.config.get("validation") or {}
    if not validation.get("units"):
        return None, ("alpha auto skipped: the run kept no validation images (train with --val-fraction > 0); "
                      "test labels are never used to choose alpha")
    pseudo = np.array(head.config.get("pseudo_unseen_columns") or [], dtype=int)
    how = f"{len(pseudo)} pseudo-unseen seen labels held out of training"
    if len(pseudo) == 0:
        pseudo = np.flatnonzero(reader.seen)
        how = ("all seen labels (the run held none out: train with --pseudo-unseen F for labels "
               "the head never saw)")
    selection = validation_rows(reader, validation)
    grid = list(AUTO_GRID)
    with StreamingMetrics(head_recipes("head0", grid), len(pseudo), selection.count,
                          scratch=config.scratch) as metrics:
        score_split(reader, selection, pseudo, [head], [grid], (), config, metrics, "alpha auto")
        sweep = {alpha: result.metrics["mAP"] for alpha, result in metrics.finish().items()}
    best = max(sweep, key=lambda a: (sweep[a], -a))
    return best, (f"alpha {best:g} chosen on {selection.count} validation images of split {selection.split} "
                  f"(never test labels), {how}; validation mAP {sweep[best]:.2f}")


@dataclass
class Evaluation:
    """metrics.json's content plus, per row, what the plots need (no score matrix)."""

    summary: dict
    rows: list[ScoredRow]
    positives: int   # +1 entries among the evaluated (image, label) pairs


def evaluate_cache(config: EvalConfig) -> Evaluation:
    """Score every method asked with LESA's protocol (values in percent), in bounded memory."""
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
            head_alphas.append(sorted(set(map(float, alphas or [0.0]))))
        if config.image_split not in reader.splits:
            raise UsageError(f"{reader.path}: no split {config.image_split!r} (splits: {', '.join(reader.splits)})")
        selection = RowSelection.usable(reader, config.image_split)
        if selection.count == 0:
            raise UsageError(f"{reader.path}: split {config.image_split!r} has no usable image to evaluate")
        rows = [ScoredRow(name, None) for name in config.baselines]
        recipes = [Recipe.stored(name) for name in config.baselines]
        for index, (head, alphas) in enumerate(zip(heads, head_alphas)):
            for alpha, recipe in head_recipes(f"head{index}", alphas).items():
                rows.append(ScoredRow(head.name, alpha, run=head.run))
                recipes.append(recipe)
        with StreamingMetrics(dict(enumerate(recipes)), len(columns), selection.count, ks, config.scratch,
                              PR_SAMPLE) as metrics:
            score_split(reader, selection, columns, heads, head_alphas, tuple(config.baselines), config, metrics,
                        f"eval {config.image_split}")
            for index, result in metrics.finish().items():
                rows[index].metrics, rows[index].per_label_ap = result.metrics, result.per_label_ap
                rows[index].pr_sample = result.pr_sample
        summary = {"protocol": PROTOCOL, "split": config.split, "image_split": config.image_split,
                   "cache": os.path.abspath(config.cache), "dataset": reader.dataset.get("name"),
                   "rows": [row.as_json() for row in rows], "images": metrics.images,
                   "labels": int(len(columns)), "ks": list(ks), "notes": notes,
                   "label_names": [reader.names[c] for c in columns]}
        return Evaluation(summary, rows, metrics.positives)
