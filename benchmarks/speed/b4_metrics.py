"""B4: mAP + F1@3 + F1@5 at NUS-WIDE GZSL scale, ovml vs a per-column sklearn loop.

Random float32 scores for 107,859 images x 1,006 labels (one column in ten rounded to two
decimals, so ties are common there) and +1/-1 labels as in NUS-WIDE (sparse positives, a few
columns without any). The reference arm is LESA's computation: a loop over columns calling
scikit-learn's average_precision_score on the annotated rows, and a plain top-K (a stable argsort
of every row, ties to the lower label index) for each K. Both arms must agree to 1e-9.

The metrics run on the CPU (numpy, and torch.topk on CPU tensors), so there is no --gpu option.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import average_precision_score

from ovml.metrics.protocol import WORKERS, evaluate

KS = (3, 5)


def benchmark_matrix(rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores and +1/-1 labels with sparse positives, some tied scores and empty columns."""
    rng = np.random.default_rng(seed)
    positive_rate = rng.uniform(0.0, 0.05, size=cols).astype(np.float32)
    positive_rate[::97] = 0.0
    labels = np.where(rng.random((rows, cols), dtype=np.float32) < positive_rate, 1, -1)
    labels = labels.astype(np.int8)
    scores = rng.standard_normal((rows, cols), dtype=np.float32) + np.float32(0.5) * labels
    assert scores.dtype == np.float32
    scores[:, ::10] = np.round(scores[:, ::10], 2)
    return scores, labels


def sklearn_loop_map(scores: np.ndarray, labels: np.ndarray) -> float:
    """LESA's compute_AP: per column, AP 0 without a positive, else sklearn on annotated rows."""
    average_precision = np.zeros(labels.shape[1])
    for column in range(labels.shape[1]):
        y, s = labels[:, column], scores[:, column]
        if (y == 1).any():
            annotated = y != 0
            average_precision[column] = average_precision_score(y[annotated] == 1, s[annotated])
    return float(average_precision.mean())


def plain_f1_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float, float]:
    """Micro P, R, F1 of each row's top-k by a stable argsort on -scores."""
    top_k = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    true_positives = int(np.count_nonzero(np.take_along_axis(labels, top_k, axis=1) == 1))
    precision = true_positives / top_k.size
    recall = true_positives / int(np.count_nonzero(labels == 1))
    return precision, recall, 2 * precision * recall / (precision + recall)


def reference_arm(scores: np.ndarray, labels: np.ndarray) -> dict:
    """The same figures as ovml's evaluate (percent), computed the straightforward way."""
    result = {"mAP": 100.0 * sklearn_loop_map(scores, labels)}
    for k in KS:
        precision, recall, f1 = plain_f1_at_k(scores, labels, k)
        result.update({f"P@{k}": 100 * precision, f"R@{k}": 100 * recall, f"F1@{k}": 100 * f1})
    return result


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=107859)
    parser.add_argument("--cols", type=int, default=1006)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of the ovml arm")
    args = parser.parse_args()

    scores, labels = benchmark_matrix(args.rows, args.cols)
    positives_per_column = np.count_nonzero(labels == 1, axis=0)
    print(f"scores {args.rows} x {args.cols} float32, {int(positives_per_column.sum())} positives, "
          f"{int(np.count_nonzero(positives_per_column == 0))} columns without positives, "
          f"ovml on {WORKERS} thread(s)")

    ovml_seconds = []
    for _ in range(args.repeats):
        seconds, ovml = timed(evaluate, scores, labels, KS)
        ovml_seconds.append(seconds)
    ovml_median = statistics.median(ovml_seconds)
    print("ovml arm (evaluate: mAP, P/R/F1@3, @5): "
          + ", ".join(f"{s:.2f}" for s in ovml_seconds) + f" s; median {ovml_median:.2f} s")

    reference_seconds, reference = timed(reference_arm, scores, labels)
    print(f"sklearn-loop arm (run once, it is slow): {reference_seconds:.2f} s")

    worst = max(abs(ovml[key] - reference[key]) / 100 for key in reference)
    for key in reference:
        print(f"  {key:6s} ovml {ovml[key]:.12f}  reference {reference[key]:.12f}")
    print(f"largest difference (fractions, not percent): {worst:.3e}")
    if worst > 1e-9:
        raise SystemExit(f"values differ by {worst:.3e} > 1e-9")
    print(f"RATIO B4 {reference_seconds / ovml_median:.1f} sklearn-loop-seconds / ovml-seconds "
          f"({args.rows} x {args.cols}, values equal to 1e-9)")


if __name__ == "__main__":
    main()
