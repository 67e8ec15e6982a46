"""The `nuswide` adapter on a miniature NUS-WIDE with the release's quirks (docs/protocol.md, NUS-WIDE)."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from ovml.cache.reader import CacheReader
from ovml.config import ExtractConfig
from ovml.extract.datasets import DatasetError, open_dataset
from ovml.extract.datasets.binary_table import read_binary_table
from ovml.extract.datasets.nuswide import open_nuswide
from ovml.extract.runner import run_extraction
from tests.dataset_layouts import NUS_CONCEPTS, NUS_TAGS, write_nuswide

UNSEEN = ["sky", "computer", "beach", "whales", "dog"]                 # Concepts81 order
SEEN = ["water", "actor", "clouds", "sunset", "tree", "night", "car"]  # TagList order, concepts removed


@pytest.fixture
def nus(tmp_path):
    return write_nuswide(str(tmp_path / "nus"))


def expected_matrix(layout, images: list[str], test: bool) -> np.ndarray:
    rows = []
    for image in images:
        tags = dict(zip(NUS_TAGS, layout.tags[image]))
        concepts = dict(zip(NUS_CONCEPTS, layout.concepts[image]))
        unseen = [2 * concepts[name] - 1 if test else 0 for name in UNSEEN]
        rows.append(unseen + [2 * tags[name] - 1 for name in SEEN])
    return np.array(rows, dtype=np.int8)


def test_columns_are_unseen_concepts_then_seen_tags(nus):
    vocabulary = open_dataset("nuswide", nus.root).vocabulary
    assert vocabulary.names == UNSEEN + SEEN and vocabulary.ids == UNSEEN + SEEN
    assert vocabulary.seen.tolist() == [False] * 5 + [True] * 7


def test_train_has_seen_labels_only_test_has_all(nus):
    source = open_nuswide(nus.root)
    assert list(source.splits) == ["train", "test"]
    for name, images, test in (("train", nus.train, False), ("test", nus.test, True)):
        split = source.splits[name]
        assert split.ids == images
        labels = split.labels(0, len(split))
        assert labels.dtype == np.int8
        assert np.array_equal(labels, expected_matrix(nus, images, test))
        assert np.array_equal(split.labels(2, 5), labels[2:5])


def test_split_lists_match_imagelist_by_file_name_when_prefixes_differ(nus):
    edit_lines(os.path.join(nus.root, "ImageList", "Imagelist.txt"),
               lambda lines: [line.replace(b"C:\\ImageData\\Flickr\\", b"E:\\nus\\") for line in lines])
    split = open_nuswide(nus.root).splits["test"]
    assert split.ids == nus.test
    assert np.array_equal(split.labels(0, len(split)), expected_matrix(nus, nus.test, test=True))


def test_images_are_found_nested_or_flat_and_counted(nus):
    source = open_nuswide(nus.root)
    for name, images in (("train", nus.train), ("test", nus.test)):
        split = source.splits[name]
        stored = [image.replace("/", "_") if image in nus.flat else image for image in images]
        assert split.paths == [os.path.join(nus.root, "Flickr", s) for s in stored]
        counts = source.attrs["splits"][name]
        assert counts["listed"] == len(images)
        assert counts["found"] == len(images) - len(nus.missing.intersection(images))
        assert counts["found_flat"] == len(nus.flat.intersection(images))


def test_attrs_say_what_was_read_and_are_json(nus):
    source = open_nuswide(nus.root)
    described = json.loads(json.dumps(source.describe()))
    assert described["name"] == "nuswide" and described["adapter_version"] >= 1
    assert described["labels"] == {"seen": 7, "unseen": 5}
    assert described["image_list_lines"] == 24 and described["concepts_in_tag_list"] == 3
    assert "NUS_WID_Tags/AllTags1k.txt" in described["files"]


def test_placeholder_check_follows_lesa(nus):
    with open(nus.placeholder, "rb") as handle:
        placeholder = handle.read()
    plain = open_nuswide(nus.root).splits["train"].file_check
    assert plain(b"x" * 4000) == "Flickr placeholder (<= 4000 bytes)"
    assert plain(b"x" * 4001) is None and plain(placeholder) is None
    given = open_nuswide(nus.root, placeholder=nus.placeholder).splits["test"].file_check
    assert given(placeholder).startswith("Flickr placeholder")
    assert given(placeholder + b"\0") is None
    assert pickle.loads(pickle.dumps(given))(placeholder) == given(placeholder)   # decode workers


def test_images_folder_option_and_missing_folder(nus, tmp_path):
    os.rename(os.path.join(nus.root, "Flickr"), str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetError, match="Flickr: image folder not found"):
        open_nuswide(nus.root)
    source = open_nuswide(nus.root, images=str(tmp_path / "elsewhere"))
    assert source.splits["train"].paths[0].startswith(str(tmp_path / "elsewhere"))
    assert source.attrs["splits"]["train"]["found"] == len(nus.train)


def test_table_reader_is_block_size_independent(nus):
    path = os.path.join(nus.root, "NUS_WID_Tags", "AllTags1k.txt")
    expected = np.array([nus.tags[image] for image in sorted(nus.tags)], dtype=np.uint8)
    for block_bytes in (7, 64, 1 << 20):
        assert np.array_equal(read_binary_table(path, 10, 24, "Imagelist.txt", block_bytes), expected)


def edit_lines(path: str, edit) -> None:
    """Rewrite a file's lines (endings kept) through `edit(list of lines) -> list of lines`."""
    with open(path, "rb") as handle:
        lines = handle.read().splitlines(keepends=True)
    with open(path, "wb") as handle:
        handle.write(b"".join(edit(lines)))


LABELS_SKY = "Groundtruth/AllLabels/Labels_sky.txt"


@pytest.mark.parametrize("relative, edit, message", [
    ("Groundtruth/AllLabels/Labels_dog.txt", lambda lines: lines[:-1],
     r"Labels_dog\.txt: 23 lines, expected 24 \(the lines of ImageList/Imagelist\.txt\)$"),
    ("Groundtruth/AllLabels/Labels_dog.txt", lambda lines: lines + [b"1\r\n"], r"Labels_dog\.txt: 25 lines, expected 24"),
    (LABELS_SKY, lambda lines: lines[:4] + [b"2\r\n"] + lines[5:], r"Labels_sky\.txt:5: expected 0 or 1, got '2'$"),
    (LABELS_SKY, lambda lines: lines[:6] + [b"yes\r\n"] + lines[7:], r"Labels_sky\.txt:7: expected 0 or 1, got 'yes'$"),
    (LABELS_SKY, lambda lines: lines[:6] + [b"0.5\r\n"] + lines[7:], r"Labels_sky\.txt:7: expected 0 or 1, got '0.5'$"),
    (LABELS_SKY, lambda lines: lines[:9] + [b"\r\n"] + lines[9:-1], r"Labels_sky\.txt:10: blank line$"),
    ("NUS_WID_Tags/AllTags1k.txt", lambda lines: lines[:2] + [lines[2][2:]] + lines[3:],
     r"AllTags1k\.txt:3: expected 10 values, got 9$"),
    ("ImageList/TrainImagelist.txt", lambda lines: lines[:1] + [b"actor\\9999_1.jpg\r\n"] + lines[2:],
     r"TrainImagelist\.txt:2: 'actor/9999_1\.jpg' is not \(uniquely\) in ImageList/Imagelist\.txt$"),
    ("ImageList/TestImagelist.txt", lambda lines: lines + lines[:1], r"TestImagelist\.txt:11: .* already on line 1$"),
    ("ConceptsList/Concepts81.txt", lambda lines: lines + [b"unicorn\r\n"], r"Labels_unicorn\.txt: file not found$"),
])
def test_malformed_files_fail_naming_file_and_line(nus, relative, edit, message):
    edit_lines(os.path.join(nus.root, relative), edit)
    with pytest.raises(DatasetError, match=message) as raised:
        open_nuswide(nus.root)
    assert "\n" not in str(raised.value)


def test_extraction_marks_small_and_missing_images_not_ok(nus, tiny_clip, tmp_path):
    out = str(tmp_path / "nus.zarr")
    summary = run_extraction(ExtractConfig(dataset="nuswide", root=nus.root, out=out, model=tiny_clip, workers=0,
                                           unit_rows=8, batch_size=8, progress=False))
    reader = CacheReader(out)
    assert reader.names == UNSEEN + SEEN
    bad = nus.missing | nus.small
    for name, images, test in (("train", nus.train, False), ("test", nus.test, True)):
        assert reader.image_ids(name) == images
        assert np.array_equal(reader.read_labels(name), expected_matrix(nus, images, test))
        ok = np.asarray(reader.read(name, "ok", 0, len(images)), dtype=bool)
        assert ok.tolist() == [image not in bad for image in images]
        counts = reader.dataset["splits"][name]
        assert counts["ok"] == int(ok.sum()) and counts["found"] == len(images) - len(nus.missing & set(images))
    with open(summary.errors_file) as handle:
        reasons = {line.split("\t")[1]: line.split("\t")[2].strip() for line in handle}
    assert reasons[next(iter(nus.small))] == "Flickr placeholder (<= 4000 bytes)"
    assert "missing" in reasons[next(iter(nus.missing))]
