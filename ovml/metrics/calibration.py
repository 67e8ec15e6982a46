"""Calibrated probabilities from scores, and how good decisions made with them are.

Every label's probability has one form, p = sigmoid(a_j z + b_j) with z = (s - mu_j) / sd_j: the
label's score standardised by its mean and spread over a set of reference images, then a Platt
map with a positive slope (so p is monotone in the score for one label). A label with labelled
images gets its own (a_j, b_j); a label never labelled gets one shared (a, b) fitted on labels
the head never trained on, and its (mu_j, sd_j) from the images at hand: standardising a new
label's scores by their own statistics is what lets one map serve labels whose score bands differ.

Fits are Platt's: Newton steps on the log-loss with Platt's smoothed targets ((N+ + 1)/(N+ + 2)
and 1/(N- + 2)), an optional Gaussian prior pulling (a, b) towards a given map (few labelled
images then move the shared map rather than replace it). All in numpy, label columns at once.
"""
from __future__ import annotations

import numpy as np

MIN_SLOPE = 1e-3      # slopes are clamped here: probabilities stay increasing in the score
ECE_BINS = 15         # equal-width probability bins of the expected calibration error


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def label_statistics(scores: np.ndarray, usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(L,) mean and (L,) standard deviation of each label's scores (n, L) over the images (rows
    where `usable` (n,) holds)."""
    rows = scores if usable is None else scores[usable]
    mean = rows.mean(axis=0)
    spread = np.maximum(rows.std(axis=0), 1e-6)
    return mean.astype(np.float64), spread.astype(np.float64)


def standardise(scores: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    return (scores - mean[None]) / spread[None]                                          # (n, L)


def platt_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed targets (n, L) and weights (n, L) from ±1 labels (0: not annotated, weight 0)."""
    positives = (labels == 1).sum(axis=0)                                                # (L,)
    negatives = (labels == -1).sum(axis=0)
    high, low = (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0)
    targets = np.where(labels == 1, high[None], low[None])
    return targets, (labels != 0).astype(np.float64)


def fit_platt(z: np.ndarray, labels: np.ndarray, prior: tuple[float, float] | None = None,
              strength: float = 0.0, steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (L,) slopes and intercepts of sigmoid(a z + b) fitted to ±1 `labels` (n, L) on
    standardised scores `z` (n, L); `prior` (a0, b0) with `strength` adds strength/2 |(a, b) - prior|^2."""
    targets, weights = platt_targets(labels)
    z = z.astype(np.float64)
    a0, b0 = prior if prior is not None else (1.0, 0.0)
    a = np.full(z.shape[1], a0, dtype=np.float64)
    b = np.full(z.shape[1], b0, dtype=np.float64)
    for _ in range(steps):
        p = sigmoid(a[None] * z + b[None])                                               # (n, L)
        residual, curvature = weights * (p - targets), weights * p * (1 - p) + 1e-9
        grad_a = (residual * z).sum(0) + strength * (a - a0)
        grad_b = residual.sum(0) + strength * (b - b0)
        h_aa = (curvature * z * z).sum(0) + strength + 1e-6
        h_ab = (curvature * z).sum(0)
        h_bb = curvature.sum(0) + strength + 1e-6
        det = h_aa * h_bb - h_ab ** 2
        step_a = (h_bb * grad_a - h_ab * grad_b) / det
        step_b = (h_aa * grad_b - h_ab * grad_a) / det
        a, b = np.maximum(a - np.clip(step_a, -5, 5), MIN_SLOPE), b - np.clip(step_b, -5, 5)
        if max(np.abs(step_a).max(initial=0), np.abs(step_b).max(initial=0)) < 1e-7:
            break
    return a, b


def fit_shared_map(z: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """One (a, b) for every column of `z` (n, L): the map for labels never labelled."""
    flat_z, flat_labels = z.reshape(-1, 1), labels.reshape(-1, 1)                         # (n L, 1)
    a, b = fit_platt(flat_z, flat_labels)
    return float(a[0]), float(b[0])


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over the annotated pairs (labels ±1; 0 skipped), equal-width bins."""
    annotated = labels != 0
    p, positive = probabilities[annotated], labels[annotated] == 1
    if len(p) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(positive[inside].mean() - p[inside].mean())
    return float(total / len(p))


def expected_f1_levels(probabilities: np.ndarray) -> np.ndarray:
    """(L,) each label's probability level of best *expected* F1 over the images (rows) of
    (n, L) calibrated probabilities, needing no labels: taking the k most probable images as
    present expects TP = the sum of their probabilities and FP + FN = k + S - 2 TP (S the sum
    over all images), so F1 = 2 TP / (k + S); the level is the k-th largest probability at the
    best k. With calibrated probabilities this is the plug-in F1-optimal decision (Lipton et al.,
    2014: the level comes out near half the F1 reachable, not 0.5)."""
    ordered = -np.sort(-probabilities, axis=0)                                   # (n, L) descending
    true_positives = np.cumsum(ordered, axis=0)                                  # (n, L) TP at k = 1..n
    kept = np.arange(1, len(ordered) + 1)[:, None]                               # (n, 1)
    expected = 2 * true_positives / (kept + true_positives[-1][None])            # (n, L)
    best = expected.argmax(axis=0)                                               # (L,)
    return ordered[best, np.arange(ordered.shape[1])]


def f1_scores(present: np.ndarray, labels: np.ndarray) -> dict:
    """Macro-F1 (over labels with a positive) and micro-F1 of decisions (n, L) against ±1 labels, in percent."""
    annotated, positive = labels != 0, labels == 1
    tp = (present & positive).sum(0).astype(float)
    fp = (present & annotated & ~positive).sum(0).astype(float)
    fn = (~present & positive).sum(0).astype(float)
    has = positive.sum(0) > 0
    per_label = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    return {"macro_f1": 100 * float(per_label[has].mean()) if has.any() else float("nan"),
            "micro_f1": 100 * float(micro), "per_label_f1": per_label}


def best_threshold(scores: np.ndarray, labels: np.ndarray, target: str = "f1",
                   precision: float | None = None) -> tuple[float, float]:
    """For one label: (threshold, its value) over the annotated scores (n,): the threshold of best
    F1, or with `precision` the lowest threshold reaching it (value: the precision; inf when none does)."""
    annotated = labels != 0
    s, positive = scores[annotated], labels[annotated] == 1
    order = np.argsort(-s, kind="stable")
    s, positive = s[order], positive[order]
    tp = np.cumsum(positive)
    fp = np.cumsum(~positive)
    if precision is not None:
        reach = np.flatnonzero(tp / np.maximum(tp + fp, 1) >= precision)
        if len(reach) == 0 or positive.sum() == 0:
            return float("inf"), 0.0
        last = reach[-1]
        return float(s[last]), float(tp[last] / (tp[last] + fp[last]))
    f1 = 2 * tp / np.maximum(tp + fp + positive.sum(), 1)
    best = int(f1.argmax())
    return float(s[best]), float(f1[best])
