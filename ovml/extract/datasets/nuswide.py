"""The `nuswide` dataset: NUS-WIDE's release files, labelled as LESA does (docs/protocol.md, NUS-WIDE).

Columns (1006): the 81 concepts of `ConceptsList/Concepts81.txt` in that order (unseen, human
ground truth `Groundtruth/AllLabels/Labels_<concept>.txt`), then the 925 tags of
`NUS_WID_Tags/TagList1k.txt` that are not concepts, in TagList order (seen, Flickr tags
`AllTags1k.txt`); LESA's GZSL order [81 unseen, 925 seen]. Train images carry only the seen
columns (unseen = 0, not annotated); test images carry all 1006, as +1/-1.

Row i of `Imagelist.txt`, `AllTags1k.txt` and every `Labels_*.txt` is the same image; the
official `TrainImagelist.txt` / `TestImagelist.txt` pick the splits' images, in their order.
Images lie under `Flickr/<concept dir>/<file>` or, as often re-distributed, flat as
`<concept dir>_<file>`; the layout is decided per image.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from .base import ArraySplit, DatasetSource, Vocabulary, file_error
from .binary_table import read_binary_table
from .textfiles import folder_names, read_lines, read_unique_lines, require_file

ADAPTER_VERSION = 1
PLACEHOLDER_MAX_BYTES = 4000   # LESA keeps a file only when it is larger (extractor :114-133)
WINDOWS_PREFIX = re.compile(r"^[A-Za-z]:\\ImageData\\Flickr\\", re.IGNORECASE)

IMAGE_LIST = "ImageList/Imagelist.txt"
SPLIT_LISTS = {"train": "ImageList/TrainImagelist.txt", "test": "ImageList/TestImagelist.txt"}
TAG_LIST = "NUS_WID_Tags/TagList1k.txt"
TAG_LABELS = "NUS_WID_Tags/AllTags1k.txt"
CONCEPT_LIST = "ConceptsList/Concepts81.txt"
CONCEPT_LABELS = "Groundtruth/AllLabels/Labels_{}.txt"


@dataclass(frozen=True)
class FlickrPlaceholderCheck:
    """Rejects Flickr's "photo unavailable" placeholder as LESA does: any file of <= 4000 bytes,
    and any file byte-identical to a given placeholder image. Picklable, for decode workers."""

    placeholder: bytes | None = None

    def __call__(self, data: bytes) -> str | None:
        if len(data) <= PLACEHOLDER_MAX_BYTES:
            return f"Flickr placeholder (<= {PLACEHOLDER_MAX_BYTES} bytes)"
        if self.placeholder is not None and data == self.placeholder:
            return "Flickr placeholder (identical to the placeholder file)"
        return None


def read_bytes(path: str) -> bytes:
    """The whole content of a (small) file."""
    with open(require_file(path), "rb") as handle:
        return handle.read()


def relative_path(listed: str) -> str:
    """`actor/0001_2124494179.jpg` from `C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg`,
    `actor\\0001_2124494179.jpg` or `actor/0001_2124494179.jpg`."""
    return WINDOWS_PREFIX.sub("", listed.strip()).replace("\\", "/").lstrip("/")


class ImageRows:
    """Row of each image in `Imagelist.txt`: by relative path, else by file name when that is
    unique (LESA matches file names; a path with an unexpected prefix still finds its row)."""

    def __init__(self, path: str):
        self.by_path: dict[str, int] = {}
        for row, listed in enumerate(read_lines(path)):
            relative = relative_path(listed)
            if self.by_path.setdefault(relative, row) != row:
                raise file_error(path, row + 1, f"{relative!r} already on line {self.by_path[relative] + 1}")
        self.by_name: dict[str, int] | None = None      # built on the first path that is not found
        self.count = len(self.by_path)

    def row(self, relative: str) -> int:
        """The image's row, or -1 when it is not listed (or its file name is ambiguous)."""
        if relative in self.by_path:
            return self.by_path[relative]
        if self.by_name is None:
            self.by_name = {}
            for listed, row in self.by_path.items():
                name = os.path.basename(listed)
                self.by_name[name] = -1 if name in self.by_name else row
        return self.by_name.get(os.path.basename(relative), -1)


def read_split_list(path: str, rows: ImageRows) -> tuple[list[str], np.ndarray]:
    """(relative paths, their Imagelist rows) of one official split list, in its order."""
    ids, indices, seen = [], [], {}
    for number, listed in enumerate(read_lines(path), start=1):
        relative = relative_path(listed)
        row = rows.row(relative)
        if row < 0:
            raise file_error(path, number, f"{relative!r} is not (uniquely) in {IMAGE_LIST}")
        if seen.setdefault(relative, number) != number:
            raise file_error(path, number, f"{relative!r} already on line {seen[relative]}")
        ids.append(relative)
        indices.append(row)
    return ids, np.array(indices, dtype=np.int64)


def locate_images(folder: str, ids: list[str]) -> tuple[list[str], int, int]:
    """(path of each image, how many exist, how many of those are flat): `folder/<id>` when it
    exists, else `folder/<id with / as _>` when that exists, else `folder/<id>` (missing).
    One directory listing per folder instead of a stat per image."""
    flat_names = folder_names(folder)
    nested = {f"{sub}/{name}" for sub in {os.path.dirname(i) for i in ids if "/" in i}
              for name in folder_names(os.path.join(folder, sub))}
    paths, found, flat = [], 0, 0
    for image in ids:
        flat_name = image.replace("/", "_")
        if image not in nested and flat_name in flat_names:
            paths.append(os.path.join(folder, flat_name))
            flat += 1
        else:
            paths.append(os.path.join(folder, image))
        found += image in nested or flat_name in flat_names
    return paths, found, flat


def read_ground_truth(root: str, concepts: list[str], image_count: int) -> np.ndarray:
    """(images, 81) uint8 human ground truth, concept columns in Concepts81 order."""
    truth = np.zeros((image_count, len(concepts)), dtype=np.uint8)
    for column, concept in enumerate(concepts):
        path = os.path.join(root, CONCEPT_LABELS.format(concept))
        truth[:, column] = read_binary_table(path, 1, image_count, IMAGE_LIST)[:, 0]
    return truth


def open_nuswide(root: str, images: str | None = None, placeholder: str | None = None) -> DatasetSource:
    """Read NUS-WIDE at `root` (images under `root/Flickr` or `images`); nothing is decoded.

    `placeholder`: Flickr's "photo unavailable" image; files identical to it are rejected at
    decode time, as are all files of <= 4000 bytes.
    """
    folder = images or os.path.join(root, "Flickr")
    if not os.path.isdir(folder):
        raise file_error(folder, None, "image folder not found (give the images' folder with --images)")
    check = FlickrPlaceholderCheck(read_bytes(placeholder) if placeholder else None)
    tags = read_unique_lines(os.path.join(root, TAG_LIST))
    concepts = read_unique_lines(os.path.join(root, CONCEPT_LIST))
    concept_set = set(concepts)
    seen_tags = [column for column, tag in enumerate(tags) if tag not in concept_set]
    names = concepts + [tags[column] for column in seen_tags]
    vocabulary = Vocabulary(names, list(names), np.array([False] * len(concepts) + [True] * len(seen_tags)))

    rows = ImageRows(os.path.join(root, IMAGE_LIST))
    tag_labels = read_binary_table(os.path.join(root, TAG_LABELS), len(tags), rows.count, IMAGE_LIST)
    truth = read_ground_truth(root, concepts, rows.count)

    splits, counts = {}, {}
    for name, list_file in SPLIT_LISTS.items():
        ids, indices = read_split_list(os.path.join(root, list_file), rows)
        matrix = np.zeros((len(ids), len(vocabulary)), dtype=np.int8)    # (N, 81 + 925)
        matrix[:, len(concepts):] = tag_labels[np.ix_(indices, seen_tags)].astype(np.int8) * 2 - 1
        if name == "test":
            matrix[:, :len(concepts)] = truth[indices].astype(np.int8) * 2 - 1
        paths, found, flat = locate_images(folder, ids)
        splits[name] = ArraySplit(name, ids, paths, matrix, check)
        counts[name] = {"listed": len(ids), "found": found, "found_flat": flat,
                        "labelled": "seen" if name == "train" else "seen+unseen"}
    files = [IMAGE_LIST, *SPLIT_LISTS.values(), TAG_LIST, TAG_LABELS, CONCEPT_LIST,
             CONCEPT_LABELS.format("<concept>")]
    attrs = {"adapter_version": ADAPTER_VERSION, "files": files, "images": os.path.abspath(folder),
             "image_list_lines": rows.count, "tags": len(tags), "concepts": len(concepts),
             "concepts_in_tag_list": len(tags) - len(seen_tags),
             "labels": {"seen": len(seen_tags), "unseen": len(concepts)},
             "placeholder": os.path.abspath(placeholder) if placeholder else None,
             "splits": counts}
    return DatasetSource("nuswide", root, vocabulary, splits, attrs)
