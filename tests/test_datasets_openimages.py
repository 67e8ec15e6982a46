"""The `openimages` adapter on a miniature Open Images v4 (2018_04) with the release's quirks
(docs/protocol.md, Open Images v4), its streaming CSV reader, and the refusal of a malicious pickle."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from ovml.extract.datasets import DatasetError, SparseSplit, open_dataset
from ovml.extract.datasets.openimages import open_openimages
from ovml.extract.datasets.openimages_labels import read_image_labels
from tests.dataset_layouts import OI_NAMES, OI_SEEN, OI_UNSEEN, write_openimages

COLUMNS = OI_SEEN + OI_UNSEEN      # classes-trainable order, then top-400 order


@pytest.fixture
def oi(tmp_path):
    return write_openimages(str(tmp_path / "oi"))


def expected_matrix(labels: dict[str, dict[str, int]]) -> np.ndarray:
    return np.array([[labels[image].get(mid, 0) for mid in COLUMNS] for image in labels], dtype=np.int8)


def test_columns_are_trainable_then_top_400_unseen(oi):
    vocabulary = open_dataset("openimages", oi.root).vocabulary
    assert vocabulary.ids == COLUMNS
    assert vocabulary.names == [OI_NAMES[mid] for mid in COLUMNS]
    assert vocabulary.names[2] == "Bread, rolls" and vocabulary.names[4] == 'Fiat 500 "topolino"'
    assert vocabulary.names[7] == vocabulary.names[10] == "Bat"           # names repeat, MIDs do not
    assert vocabulary.names[8] == "Anole"
    assert vocabulary.seen.tolist() == [True] * 8 + [False] * 3


def test_labels_merge_an_images_rows_wherever_they_are(oi):
    source = open_openimages(oi.root)
    assert list(source.splits) == ["train", "test"]                       # no validation CSV
    for name, labels in oi.labels.items():
        split = source.splits[name]
        assert isinstance(split.inner if name == "train" else split, SparseSplit)
        assert split.ids == list(labels)                                  # order of first appearance
        matrix = split.labels(0, len(split))
        expected = expected_matrix(labels)
        if name == "train":                                               # unseen columns: not annotated
            assert expected[:, len(OI_SEEN):].any()
            expected[:, len(OI_SEEN):] = 0
        assert np.array_equal(matrix, expected)
        assert np.array_equal(split.labels(3, 7), matrix[3:7])
        assert split.paths == [os.path.join(oi.root, name, f"{image}.jpg") for image in labels]


def test_attrs_count_rows_images_and_memory(oi):
    source = open_openimages(oi.root)
    described = json.loads(json.dumps(source.describe()))
    assert described["labels"] == {"seen": 8, "unseen": 3}
    assert "unseen_labels.pkl" in described["files"] and described["peak_rss_mb"] > 0
    for name, labels in oi.labels.items():
        counts = described["splits"][name]
        assert counts["listed"] == len(labels) and counts["found"] == len(labels) - 1
        assert counts["rows"] == oi.rows[name] and counts["rows_ignored"] == oi.ignored[name]
        assert counts["rows_repeated"] == oi.repeated[name] >= 1
        assert counts["images_without_labels"] == sum(not found for found in labels.values())
        assert counts["parse_seconds"] >= 0


def test_reader_is_block_size_independent(oi):
    path = os.path.join(oi.root, "train-annotations-human-imagelabels.csv")
    column_of = {mid: column for column, mid in enumerate(COLUMNS)}
    whole = read_image_labels(path, column_of)
    for block_bytes in (5, 61, 200):
        pieces = read_image_labels(path, column_of, block_bytes)
        assert pieces.ids == whole.ids and pieces.rows == whole.rows
        for field in ("indptr", "columns", "values"):
            assert np.array_equal(getattr(pieces, field), getattr(whole, field))


@pytest.mark.parametrize("protocol", [2, 5])
def test_unseen_pickle_of_any_protocol_and_text_list_agree(tmp_path, protocol):
    pickled = open_openimages(write_openimages(str(tmp_path / "p"), pickle_protocol=protocol).root)
    listed = open_openimages(write_openimages(str(tmp_path / "t"), unseen_as="txt").root)
    assert pickled.vocabulary.ids == listed.vocabulary.ids == COLUMNS
    assert "unseen_labels.txt" in listed.attrs["files"]


class RunsAShellCommand:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsEval:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w')",)


@pytest.mark.parametrize("payload, refused", [(RunsAShellCommand, r"(posix|os)\.system"),
                                              (CallsEval, r"builtins\.eval")])
def test_a_pickle_that_runs_code_is_refused(oi, tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    with open(os.path.join(oi.root, "unseen_labels.pkl"), "wb") as handle:
        pickle.dump(np.array([payload(str(marker))], dtype=object), handle)
    with pytest.raises(DatasetError, match=rf"unseen_labels\.pkl: refused to load: the pickle asks for {refused}") \
            as raised:
        open_openimages(oi.root)
    assert not marker.exists() and "\n" not in str(raised.value)


def test_a_pickle_of_something_else_is_an_error(oi):
    with open(os.path.join(oi.root, "unseen_labels.pkl"), "wb") as handle:
        pickle.dump(np.arange(6), handle)
    with pytest.raises(DatasetError, match=r"unseen_labels\.pkl: expected a 1-D array or list of strings$"):
        open_openimages(oi.root)
    with open(os.path.join(oi.root, "unseen_labels.pkl"), "wb") as handle:
        handle.write(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match=r"unseen_labels\.pkl: not a readable pickle"):
        open_openimages(oi.root)


def replace_line(path: str, number: int, text: str) -> None:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    with open(path, "w", newline="") as handle:
        handle.writelines(lines)


def test_malformed_files_fail_naming_file_and_line(oi):
    train = os.path.join(oi.root, "train-annotations-human-imagelabels.csv")
    descriptions = os.path.join(oi.root, "class-descriptions.csv")
    cases = [
        (train, 4, "abc,verification,/m/01g317,yes", r"train-annotations-human-imagelabels\.csv:4: non-numeric Confidence 'yes'$"),
        (train, 5, "abc,verification,/m/01g317,2", r"\.csv:5: Confidence must be 0 or 1, got '2'$"),
        (train, 3, "abc,verification,/m/01g317", r"\.csv:3: expected 4 fields ImageID,Source,LabelName,Confidence$"),
        (train, 1, "ImageID,LabelName,Confidence", r"\.csv:1: expected the header ImageID,Source,LabelName,Confidence$"),
        (descriptions, 3, "/m/x,a,b", r"class-descriptions\.csv:3: expected 2 fields MID,name, got 3$"),
        (os.path.join(oi.root, "top_400_unseen.csv"), 2, "nine", r"top_400_unseen\.csv:2: expected an integer index, got 'nine'$"),
        (os.path.join(oi.root, "top_400_unseen.csv"), 3, "6", r"top_400_unseen\.csv:3: index 6 outside the 6 unseen candidates$"),
        (os.path.join(oi.root, "classes-trainable.txt"), 4, "/m/01g317", r"classes-trainable\.txt:4: '/m/01g317' already on line 1$"),
    ]
    for path, line, text, message in cases:
        with open(path, "rb") as handle:
            original = handle.read()
        replace_line(path, line, text)
        with pytest.raises(DatasetError, match=message) as raised:
            open_openimages(oi.root)
        assert "\n" not in str(raised.value)
        with open(path, "wb") as handle:
            handle.write(original)


def test_a_trainable_mid_without_a_name_fails_naming_the_descriptions(oi):
    path = os.path.join(oi.root, "class-descriptions.csv")
    with open(path) as handle:
        kept = [line for line in handle if not line.startswith("/m/083wq,")]
    with open(path, "w") as handle:
        handle.writelines(kept)
    with pytest.raises(DatasetError, match=r"class-descriptions\.csv: no name for MID /m/083wq "
                                           r"\(listed in classes-trainable\.txt\)$"):
        open_openimages(oi.root)


def test_no_annotation_file_is_an_error(oi):
    for name in ("train", "test"):
        os.remove(os.path.join(oi.root, f"{name}-annotations-human-imagelabels.csv"))
    with pytest.raises(DatasetError, match=r"\{train,validation,test\}-annotations-human-imagelabels\.csv: no such file"):
        open_openimages(oi.root)
