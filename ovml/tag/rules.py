"""What counts as present: decision rules over an (images, labels) score block.

Each rule is one class with `decide(scores) -> (n, L) bool` and `describe()`, the line recorded in
every output (a `rule` column, Parquet metadata, tag.json). Rules see one block of images at a
time with every label, never the whole run, so any rule that reads an image's own scores (top-k,
mcut) streams. `probabilities(scores)` is what a calibrated rule (`Calibrated`: `--threshold auto`,
`--precision P`) fills from the label maps ovml/calibrate gives it; other rules leave it None, and
the outputs write it as null. `decisions(scores)` gives both, computing the probabilities once.

Options map to rules through two tables: `THRESHOLD_WORDS` (`--threshold mcut`, `--threshold auto`) and `build_rule`, which also combines rules (`--top-k 5 --threshold 0.2`:
at most five labels, each at least 0.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from ..errors import UsageError, os_reason
from .vocabulary import name_key

DEFAULT_TOP_K = 5   # the rule when no option names one (as `ovml predict`)


class Rule:
    """A decision rule; subclasses define `decide` and `describe`."""

    def decide(self, scores: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def probabilities(self, scores: np.ndarray) -> np.ndarray | None:
        """(n, L) calibrated probabilities, for rules that have them; None here."""
        return None

    def decisions(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(`decide`, `probabilities`) of the same scores, the probabilities computed once."""
        return self.decide(scores), self.probabilities(scores)


@dataclass(frozen=True)
class TopK(Rule):
    """The K best labels of each image."""

    k: int

    def decide(self, scores):
        present = np.zeros(scores.shape, dtype=bool)
        best = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]                  # (n, k)
        np.put_along_axis(present, best, True, axis=1)
        return present

    def describe(self):
        return f"top-k {self.k}"


@dataclass(frozen=True)
class Threshold(Rule):
    """Every label whose score is at least `value`."""

    value: float

    def decide(self, scores):
        return scores >= self.value

    def describe(self):
        return f"threshold {self.value:g}"


@dataclass(frozen=True)
class MCut(Rule):
    """Per image, the labels above the midpoint of the largest gap between its sorted scores
    (parameter-free; an image with one label keeps it)."""

    def decide(self, scores):
        if scores.shape[1] < 2:
            return np.ones(scores.shape, dtype=bool)
        ranked = -np.sort(-scores, axis=1)                                               # (n, L) best first
        gaps = ranked[:, :-1] - ranked[:, 1:]                                            # (n, L-1)
        cut = gaps.argmax(axis=1)                                                        # (n,)
        rows = np.arange(len(scores))
        midpoint = (ranked[rows, cut] + ranked[rows, cut + 1]) / 2                       # (n,)
        return scores > midpoint[:, None]

    def describe(self):
        return "mcut (per image: midpoint of the largest gap between sorted scores)"


@dataclass(frozen=True)
class LabelThresholds(Rule):
    """One threshold per label (`--thresholds FILE`), the default for labels the file leaves out."""

    values: tuple[float, ...]      # (L,) in column order
    source: str                    # the file
    default: float | None          # --threshold, for labels absent from the file

    def decide(self, scores):
        return scores >= np.asarray(self.values, dtype=scores.dtype)[None]

    def describe(self):
        default = f", {self.default:g} elsewhere" if self.default is not None else ""
        return f"thresholds from {self.source}{default}"


@dataclass(frozen=True)
class AllOf(Rule):
    """Present where every rule says present."""

    rules: tuple[Rule, ...]

    def decide(self, scores):
        return self.decisions(scores)[0]

    def decisions(self, scores):
        present, probabilities = self.rules[0].decisions(scores)
        for rule in self.rules[1:]:
            decided, found = rule.decisions(scores)
            present &= decided
            probabilities = found if probabilities is None else probabilities
        return present, probabilities

    def probabilities(self, scores):
        found = [rule.probabilities(scores) for rule in self.rules if isinstance(rule, Calibrated)]
        return found[0] if found else None

    def describe(self):
        return " and ".join(rule.describe() for rule in self.rules)


class Calibrated(Rule):
    """Present where the calibrated probability reaches `level`: 0.5 for `--threshold auto`, P for
    `--precision P` (a label whose probability reaches P has precision at least P when calibrated)."""

    def __init__(self, maps=None, level: float = 0.5, word: str = "auto"):
        self.maps, self.level, self.word = maps, level, word    # maps: calibrate.record.LabelMaps, set by the plan

    def probabilities(self, scores):
        if self.maps is None:
            raise UsageError(f"--threshold {self.word}: no calibration was loaded for these labels")
        return self.maps.probabilities(scores)

    def decide(self, scores):
        return self.decisions(scores)[0]

    def decisions(self, scores):
        probabilities = self.probabilities(scores)
        if self.word != "auto-f1":
            return probabilities >= self.level, probabilities
        if self.maps.f1_levels is None:
            raise UsageError("--threshold auto-f1: no reference images to choose each label's level on (give a "
                             "head with validation images, or --cache)")
        return probabilities >= self.maps.f1_levels[None], probabilities

    def unreachable(self, names: list[str]) -> list[str]:
        """The labels whose probability stayed under `level` on every reference image."""
        return [] if self.maps is None else [n for n, top in zip(names, self.maps.highest) if top < self.level]

    def describe(self):
        if self.word == "auto-f1":
            return "auto-f1 (calibrated probability >= each label's level of best expected F1 on the reference images)"
        return ("auto (calibrated probability >= 0.5)" if self.word == "auto"
                else f"precision {self.level:g} (calibrated probability >= {self.level:g})")


THRESHOLD_WORDS: dict[str, Callable[[], Rule]] = {"mcut": MCut, "auto": Calibrated,
                                                  "auto-f1": partial(Calibrated, word="auto-f1")}


def threshold_rule(value: str | float) -> Rule:
    """`--threshold X` (a number) or one of THRESHOLD_WORDS."""
    if isinstance(value, str) and value.strip().lower() in THRESHOLD_WORDS:
        return THRESHOLD_WORDS[value.strip().lower()]()
    try:
        return Threshold(float(value))
    except ValueError:
        raise UsageError(f"--threshold: expected a number or one of {', '.join(THRESHOLD_WORDS)}, "
                         f"got {value!r}") from None


def read_thresholds(path: str, names: list[str], default: Rule | None) -> tuple[LabelThresholds, list[str]]:
    """`name,threshold` lines (blank and # lines skipped) -> a LabelThresholds over `names`, and
    notes on the file's names that match no label."""
    column = {name_key(name): j for j, name in enumerate(names)}
    values: list[float | None] = [None] * len(names)
    unknown = []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = list(handle)
    except OSError as err:
        raise UsageError(f"{path}: cannot read the thresholds file ({os_reason(err)})") from err
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(",")
        try:
            threshold = float(value)
        except ValueError:
            raise UsageError(f"{path}:{number}: expected 'name,threshold', got {line!r}") from None
        if name_key(name) in column:
            values[column[name_key(name)]] = threshold
        else:
            unknown.append(name.strip())
    missing = [name for name, value in zip(names, values) if value is None]
    fallback = default.value if isinstance(default, Threshold) else None
    if missing and fallback is None:
        raise UsageError(f"{path}: no threshold for {len(missing)} label(s) ({', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}); add them or give --threshold X for the rest")
    notes = [f"{path}: {len(unknown)} name(s) match no label: {', '.join(unknown[:10])}"] if unknown else []
    filled = tuple(fallback if value is None else value for value in values)
    return LabelThresholds(filled, path, fallback if missing else None), notes


def build_rule(names: list[str], top_k: int | None = None, threshold: str | float | None = None,
               thresholds_file: str | None = None, precision: float | None = None) -> tuple[Rule, list[str]]:
    """The rule the options describe (top-k 5 when none does), and notes on the thresholds file."""
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    if precision is not None:
        if not 0 < precision < 1:
            raise UsageError(f"--precision must lie between 0 and 1, got {precision}")
        if thresholds_file:
            raise UsageError("--precision and --thresholds both set each label's threshold; give one")
        threshold = None
    notes: list[str] = []
    per_image = threshold_rule(threshold) if threshold is not None else None
    if precision is not None:
        per_image = Calibrated(level=precision, word="precision")
    rules: list[Rule] = [TopK(top_k)] if top_k is not None else []
    if thresholds_file:
        if per_image is not None and not isinstance(per_image, Threshold):
            raise UsageError(f"--thresholds gives each label its own threshold; --threshold {threshold} "
                             "cannot fill the labels it leaves out (give a number)")
        by_label, notes = read_thresholds(thresholds_file, names, per_image)
        rules.append(by_label)
    elif per_image is not None:
        rules.append(per_image)
    if not rules:
        return TopK(DEFAULT_TOP_K), notes
    return (rules[0] if len(rules) == 1 else AllOf(tuple(rules))), notes
