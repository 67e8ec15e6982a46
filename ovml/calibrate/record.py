"""A stored calibration: per-label Platt maps and the shared map for labels never labelled.

One record calibrates one scorer (a run's head at one alpha, or CLIP-ML): for each label it has
fitted, (mean, spread) of the label's scores over its reference images, (slope, intercept) of
sigmoid(slope (s - mean) / spread + intercept), and `highest`, the largest probability any reference image
reached; plus `shared`, the (slope, intercept) any other label gets after its scores are
standardised over the images at hand (metrics/calibration.py says why). A run keeps its records
in `calibration.json`, keyed by scorer, written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import UsageError
from ..files import write_json
from ..metrics.calibration import expected_f1_levels, label_statistics, sigmoid, standardise
from ..tag.vocabulary import name_key

CALIBRATION_FILE = "calibration.json"
FORMAT = 1


def reference_statistics(scores: np.ndarray) -> Callable[[list[int]], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A `statistics(columns)` for `Calibration.maps` from (m, L) scores of the reference images:
    the columns' (mean, spread, highest z)."""
    def statistics(columns: list[int]):
        mean, spread = label_statistics(scores[:, columns])
        return mean, spread, standardise(scores[:, columns], mean, spread).max(axis=0)
    return statistics


def scorer_key(head: str | None, alpha: float | None) -> str:
    """The record's key: 'head@ALPHA' for a run's head, 'clip-ml' without one."""
    return "clip-ml" if head is None else f"head@{float(alpha or 0.0):g}"


@dataclass
class LabelMaps:
    """(L,) arrays, in a vocabulary's column order: the probability of every label's score."""

    mean: np.ndarray
    spread: np.ndarray
    slope: np.ndarray
    intercept: np.ndarray
    highest: np.ndarray             # the largest probability over the reference images
    fitted: np.ndarray              # bool: the label's own map (else the shared one)
    f1_levels: np.ndarray | None = None  # each label's probability level of best expected F1 over the
                                         # reference images (`auto-f1`; None without reference images)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(n, L) probabilities of (n, L) scores; increasing in the score for each label."""
        z = (scores - self.mean[None]) / self.spread[None]                               # (n, L)
        return sigmoid(self.slope[None] * z + self.intercept[None]).astype(np.float32)

    def choose_f1_levels(self, reference_scores: np.ndarray) -> "LabelMaps":
        """Set each label's `auto-f1` level from its (m, L) scores over the reference images."""
        self.f1_levels = expected_f1_levels(self.probabilities(reference_scores))
        return self


@dataclass
class Calibration:
    """One scorer's calibration (see the module docstring)."""

    scorer: str
    shared: tuple[float, float]
    shared_from: str                                          # what the shared map was fitted on
    labels: dict[str, dict] = field(default_factory=dict)     # name -> mean, spread, slope, intercept, highest, source

    def maps(self, names: list[str],
             statistics: Callable[[list[int]], tuple[np.ndarray, np.ndarray, np.ndarray]] | None) -> LabelMaps:
        """Maps for `names`; labels without their own are standardised by `statistics(columns)`
        -> (mean, spread, highest z) over the images at hand; None when every label has its own."""
        by_key = {name_key(name): entry for name, entry in self.labels.items()}
        own = [by_key.get(name_key(name)) for name in names]
        count = len(names)
        mean, spread, highest_z = np.zeros(count), np.ones(count), np.zeros(count)
        slope, intercept = np.full(count, self.shared[0]), np.full(count, self.shared[1])
        highest = np.zeros(count)
        missing = [j for j, entry in enumerate(own) if entry is None]
        if missing:
            if statistics is None:
                raise UsageError(f"calibration {self.scorer}: no map for {', '.join(names[j] for j in missing[:5])} "
                                 "and no images to standardise their scores on")
            mean[missing], spread[missing], highest_z[missing] = statistics(missing)
            highest[missing] = sigmoid(self.shared[0] * highest_z[missing] + self.shared[1])
        for j, entry in enumerate(own):
            if entry is not None:
                mean[j], spread[j], slope[j], intercept[j] = (entry["mean"], entry["spread"], entry["slope"],
                                                              entry["intercept"])
                highest[j] = entry["highest"]
        return LabelMaps(mean, spread, slope, intercept, highest, np.array([e is not None for e in own]))

    def as_json(self) -> dict:
        return {"shared": {"slope": self.shared[0], "intercept": self.shared[1], "fitted_on": self.shared_from},
                "labels": self.labels}

    @classmethod
    def from_json(cls, scorer: str, entry: dict) -> "Calibration":
        shared = entry["shared"]
        return cls(scorer, (float(shared["slope"]), float(shared["intercept"])), shared.get("fitted_on", ""),
                   dict(entry.get("labels", {})))


def read_calibrations(path: str) -> dict[str, Calibration]:
    """Every record of a calibration file (a run's calibration.json, or `calibrate --out`); {} when absent."""
    if os.path.isdir(path):
        path = os.path.join(path, CALIBRATION_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
        return {key: Calibration.from_json(key, entry) for key, entry in content["scorers"].items()}
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: not a calibration file ({err})") from err


def write_calibration(path: str, calibration: Calibration) -> str:
    """Store `calibration` in the file (or run folder) `path`, beside the records of other scorers."""
    target = os.path.join(path, CALIBRATION_FILE) if os.path.isdir(path) else path
    records = read_calibrations(target)
    records[calibration.scorer] = calibration
    write_json(target, {"format": FORMAT, "scorers": {key: record.as_json() for key, record in records.items()}})
    return target
