"""LESA's metrics (ovml.metrics.protocol) of score matrices that arrive a batch of rows at a time.

An Open Images GZSL score matrix (125,436 x 7,586, 3.8 GB as float32) is never held whole:
each batch's top-K counts are taken at once (rows are independent), the annotated entries are
spilled column-blocked to a temporary folder (ovml.metrics.spill), and per-label AP is computed
one column block at a time. Memory is bounded by a batch and a block, whatever images x labels.
The results are equal, bit for bit, to `ovml.metrics.protocol.evaluate` on the whole float32 matrix:
the same top-K counts, and the AP arithmetic of `average_precision_per_label` in the same order.

Several table rows can share stored matrices: a row is a `Recipe`, the names of the matrices
it needs and the elementwise function that makes its scores from them (the identity for a
stored matrix; an interpolation alpha from a head's three parts), applied to each batch for
top-K and to each block's entries for AP.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np

from . import protocol
from .protocol import AnnotatedEntries, checked, effective_ks, results_in_percent, top_k_counts
from .spill import MAX_BLOCK_COLUMNS, AnnotatedSpill

BLOCK_BYTES = 1 << 29  # working memory of one column block in the AP pass (metrics.WORKERS blocks at a time)


@dataclass(frozen=True)
class Recipe:
    """How a row's scores are made from stored matrices, elementwise."""

    inputs: tuple[str, ...]
    combine: Callable[..., np.ndarray]

    @classmethod
    def stored(cls, name: str) -> "Recipe":
        """The row is the stored matrix `name` itself."""
        return cls((name,), lambda scores: scores)

    def __call__(self, matrices: dict[str, np.ndarray]) -> np.ndarray:
        return self.combine(*(matrices[name] for name in self.inputs))


@dataclass
class RowResult:
    """One row's metrics (as `ovml.metrics.protocol.evaluate` returns them), per-label AP and a PR sample."""

    metrics: dict
    per_label_ap: np.ndarray                   # (L,) float64
    pr_sample: tuple[np.ndarray, np.ndarray]   # scores and positive flags of sampled annotated entries


class StreamingMetrics:
    """Accumulate row batches with `add`, then `finish` for every row's results; a context manager
    that deletes its temporary store on exit.

    rows: name -> Recipe; n_labels: columns of every matrix; expected_images: about how many rows
    will arrive (sets the column block width); ks: top-K list (empty: AP only); scratch: folder
    for the temporary store; pr_sample: about how many annotated entries to keep for PR curves
    (the same seeded entries for every row).
    """

    def __init__(self, rows: dict[Hashable, Recipe], n_labels: int, expected_images: int,
                 ks: Sequence[int] = (), scratch: str | None = None, pr_sample: int = 0, seed: int = 0):
        self.rows, self.n_labels, self.ks = rows, n_labels, tuple(ks)
        self.effective_ks = effective_ks(self.ks, n_labels)
        self.pr_sample, self.seed = pr_sample, seed
        names = list(dict.fromkeys(name for recipe in rows.values() for name in recipe.inputs))
        entry_bytes = 40 + 4 * len(names)  # stored values, code, layout, sort buffer, keys, row scores, sample
        width = BLOCK_BYTES // (max(expected_images, 1) * entry_bytes)
        self.spill = AnnotatedSpill(names, n_labels, max(1, min(n_labels, MAX_BLOCK_COLUMNS, width)), scratch)
        self.images = self.positives = self.annotated = 0
        self.true_positives = {row: [0] * len(self.ks) for row in rows}

    def __enter__(self) -> "StreamingMetrics":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.spill.close()

    def add(self, labels: np.ndarray, matrices: dict[str, np.ndarray]) -> None:
        """One batch: labels (B, L) of +1/-1/0 and every stored matrix (B, L) float32."""
        for name in self.spill.names:
            if matrices[name].shape != (len(labels), self.n_labels):
                raise ValueError(f"{name}: scores of shape {(len(labels), self.n_labels)} expected, "
                                 f"got {matrices[name].shape}")
            _, labels = checked(matrices[name], labels)
            if not np.isfinite(matrices[name]).all():
                raise ValueError("scores contain NaN or infinite values")
        for row, recipe in self.rows.items() if self.ks else ():
            hits, _ = top_k_counts(recipe(matrices), labels, self.effective_ks)
            self.true_positives[row] = [a + b for a, b in zip(self.true_positives[row], hits)]
        self.images += len(labels)
        self.positives += int(np.count_nonzero(labels == 1))
        self.annotated += int(np.count_nonzero(labels))
        self.spill.append(labels, matrices)

    def finish(self) -> dict[Hashable, RowResult]:
        """Every row's results; per-label AP one column block at a time, metrics.WORKERS blocks at once."""
        if self.images == 0:
            raise ValueError("nothing to evaluate: no image was added")
        self.spill.flush()
        keep = min(1.0, self.pr_sample / self.annotated) if self.annotated else 0.0
        with ThreadPoolExecutor(max_workers=protocol.WORKERS) as pool:
            blocks = list(pool.map(lambda index: self._block(index, keep), range(len(self.spill.blocks))))
        results = {}
        for row in self.rows:
            per_label_ap = np.concatenate([block[row][0] for block in blocks])
            sample = tuple(np.concatenate([block[row][i] for block in blocks]) for i in (1, 2))
            metrics = results_in_percent(per_label_ap, self.ks, self.true_positives[row], self.positives,
                                         self.images)
            results[row] = RowResult(metrics, per_label_ap, sample)
        return results

    def _block(self, index: int, keep: float) -> dict:
        """row -> (AP of the block's columns, sampled scores, sampled positive flags)."""
        columns, positive, values = self.spill.read(index)
        block = self.spill.blocks[index]
        entries = AnnotatedEntries(columns, positive, block.stop - block.start)
        sampled = np.random.default_rng([self.seed, index]).random(len(columns), dtype=np.float32) < keep
        out = {}
        for row, recipe in self.rows.items():
            scores = recipe(values)
            out[row] = (entries.average_precision(scores), scores[sampled], positive[sampled])
        return out


def streaming_mean_average_precision(batches: Iterable[tuple[np.ndarray, np.ndarray]], n_labels: int,
                                     expected_images: int, scratch: str | None = None) -> float:
    """LESA's mAP (a fraction) of the (scores, labels) row batches, equal to `mean_average_precision`
    of their concatenation."""
    with StreamingMetrics({"scores": Recipe.stored("scores")}, n_labels, expected_images,
                          scratch=scratch) as metrics:
        for scores, labels in batches:
            metrics.add(labels, {"scores": scores})
        return float(metrics.finish()["scores"].per_label_ap.mean())

