"""The `coco` dataset: COCO 2017 instance annotations as multi-label image labels.

Columns: the 80 categories by ascending category id, names from the json. An image is +1 for
every category with at least one annotation on it (crowd annotations included) and -1 for every
other category (COCO annotates all 80 exhaustively); images without any annotation are listed
too, all -1. Unseen: the category names in the `unseen` file (one per line, `#` comments), by
default the 15 unseen classes of the 65/15 zero-shot detection split (`coco_unseen_65_15.txt`).
Splits `train` and `val`, those whose `annotations/instances_<split>2017.json` exists; images in
the json's `images` order, at `<root or images>/<split>2017/<file_name>`.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .base import ArraySplit, DatasetSource, Vocabulary, file_error
from .textfiles import folder_names, require_file

ADAPTER_VERSION = 1
SPLITS = {"train": "train2017", "val": "val2017"}
ANNOTATIONS = "annotations/instances_{}.json"
DEFAULT_UNSEEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coco_unseen_65_15.txt")


def read_instances(path: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]], list[tuple[int, int]]]:
    """(categories (id, name) by id, images (id, file_name), annotations (image id, category id))."""
    with open(require_file(path), encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise file_error(path, err.lineno, f"not valid JSON ({err.msg})") from None
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        images = [(int(image["id"]), str(image["file_name"])) for image in data["images"]]
        pairs = [(int(a["image_id"]), int(a["category_id"])) for a in data["annotations"]]
    except (KeyError, TypeError, ValueError) as err:
        raise file_error(path, None, f"not a COCO instances file ({type(err).__name__}: {err})") from None
    return categories, images, pairs


def label_matrix(path: str, categories: list[tuple[int, str]], images: list[tuple[int, str]],
                 pairs: list[tuple[int, int]]) -> np.ndarray:
    """(images, categories) int8: +1 where an annotation names the category, else -1."""
    row_of: dict[int, int] = {}
    for row, (image_id, _) in enumerate(images):
        if row_of.setdefault(image_id, row) != row:
            raise file_error(path, None, f"image id {image_id} listed twice")
    column_of = {category_id: column for column, (category_id, _) in enumerate(categories)}
    rows = np.array([row_of.get(image_id, -1) for image_id, _ in pairs], dtype=np.int64)
    columns = np.array([column_of.get(category_id, -1) for _, category_id in pairs], dtype=np.int64)
    if (rows < 0).any():
        unknown = pairs[int(np.argmax(rows < 0))][0]
        raise file_error(path, None, f"an annotation names unknown image id {unknown}")
    if (columns < 0).any():
        unknown = pairs[int(np.argmax(columns < 0))][1]
        raise file_error(path, None, f"an annotation names unknown category id {unknown}")
    matrix = np.full((len(images), len(categories)), -1, dtype=np.int8)     # (N, 80)
    matrix[rows, columns] = 1
    return matrix


def read_unseen_names(path: str, names: list[str]) -> set[str]:
    """The category names listed in `path` (one per line; blank lines and `#` comments skipped)."""
    unseen: dict[str, int] = {}
    with open(require_file(path), encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if name not in names:
                raise file_error(path, number, f"unknown COCO category {name!r}")
            if unseen.setdefault(name, number) != number:
                raise file_error(path, number, f"{name!r} already on line {unseen[name]}")
    if not unseen:
        raise file_error(path, None, "no category names")
    return set(unseen)


def open_coco(root: str, images: str | None = None, unseen: str | None = None) -> DatasetSource:
    """Read COCO 2017 at `root` (images under `<root or images>/<split>2017/`); nothing is decoded.

    `unseen`: file of unseen category names [default: the 65/15 split's 15].
    """
    categories, first_file, splits, counts, files = None, None, {}, {}, []
    for name, folder_name in SPLITS.items():
        relative = ANNOTATIONS.format(folder_name)
        path = os.path.join(root, relative)
        if not os.path.isfile(path):
            continue
        split_categories, split_images, pairs = read_instances(path)
        if categories is not None and split_categories != categories:
            raise file_error(path, None, f"categories differ from those of {first_file}")
        categories, first_file = split_categories, first_file or relative
        folder = os.path.join(images or root, folder_name)
        present = folder_names(folder)
        file_names = [file_name for _, file_name in split_images]
        matrix = label_matrix(path, categories, split_images, pairs)
        splits[name] = ArraySplit(name, file_names, [os.path.join(folder, f) for f in file_names], matrix)
        counts[name] = {"listed": len(file_names), "found": sum(f in present for f in file_names),
                        "annotations": len(pairs),
                        "images_without_annotations": int((matrix < 0).all(axis=1).sum())}
        files.append(relative)
    if not splits:
        raise file_error(os.path.join(root, ANNOTATIONS.format("{train,val}2017")), None, "no such file")
    names = [category_name for _, category_name in categories]
    unseen_names = read_unseen_names(unseen or DEFAULT_UNSEEN, names)
    vocabulary = Vocabulary(names, list(names), np.array([n not in unseen_names for n in names]))
    shipped = os.path.basename(DEFAULT_UNSEEN) + " (shipped)"
    attrs = {"adapter_version": ADAPTER_VERSION, "files": files, "images": os.path.abspath(images or root),
             "unseen_file": os.path.abspath(unseen) if unseen else shipped,
             "labels": {"seen": int(vocabulary.seen.sum()), "unseen": len(unseen_names)},
             "splits": counts}
    return DatasetSource("coco", root, vocabulary, splits, attrs)
