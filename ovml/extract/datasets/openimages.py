"""The `openimages` dataset: Open Images v4 with the 2018_04 label files, as LESA labels it
(docs/protocol.md, Open Images v4).

Columns (7,586): the 7,186 MIDs of `classes-trainable.txt` in file order (seen), then the 400
unseen MIDs `unseen_labels[top_400_unseen]` in top-400 order. `unseen_labels` is read from
`unseen_labels.txt` (one MID per line) when present, else from LESA's `unseen_labels.pkl`
through an unpickler that can build a string array and nothing else. Names come from
`class-descriptions.csv` by MID (names repeat, MIDs do not).

Splits `train`, `validation`, `test`: those whose `<split>-annotations-human-imagelabels.csv`
exists; labels +1 (Confidence 1), -1 (Confidence 0), 0 (no row); images in order of first
appearance in the CSV, at `<root or images>/<split>/<ImageID>.jpg`.
"""
from __future__ import annotations

import csv
import os
import resource

import numpy as np

from .base import DatasetSource, SparseSplit, Vocabulary, file_error
from .openimages_labels import read_image_labels
from .safe_pickle import load_string_list
from .textfiles import folder_names, read_lines, read_unique_lines, require_file

ADAPTER_VERSION = 1
TRAINABLE = "classes-trainable.txt"
DESCRIPTIONS = "class-descriptions.csv"
UNSEEN_TEXT = "unseen_labels.txt"
UNSEEN_PICKLE = "unseen_labels.pkl"
TOP_UNSEEN = "top_400_unseen.csv"
SPLITS = ("train", "validation", "test")
ANNOTATIONS = "{}-annotations-human-imagelabels.csv"


def read_descriptions(path: str) -> dict[str, str]:
    """MID -> display name from the header-less `MID,name` CSV (quoted names with commas and
    doubled quotes parsed as CSV; surrounding spaces dropped)."""
    names: dict[str, str] = {}
    with open(require_file(path), encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise file_error(path, reader.line_num, f"expected 2 fields MID,name, got {len(row)}")
            mid = row[0].strip()
            if mid in names:
                raise file_error(path, reader.line_num, f"MID {mid} listed twice")
            names[mid] = row[1].strip()
    return names


def read_top_indices(path: str, candidates: int) -> list[int]:
    """The indices (into the unseen candidates) of `top_400_unseen.csv`, in file order."""
    line_of: dict[int, int] = {}
    for number, line in enumerate(read_lines(path), start=1):
        try:
            index = int(line)
        except ValueError:
            raise file_error(path, number, f"expected an integer index, got {line!r}") from None
        if not 0 <= index < candidates:
            raise file_error(path, number, f"index {index} outside the {candidates} unseen candidates")
        if line_of.setdefault(index, number) != number:
            raise file_error(path, number, f"index {index} already on line {line_of[index]}")
    return list(line_of)


def read_unseen(root: str) -> tuple[list[str], str]:
    """(the 400 unseen MIDs in top-400 order, the file the candidates came from)."""
    text, pickled = os.path.join(root, UNSEEN_TEXT), os.path.join(root, UNSEEN_PICKLE)
    if os.path.isfile(text):
        candidates, source = read_unique_lines(text), UNSEEN_TEXT
    elif os.path.isfile(pickled):
        candidates, source = load_string_list(pickled), UNSEEN_PICKLE
    else:
        raise file_error(pickled, None, f"file not found (nor {UNSEEN_TEXT})")
    indices = read_top_indices(os.path.join(root, TOP_UNSEEN), len(candidates))
    chosen = [candidates[index] for index in indices]
    if len(set(chosen)) != len(chosen):
        raise file_error(os.path.join(root, source), None, f"{TOP_UNSEEN} picks a MID listed twice")
    return chosen, source


def read_vocabulary(root: str) -> tuple[Vocabulary, str]:
    """(seen then unseen label columns, the unseen candidates' file)."""
    seen = read_unique_lines(os.path.join(root, TRAINABLE))
    unseen, source = read_unseen(root)
    overlap = set(seen).intersection(unseen)
    if overlap:
        raise file_error(os.path.join(root, source), None,
                         f"unseen MID {sorted(overlap)[0]} is also in {TRAINABLE}")
    names_path = os.path.join(root, DESCRIPTIONS)
    names = read_descriptions(names_path)
    for mid, listed_in in [(mid, TRAINABLE) for mid in seen] + [(mid, source) for mid in unseen]:
        if mid not in names:
            raise file_error(names_path, None, f"no name for MID {mid} (listed in {listed_in})")
    mids = seen + unseen
    flags = np.array([True] * len(seen) + [False] * len(unseen))
    return Vocabulary([names[mid] for mid in mids], mids, flags), source


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def open_openimages(root: str, images: str | None = None) -> DatasetSource:
    """Read Open Images v4 at `root` (images under `<root or images>/<split>/`); nothing is decoded."""
    vocabulary, unseen_source = read_vocabulary(root)
    column_of = {mid: column for column, mid in enumerate(vocabulary.ids)}
    splits, counts, files = {}, {}, [TRAINABLE, DESCRIPTIONS, unseen_source, TOP_UNSEEN]
    for name in SPLITS:
        path = os.path.join(root, ANNOTATIONS.format(name))
        if not os.path.isfile(path):
            continue
        labels = read_image_labels(path, column_of)
        folder = os.path.join(images or root, name)
        present = folder_names(folder)
        splits[name] = SparseSplit(name, labels.ids, [os.path.join(folder, f"{i}.jpg") for i in labels.ids],
                                   labels.indptr, labels.columns, labels.values, len(vocabulary))
        counts[name] = {"listed": len(labels.ids), "found": sum(f"{i}.jpg" in present for i in labels.ids),
                        "images_without_labels": int((np.diff(labels.indptr) == 0).sum()),
                        "rows": labels.rows, "rows_ignored": labels.rows_ignored,
                        "rows_repeated": labels.rows_repeated, "parse_seconds": round(labels.seconds, 2)}
        files.append(ANNOTATIONS.format(name))
    if not splits:
        raise file_error(os.path.join(root, ANNOTATIONS.format("{train,validation,test}")), None, "no such file")
    attrs = {"adapter_version": ADAPTER_VERSION, "files": files,
             "images": os.path.abspath(images or root),
             "labels": {"seen": int(vocabulary.seen.sum()), "unseen": int((~vocabulary.seen).sum())},
             "peak_rss_mb": peak_rss_mb(), "splits": counts}
    return DatasetSource("openimages", root, vocabulary, splits, attrs)
