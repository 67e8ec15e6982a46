"""Zero-shot: every adapter writes 0 (not annotated) on the unseen columns of the training split,
whatever its files say; validation and test keep every annotation. The attrs and `ovml info` say so."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from ovml.cache.reader import CacheReader
from ovml.cli import main
from ovml.extract.datasets import open_dataset
from tests.dataset_layouts import write_coco, write_nuswide, write_openimages
from tests.folder_dataset import write_folder_dataset

LAYOUTS = {"nuswide": write_nuswide, "openimages": write_openimages,
           "coco": write_coco, "folder": lambda root: write_folder_dataset(root, images=24)}


@pytest.mark.parametrize("adapter", sorted(LAYOUTS))
def test_training_split_carries_no_unseen_annotation(adapter, tmp_path):
    root = str(tmp_path / adapter)
    LAYOUTS[adapter](root)
    source = open_dataset(adapter, root)
    unseen = ~source.vocabulary.seen
    assert unseen.any()
    train = source.splits["train"]
    assert not train.labels(0, len(train))[:, unseen].any()
    assert train.labels(0, len(train))[:, ~unseen].any()
    others = [split for name, split in source.splits.items() if name != "train"]
    assert others and any(split.labels(0, len(split))[:, unseen].any() for split in others)
    assert source.describe()["unseen_labels_on_training_split"]["split"] == "train"


def test_info_says_unseen_labels_are_not_annotated_on_train(folder_dataset, tiny_clip, tmp_path):
    out = str(tmp_path / "c.zarr")
    runner = CliRunner()
    result = runner.invoke(main, ["extract", "--dataset", "folder", "--root", folder_dataset, "--out", out,
                                  "--model", tiny_clip, "--workers", "0", "--unit-rows", "8"])
    assert result.exit_code == 0, result.output
    with CacheReader(out) as reader:
        assert not reader.read_labels("train")[:, ~reader.seen].any()
        assert reader.read_labels("test")[:, ~reader.seen].any()
    info = runner.invoke(main, ["info", out]).output
    assert "unseen labels on split train: 0 (not annotated)" in info
