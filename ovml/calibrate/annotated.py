"""What `ovml calibrate` fits from, whichever source the annotated images come from (a cache,
annotations.py; image files, images.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..extract.add_labels import annotation_lines
from .record import Calibration


@dataclass
class Annotated:
    """The annotated images' scores and labels, and what standardises them."""

    names: list[str]             # the labels calibrated, in column order
    scores: np.ndarray           # (n, L) the scorer's scores of the annotated images
    labels: np.ndarray           # (n, L) ±1
    reference: np.ndarray        # (m, L) scores of the reference images (mean and spread per label)
    base: Calibration            # the scorer's calibration the new maps join (and are drawn towards)
    note: str = ""               # how the reference was chosen, when not a cache's first rows


def check_both_kinds(path: str, names: list[str], labels: np.ndarray) -> None:
    """Refuse, naming them, labels with no positive or no negative among the annotated images."""
    lacking = [f"{name} (no {'positive' if not (labels[:, j] == 1).any() else 'negative'})"
               for j, name in enumerate(names) if not ((labels[:, j] == 1).any() and (labels[:, j] == -1).any())]
    if lacking:
        raise UsageError(f"{path}: cannot calibrate {len(lacking)} label(s): {', '.join(lacking)}")


def labelled_lines(path: str, keys: tuple[str, ...] = ("id",)) -> tuple[list[str], list[tuple[int, str, list[str]]]]:
    """An annotations file's label names (first-seen order; a file with none is refused) and its
    lines (line number, image key, positive labels)."""
    _, lines = annotation_lines(path, keys)
    names = list(dict.fromkeys(name for _, _, labels in lines for name in labels))
    if not names:
        raise UsageError(f"{path}: no labels")
    return names, lines


def signs(names: list[str], positives) -> list[int]:
    """One image's ±1 labels over `names`: +1 for its positives, -1 (a negative) for the rest."""
    return [1 if name in positives else -1 for name in names]
