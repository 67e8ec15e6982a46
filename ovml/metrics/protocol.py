"""Multi-label evaluation metrics, following LESA's protocol (protocol name "lesa").

See docs/protocol.md. Labels are +1 (positive), -1 (annotated
negative) and 0 (not annotated); `scores` and `labels` are (images, labels) matrices.

* mAP: per-label average precision, macro-averaged over ALL label columns. A column without any
  +1 gets AP 0 and still counts in the mean. Otherwise the rows labelled 0 in that column are
  dropped and AP is scikit-learn's `average_precision_score`: the step-wise sum over distinct
  score thresholds (tied scores form one threshold) of (recall gain) * precision.
* P/R/F1 at K: LESA's micro ("overall") counts over the whole matrix. Every image predicts its
  top-min(K, L) labels (images without positives are kept); TP counts predictions labelled +1,
  P = TP / (N * min(K, L)), R = TP / (number of +1 entries), F1 = 2PR / (P + R).
  Ties at the K-th place go to the lower label index (LESA's unstable numpy sort leaves it open).
  Deviation from LESA: where LESA divides by zero (no positive anywhere, or P + R = 0) and gets
  NaN, R and F1 are 0.0 here, so an evaluation never yields NaN (fault R8 in docs/benchmarks.md).

Everything is vectorised over blocks (columns for AP, rows for top-K), run on WORKERS threads
(numpy releases the GIL while sorting). These functions take whole matrices; for matrices that
should never be whole (Open Images GZSL: 125,436 x 7,586), `ovml.metrics.stream` computes the
same values from row batches, with `top_k_counts` per batch and `AnnotatedEntries` per column
block.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

PROTOCOL = "lesa"
WORKERS = min(2, os.cpu_count() or 1)  # each worker holds one block; more would multiply memory
TOP_K_CHUNK_ELEMENTS = 1 << 23  # scores per row chunk in the top-K counts (32 MiB as float32)
TRANSPOSE_TILE_ROWS = 512  # rows per tile when copying a column block into (columns, images)


def checked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and label values; return scores as floats and labels as integers."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} "
                         "must be equal 2-D shapes")
    if scores.size == 0:
        raise ValueError(f"nothing to evaluate: scores have shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.isin(labels, (-1, 0, 1)).all():
            raise ValueError("labels must be +1, -1 or 0")
        labels = labels.astype(np.int8)
    elif labels.min() < -1 or labels.max() > 1:
        raise ValueError("labels must be +1, -1 or 0")
    return scores, labels


def _require_finite(scores: np.ndarray) -> None:
    """Refuse NaN and infinite scores (they cannot be ranked; scikit-learn refuses them too)."""
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")


def _in_threads(function: Callable, items: Iterable) -> list:
    """`[function(item) for item in items]`, computed on WORKERS threads."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(function, items))


def _blocks(length: int, size: int) -> list[slice]:
    """Consecutive slices of at most `size` covering range(length)."""
    return [slice(start, min(start + size, length)) for start in range(0, length, size)]


def _annotated_scores_by_column(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(columns, images) copy of an (images, columns) block, -inf where not annotated.

    -inf sorts below every (finite) score, so it never counts as scoring >= a threshold.
    The copy goes in tiles of rows, a cache-friendly transpose (docs/protocol.md, "Implementation").
    """
    n_images, n_columns = scores.shape
    annotated = np.empty((n_columns, n_images), dtype=scores.dtype)
    for tile in _blocks(n_images, TRANSPOSE_TILE_ROWS):
        _require_finite(scores[tile])
        annotated[:, tile] = np.where(labels[tile] != 0, scores[tile], -np.inf).T
    return annotated


def _column_keyed(columns: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Complex keys (real = column, imaginary = score): numpy orders complex numbers
    lexicographically, so one 1-D searchsorted serves every column of a block at once."""
    keys = np.empty(np.broadcast_shapes(columns.shape, scores.shape),
                    dtype=np.result_type(scores.dtype, np.complex64))
    keys.real = columns
    keys.imag = scores
    return keys


def _average_precision_by_column(annotated: np.ndarray, positive_columns: np.ndarray,
                                 positive_scores: np.ndarray) -> np.ndarray:
    """AP of every column from its annotated scores, with scikit-learn's tie semantics.

    `annotated` (columns, n) holds each column's annotated scores, padded with -inf (sorted here,
    in place); the positives are given again as (column, score) pairs. Summed over thresholds,
    (recall gain) * precision equals the mean over positives i of TP(s_i) / D(s_i), where TP(t)
    and D(t) count the positives and the annotated entries of the column scoring >= t; ">=" puts
    a whole run of tied scores into one threshold, exactly as scikit-learn's distinct thresholds
    do. D comes from the annotated scores sorted along each row, TP from the sorted positives;
    both are binary searches of the positives' keys.
    """
    n_columns, n_entries = annotated.shape
    annotated.sort(axis=1)
    annotated_keys = _column_keyed(np.arange(n_columns)[:, None], annotated).ravel()
    positive_keys = np.sort(_column_keyed(positive_columns, positive_scores))
    column = positive_keys.real.astype(np.intp)  # ascending
    positives = np.bincount(column, minlength=n_columns)
    true_positives = np.cumsum(positives)[column] - np.searchsorted(positive_keys, positive_keys)
    detections = (column + 1) * n_entries - np.searchsorted(annotated_keys, positive_keys)
    precision_sum = np.bincount(column, weights=true_positives / detections, minlength=n_columns)
    return np.divide(precision_sum, positives, out=np.zeros(n_columns), where=positives > 0)


def _average_precision_of_block(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of every column of an (images, columns) block."""
    images, columns = np.nonzero(labels == 1)
    return _average_precision_by_column(_annotated_scores_by_column(scores, labels), columns,
                                        scores[images, columns])


class AnnotatedEntries:
    """The annotated entries of a block of label columns, laid out once for any number of score vectors.

    Entry i lies in column `columns[i]` (0 <= columns < n_columns) and is a positive where
    `positive[i]`; every (image, column) not listed is unannotated. `average_precision(scores)`
    gives LESA's per-column AP for scores of these entries, equal to `average_precision_per_label`
    on the dense block (same arithmetic, same order). Entries that fill the block row by row
    (every entry annotated, as on NUS-WIDE) are transposed in tiles; others are scattered by
    column through an index computed here once.
    """

    def __init__(self, columns: np.ndarray, positive: np.ndarray, n_columns: int):
        self.n_columns, self.positive = n_columns, positive
        self.positive_columns = columns[positive]
        counts = np.bincount(columns, minlength=n_columns)
        self.depth = int(counts.max(initial=0))  # entries of the fullest column
        self.places = None  # None: the entries are the block's rows, row-major
        if len(columns) != self.depth * n_columns or not (
                columns.reshape(self.depth, n_columns) == np.arange(n_columns)).all():   # (depth, columns)
            order = np.argsort(columns, kind="stable")
            rank = np.empty(len(columns), dtype=np.intp)
            rank[order] = np.arange(len(columns)) - (np.cumsum(counts) - counts)[columns[order]]
            self.places = columns.astype(np.intp) * self.depth + rank

    def average_precision(self, scores: np.ndarray) -> np.ndarray:
        """Per-column AP, float64 (n_columns,), of `scores` (one per entry, finite)."""
        _require_finite(scores)
        annotated = np.full((self.n_columns, self.depth), -np.inf, dtype=scores.dtype)  # (columns, depth)
        if self.places is None:
            rows = scores.reshape(self.depth, self.n_columns)                            # (depth, columns)
            for tile in _blocks(self.depth, TRANSPOSE_TILE_ROWS):
                annotated[:, tile] = rows[tile].T
        else:
            annotated.ravel()[self.places] = scores
        return _average_precision_by_column(annotated, self.positive_columns, scores[self.positive])


def average_precision_per_label(scores: np.ndarray, labels: np.ndarray,
                                column_block: int = 256) -> np.ndarray:
    """Per-column AP under LESA's protocol (module docstring), as float64 of shape (L,).

    Columns are processed `column_block` at a time to bound memory: about 12 bytes per entry
    of a block and worker for float32 scores, 24 for float64 (256 columns x 125,436 images:
    0.4 GB per worker for float32).
    """
    scores, labels = checked(scores, labels)
    if column_block < 1:
        raise ValueError(f"column_block must be positive, got {column_block}")
    blocks = _blocks(scores.shape[1], column_block)
    return np.concatenate(_in_threads(
        lambda block: _average_precision_of_block(scores[:, block], labels[:, block]), blocks))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """LESA's mAP: mean AP over all columns, columns without positives counting as 0."""
    return float(average_precision_per_label(scores, labels).mean())


def _largest_values(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's k largest scores, descending (torch.topk: docs/protocol.md, "Implementation")."""
    writable_scores = np.require(scores, requirements=["C", "W"])  # torch warns on read-only
    return torch.topk(torch.from_numpy(writable_scores), k, dim=1).values.numpy()


def _top_k_mask(scores: np.ndarray, kth_largest: np.ndarray, k: int) -> np.ndarray:
    """Each row's top-k entries, ties at the k-th place going to the lower column indices.

    Equal to marking `np.argsort(-scores, axis=1, kind="stable")[:, :k]`: that order ranks by
    score, then by index, so it takes every score above the k-th largest and fills the
    remaining places with the first (lowest-index) entries equal to it. Only rows with more
    than k scores >= the k-th largest ("crowded" by ties) need that running count.
    """
    top_k = scores >= kth_largest
    crowded = np.flatnonzero(np.count_nonzero(top_k, axis=1) > k)
    crowded_scores, crowded_kth = scores[crowded], kth_largest[crowded]
    above = crowded_scores > crowded_kth
    tied = crowded_scores == crowded_kth
    places = k - np.count_nonzero(above, axis=1)[:, None]
    top_k[crowded] = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= places))
    return top_k


def top_k_counts(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int]) -> tuple[list[int], int]:
    """True positives among each row's top-k, for every k in ks (each <= L), and the number of
    positives. Rows are independent, so counts of row batches add up to the whole matrix's."""
    _require_finite(scores)
    if not ks:
        return [], int(np.count_nonzero(labels == 1))
    largest = _largest_values(scores, max(ks))
    positive = labels == 1
    true_positives = [int(np.count_nonzero(positive & _top_k_mask(
        scores, largest[:, k - 1, None], k))) for k in ks]
    return true_positives, int(np.count_nonzero(positive))


def _top_k_counts(scores: np.ndarray, labels: np.ndarray,
                  ks: Sequence[int]) -> tuple[list[int], int]:
    """`top_k_counts` over the whole matrix, in row chunks (ks already <= L)."""
    chunks = _blocks(scores.shape[0], max(1, TOP_K_CHUNK_ELEMENTS // scores.shape[1]))
    counts = _in_threads(lambda rows: top_k_counts(scores[rows], labels[rows], ks),
                         chunks)
    return [sum(c[0][i] for c in counts) for i in range(len(ks))], sum(c[1] for c in counts)


def effective_ks(ks: Sequence[int], n_labels: int) -> list[int]:
    """min(k, L) for every k; k must be positive."""
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be positive, got {list(ks)}")
    return [min(k, n_labels) for k in ks]


def _precision_recall_f1(true_positives: int, predictions: int,
                         positives: int) -> tuple[float, float, float]:
    """Micro P, R, F1 from counts; R = 0 without positives and F1 = 0 when P + R = 0 (no NaN)."""
    precision = true_positives / predictions
    recall = true_positives / positives if positives else 0.0
    if precision + recall == 0:
        return precision, recall, 0.0
    return precision, recall, 2 * precision * recall / (precision + recall)


def precision_recall_f1_at_k(scores: np.ndarray, labels: np.ndarray,
                             k: int) -> tuple[float, float, float]:
    """LESA's micro ("overall") precision, recall and F1 of every image's top-min(k, L) labels.

    Fractions, not percent. R is 0.0 when the matrix has no positive and F1 is 0.0 when
    P + R = 0, where LESA would give NaN.
    """
    scores, labels = checked(scores, labels)
    (k,) = effective_ks([k], scores.shape[1])
    (true_positives,), positives = _top_k_counts(scores, labels, [k])
    return _precision_recall_f1(true_positives, scores.shape[0] * k, positives)


def results_in_percent(average_precisions: np.ndarray, ks: Sequence[int], true_positives: Sequence[int],
                       positives: int, n_images: int) -> dict:
    """`evaluate`'s dict from per-label APs and top-K counts (ks as asked, counts at min(k, L))."""
    n_labels = len(average_precisions)
    results = {"mAP": 100.0 * float(average_precisions.mean())}
    for k, effective_k, hits in zip(ks, effective_ks(ks, n_labels), true_positives):
        precision, recall, f1 = _precision_recall_f1(hits, n_images * effective_k, positives)
        results[f"P@{k}"] = 100.0 * precision
        results[f"R@{k}"] = 100.0 * recall
        results[f"F1@{k}"] = 100.0 * f1
    results["images"], results["labels"] = n_images, n_labels
    return results


def evaluate(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (3, 5)) -> dict:
    """mAP and P/R/F1 at each k, in percent, plus the matrix size ("images", "labels").

    Same values as `mean_average_precision` and `precision_recall_f1_at_k`; all ks share one
    pass over the rows.
    """
    scores, labels = checked(scores, labels)
    true_positives, positives = _top_k_counts(scores, labels, effective_ks(ks, scores.shape[1]))
    return results_in_percent(average_precision_per_label(scores, labels), ks, true_positives, positives,
                              scores.shape[0])
