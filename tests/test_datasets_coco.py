"""The `coco` adapter on a miniature COCO 2017 (80 real category ids, listed shuffled)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ovml.extract.datasets import DatasetError, open_dataset
from ovml.extract.datasets.coco import open_coco
from tests.dataset_layouts import COCO_IDS, COCO_NAMES, write_coco

UNSEEN_65_15 = {"airplane", "train", "parking meter", "cat", "bear", "suitcase", "frisbee", "snowboard",
                "fork", "sandwich", "hot dog", "toilet", "mouse", "toaster", "hair drier"}


@pytest.fixture
def coco(tmp_path):
    return write_coco(str(tmp_path / "coco"))


def expected_matrix(positives: dict[str, set[str]]) -> np.ndarray:
    by_id = [name for _, name in sorted(zip(COCO_IDS, COCO_NAMES))]
    return np.array([[1 if name in names else -1 for name in by_id] for names in positives.values()], dtype=np.int8)


def test_columns_by_category_id_with_the_65_15_split(coco):
    vocabulary = open_dataset("coco", coco.root).vocabulary
    assert vocabulary.names == COCO_NAMES and vocabulary.ids == COCO_NAMES   # COCO_NAMES is in id order
    assert vocabulary.seen.tolist() == [name not in UNSEEN_65_15 for name in COCO_NAMES]
    assert int(vocabulary.seen.sum()) == 65


def test_labels_positive_per_annotated_category_else_negative(coco):
    source = open_coco(coco.root)
    assert list(source.splits) == ["train", "val"]
    for name, positives in coco.positives.items():
        split = source.splits[name]
        assert split.ids == list(positives)
        assert split.paths == [os.path.join(coco.root, f"{name}2017", f) for f in positives]
        expected = expected_matrix(positives)
        if name == "train":                                 # zero-shot: unseen columns never annotated
            expected[:, ~source.vocabulary.seen] = 0
        assert np.array_equal(split.labels(0, len(split)), expected)
        counts = source.attrs["splits"][name]
        assert counts["listed"] == len(positives) and counts["found"] == len(positives) - 1
        assert counts["images_without_annotations"] == sum(not names for names in positives.values()) >= 1
    described = json.loads(json.dumps(source.describe()))
    assert described["labels"] == {"seen": 65, "unseen": 15}
    assert described["unseen_file"] == "coco_unseen_65_15.txt (shipped)"


def test_unseen_file_and_images_folder_options(coco, tmp_path):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("# my split\ncat\n\ndog\r\n")
    os.makedirs(tmp_path / "pictures")
    os.rename(os.path.join(coco.root, "val2017"), str(tmp_path / "pictures" / "val2017"))
    os.remove(os.path.join(coco.root, "annotations", "instances_train2017.json"))
    source = open_coco(coco.root, images=str(tmp_path / "pictures"), unseen=str(unseen))
    assert list(source.splits) == ["val"]
    assert [n for n, seen in zip(source.vocabulary.names, source.vocabulary.seen) if not seen] == ["cat", "dog"]
    assert source.attrs["splits"]["val"]["found"] == len(coco.positives["val"]) - 1
    assert source.splits["val"].paths[0].startswith(str(tmp_path / "pictures" / "val2017"))


@pytest.mark.parametrize("text, message", [
    ("cat\nunicorn\n", r"unseen\.txt:2: unknown COCO category 'unicorn'$"),
    ("# only a comment\n", r"unseen\.txt: no category names$"),
    ("cat\ncat\n", r"unseen\.txt:2: 'cat' already on line 1$"),
])
def test_bad_unseen_file_fails_naming_file_and_line(coco, tmp_path, text, message):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text(text)
    with pytest.raises(DatasetError, match=message):
        open_coco(coco.root, unseen=str(unseen))


def test_malformed_annotations_fail_naming_the_file(coco):
    path = os.path.join(coco.root, "annotations", "instances_val2017.json")
    with open(path) as handle:
        data = json.load(handle)
    data["annotations"][0]["category_id"] = 12                           # an id COCO skips
    with open(path, "w") as handle:
        json.dump(data, handle)
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: an annotation names unknown category id 12$"):
        open_coco(coco.root)
    with open(path, "w") as handle:
        handle.write('{"images": [}')
    with pytest.raises(DatasetError, match=r"instances_val2017\.json:1: not valid JSON"):
        open_coco(coco.root)
    for name in ("train", "val"):
        os.remove(os.path.join(coco.root, "annotations", f"instances_{name}2017.json"))
    with pytest.raises(DatasetError, match=r"instances_\{train,val\}2017\.json: no such file$"):
        open_coco(coco.root)
