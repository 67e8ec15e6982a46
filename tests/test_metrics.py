"""Metrics under LESA's protocol: hand-worked cases, scikit-learn per column, a reference top-K."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ovml.metrics import protocol as metrics
from ovml.metrics.protocol import (average_precision_per_label, evaluate, mean_average_precision,
                          precision_recall_f1_at_k)


def lesa_average_precision(scores, labels):
    """LESA's compute_AP: per column, 0 without a positive, else sklearn AP on annotated rows."""
    result = []
    for column in range(labels.shape[1]):
        y, s = labels[:, column], scores[:, column]
        if not (y == 1).any():
            result.append(0.0)
            continue
        annotated = y != 0
        result.append(average_precision_score(y[annotated] == 1, s[annotated]))
    return np.array(result)


def reference_precision_recall_f1(scores, labels, k):
    """Plain loop: each image's top-min(k, L) by score, ties to the lower label index."""
    n_images, n_labels = scores.shape
    k = min(k, n_labels)
    hits = 0
    for row in range(n_images):
        ranked = sorted(range(n_labels), key=lambda c: (-scores[row, c], c))
        hits += sum(labels[row, c] == 1 for c in ranked[:k])
    positives = int((labels == 1).sum())
    precision = hits / (n_images * k)
    recall = hits / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def random_case(seed, n_images=400, n_labels=30, decimals=1, dtype=np.float32):
    """Heavily tied scores; +1/-1/0 labels with an empty column, an all-positive column,
    an all-tied column and images without positives."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n_images, n_labels)), decimals).astype(dtype)
    labels = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(n_images, n_labels),
                        p=[0.6, 0.25, 0.15])
    labels[:, 0] = np.where(labels[:, 0] == 1, -1, labels[:, 0])  # no positive
    labels[:, 1] = np.where(labels[:, 1] == -1, 1, labels[:, 1])  # annotated ones all positive
    scores[:, 2] = 0.5  # one threshold for the whole column
    labels[: n_images // 5] = np.where(labels[: n_images // 5] == 1, 0, labels[: n_images // 5])
    return scores, labels


# --- average precision ---------------------------------------------------------------------

def test_average_precision_hand_worked():
    scores = np.array([[0.9, 0.5, 0.3],
                       [0.8, 0.5, 0.2],
                       [0.7, 0.9, 0.1],
                       [0.6, 0.1, 0.0]])
    labels = np.array([[1, 1, -1],
                       [-1, -1, -1],
                       [1, 0, -1],
                       [-1, 1, -1]], dtype=np.int8)
    # column 0: thresholds 0.9 (TP 1, D 1), 0.8 (1, 2), 0.7 (2, 3), 0.6 (2, 4):
    #   AP = 1/2 * 1/1 + 1/2 * 2/3 = 5/6
    # column 1: the 0.9 entry is unannotated and dropped; the tie at 0.5 is one threshold
    #   (TP 1, D 2), then 0.1 (TP 2, D 3): AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12
    # column 2: no positive -> 0, still counted in the mean
    ap = average_precision_per_label(scores, labels)
    np.testing.assert_allclose(ap, [5 / 6, 7 / 12, 0.0], rtol=0, atol=1e-15)
    assert mean_average_precision(scores, labels) == pytest.approx((5 / 6 + 7 / 12) / 3, abs=1e-15)


def test_average_precision_tie_order_does_not_matter():
    # one tied threshold holding a positive and a negative, then a positive:
    # (TP 1, D 2), (TP 2, D 3) -> AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12 whichever row comes first
    scores = np.array([[0.5], [0.5], [0.2]])
    for labels in (np.array([[1], [-1], [1]]), np.array([[-1], [1], [1]])):
        assert average_precision_per_label(scores, labels)[0] == pytest.approx(7 / 12, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_average_precision_matches_sklearn_per_column(seed, dtype):
    scores, labels = random_case(seed, dtype=dtype)
    expected = lesa_average_precision(scores, labels)
    assert expected[0] == 0.0 and expected[1] == pytest.approx(1.0, abs=1e-12)
    for column_block in (256, 7, 1):
        ap = average_precision_per_label(scores, labels, column_block=column_block)
        np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-9)


def test_average_precision_with_continuous_scores_and_tiles(monkeypatch):
    monkeypatch.setattr(metrics, "TRANSPOSE_TILE_ROWS", 37)
    rng = np.random.default_rng(11)
    scores = rng.standard_normal((1000, 20))
    labels = np.where(rng.random((1000, 20)) < 0.05, 1, -1).astype(np.int8)
    np.testing.assert_allclose(average_precision_per_label(scores, labels, column_block=8),
                               lesa_average_precision(scores, labels), rtol=0, atol=1e-9)


def test_signed_zero_and_integer_scores_tie_like_sklearn():
    scores = np.array([[0.0, 2], [-0.0, 2], [0.0, 1], [-1.0, 3]])
    labels = np.array([[1, 1], [-1, -1], [1, 1], [-1, -1]])
    np.testing.assert_allclose(average_precision_per_label(scores, labels),
                               lesa_average_precision(scores, labels), rtol=0, atol=1e-12)
    integer_scores = np.array([[3, 1], [3, 1], [1, 2], [2, 2]])
    np.testing.assert_allclose(average_precision_per_label(integer_scores, labels),
                               lesa_average_precision(integer_scores, labels), rtol=0, atol=1e-12)


def test_float_labels_are_accepted():
    scores, labels = random_case(5, n_images=50, n_labels=6)
    np.testing.assert_array_equal(average_precision_per_label(scores, labels.astype(np.float32)),
                                  average_precision_per_label(scores, labels))


# --- precision / recall / F1 at K ----------------------------------------------------------

TOP_K_SCORES = np.array([[0.9, 0.1, 0.5, 0.5],
                         [0.2, 0.2, 0.2, 0.2],
                         [0.3, 0.8, 0.1, 0.0]])
TOP_K_LABELS = np.array([[1, -1, -1, 1],
                         [-1, -1, 1, 0],
                         [-1, -1, -1, -1]], dtype=np.int8)  # image 2 has no positive, still kept


@pytest.mark.parametrize("k, expected", [
    # K=2: image 0 takes 0.9 (label 0, +1) and, of the tie at 0.5, label 2 (lower index, -1);
    #      image 1 (all tied) takes labels 0, 1; image 2 takes labels 1, 0. TP = 1,
    #      P = 1 / (3 * 2) = 1/6, R = 1 / 3 positives, F1 = 2 (1/6)(1/3) / (1/2) = 2/9
    (2, (1 / 6, 1 / 3, 2 / 9)),
    # K=3: image 0 takes 0, 2, 3 (TP 2); image 1 takes 0, 1, 2 (TP 1); image 2 none.
    #      P = 3 / 9, R = 3 / 3, F1 = 2 (1/3) / (4/3) = 1/2
    (3, (1 / 3, 1.0, 1 / 2)),
    # K=10 > L=4: every label predicted, P = 3 / (3 * 4), R = 1, F1 = 2 (1/4) / (5/4) = 2/5
    (10, (1 / 4, 1.0, 2 / 5)),
])
def test_precision_recall_f1_hand_worked(k, expected):
    got = precision_recall_f1_at_k(TOP_K_SCORES, TOP_K_LABELS, k)
    assert got == pytest.approx(expected, abs=1e-15)


def test_ties_at_kth_place_go_to_the_lower_label_index():
    scores = np.array([[0.3, 0.7, 0.7, 0.7]])
    assert precision_recall_f1_at_k(scores, np.array([[-1, 1, -1, -1]]), 1)[0] == 1.0
    assert precision_recall_f1_at_k(scores, np.array([[-1, -1, 1, -1]]), 1)[0] == 0.0
    assert precision_recall_f1_at_k(scores, np.array([[-1, -1, -1, 1]]), 2)[0] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_precision_recall_f1_match_reference_loop(seed, monkeypatch):
    monkeypatch.setattr(metrics, "TOP_K_CHUNK_ELEMENTS", 100)  # several row chunks
    scores, labels = random_case(seed, n_images=150, n_labels=12)
    for k in (1, 3, 5, 12, 20):
        got = precision_recall_f1_at_k(scores, labels, k)
        assert got == pytest.approx(reference_precision_recall_f1(scores, labels, k), abs=1e-12)


# --- evaluate, no positives, bad input -----------------------------------------------------

def test_evaluate_reports_percent_and_sizes():
    scores, labels = random_case(7, n_images=120, n_labels=10)
    result = evaluate(scores, labels, ks=(3, 5))
    assert list(result) == ["mAP", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5", "images", "labels"]
    assert result["mAP"] == pytest.approx(100 * lesa_average_precision(scores, labels).mean(),
                                          abs=1e-9)
    for k in (3, 5):
        p, r, f1 = precision_recall_f1_at_k(scores, labels, k)
        assert (result[f"P@{k}"], result[f"R@{k}"], result[f"F1@{k}"]) == pytest.approx(
            (100 * p, 100 * r, 100 * f1), abs=1e-12)
    assert (result["images"], result["labels"]) == (120, 10)


def test_no_positive_anywhere_gives_zeros_not_nan():
    scores = np.random.default_rng(0).random((6, 4))
    labels = -np.ones((6, 4), dtype=np.int8)
    labels[0, 0] = 0
    result = evaluate(scores, labels, ks=(1, 3, 10))
    values = [v for v in result.values()]
    assert not np.isnan(values).any()
    assert all(result[key] == 0.0 for key in result if key not in ("images", "labels"))


def test_a_column_without_positives_counts_as_zero():
    scores = np.array([[0.9, 0.2], [0.1, 0.8]])
    labels = np.array([[1, -1], [-1, -1]])
    assert mean_average_precision(scores, labels) == 0.5


@pytest.mark.parametrize("scores, labels, message", [
    (np.zeros((2, 3)), np.zeros((3, 2)), "shapes"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "nothing to evaluate"),
    (np.array([[np.nan, 1.0]]), np.array([[1, -1]]), "NaN"),
    (np.array([[np.inf, 1.0]]), np.array([[0, -1]]), "NaN or infinite"),
    (np.zeros((1, 2)), np.array([[2, -1]]), r"\+1, -1 or 0"),
    (np.zeros((1, 2)), np.array([[0.5, -1]]), r"\+1, -1 or 0"),
])
def test_bad_input_is_refused(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        evaluate(scores, labels)


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be positive"):
        precision_recall_f1_at_k(TOP_K_SCORES, TOP_K_LABELS, 0)


def test_read_only_column_major_and_reversed_inputs_give_the_same_values():
    scores, labels = random_case(9, n_images=60, n_labels=8)
    expected = evaluate(scores, labels, ks=(1, 3))
    column_major = np.asfortranarray(scores)
    column_major.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evaluate(column_major, labels, ks=(1, 3)) == expected
    # the metrics do not depend on the order of the images; negative strides are fine
    assert evaluate(scores[::-1], labels[::-1], ks=(1, 3)) == pytest.approx(expected, abs=1e-12)
