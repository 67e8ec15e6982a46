"""The `folder` dataset: `classes.csv` (name,seen) and `labels.csv` (path,split,labels) under ROOT.

`labels` is the image's positive label names joined by `;`; every other label is an annotated
negative. Names match exactly; any problem is an error naming the file and line.
"""
from __future__ import annotations

import csv
import os

import numpy as np

from .base import ArraySplit, DatasetSource, Vocabulary, file_error

ADAPTER_VERSION = 1


def read_rows(path: str, columns: tuple[str, ...]):
    """Yield (line number, row dict) from a CSV with a header that must hold `columns`."""
    if not os.path.isfile(path):
        raise file_error(path, None, "file not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise file_error(path, 1, f"missing column(s) {', '.join(missing)} (header: {','.join(header)})")
        for row in reader:
            if None in row or any(row[c] is None for c in columns):
                raise file_error(path, reader.line_num, f"expected {len(header)} columns")
            yield reader.line_num, row


def read_classes(path: str) -> Vocabulary:
    """Parse `classes.csv`."""
    names, seen = [], []
    for line, row in read_rows(path, ("name", "seen")):
        name, flag = row["name"].strip(), row["seen"].strip()
        if not name:
            raise file_error(path, line, "empty class name")
        if name in names:
            raise file_error(path, line, f"class {name!r} listed twice")
        if flag not in ("0", "1"):
            raise file_error(path, line, f"seen must be 1 or 0, got {flag!r}")
        names.append(name)
        seen.append(flag == "1")
    if not names:
        raise file_error(path, None, "no classes")
    return Vocabulary(names, list(names), np.array(seen, dtype=bool))


def read_labels(path: str, vocabulary: Vocabulary, root: str) -> dict[str, ArraySplit]:
    """Parse `labels.csv` into one split per split name, in order of first appearance."""
    column = {name: j for j, name in enumerate(vocabulary.names)}
    rows: dict[str, list] = {}
    for line, row in read_rows(path, ("path", "split", "labels")):
        image, split = row["path"].strip(), row["split"].strip()
        if not image or not split:
            raise file_error(path, line, "empty path or split")
        vector = np.full(len(vocabulary), -1, dtype=np.int8)
        for name in filter(None, (n.strip() for n in row["labels"].split(";"))):
            if name not in column:
                raise file_error(path, line, f"unknown label {name!r} (not in classes.csv)")
            vector[column[name]] = 1
        rows.setdefault(split, []).append((image, vector))
    if not rows:
        raise file_error(path, None, "no images")
    return {split: ArraySplit(split, [image for image, _ in items],
                              [os.path.join(root, image) for image, _ in items],
                              np.stack([vector for _, vector in items]))
            for split, items in rows.items()}


def open_folder(root: str) -> DatasetSource:
    """Read a folder dataset; nothing is decoded yet."""
    classes, labels = os.path.join(root, "classes.csv"), os.path.join(root, "labels.csv")
    vocabulary = read_classes(classes)
    splits = read_labels(labels, vocabulary, root)
    attrs = {"adapter_version": ADAPTER_VERSION, "files": ["classes.csv", "labels.csv"],
             "labels": {"seen": int(vocabulary.seen.sum()), "unseen": int((~vocabulary.seen).sum())},
             "splits": {name: {"listed": len(split)} for name, split in splits.items()}}
    return DatasetSource("folder", root, vocabulary, splits, attrs)
