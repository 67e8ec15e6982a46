"""`predict` on new images and `add-labels` on an existing cache, with the tiny CLIP."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ovml.cache.reader import CacheReader
from ovml.cli import main
from ovml.config import AddLabelsConfig
from ovml.errors import UsageError
from ovml.extract.backbone import load_backbone
from ovml.extract.text import embed_labels
from ovml.extract.add_labels import add_labels, prepare


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def tiny_cache(folder_dataset, tiny_clip, tmp_path) -> str:
    out = str(tmp_path / "tiny.zarr")
    run("extract", "--dataset", "folder", "--root", folder_dataset, "--out", out, "--model", tiny_clip,
        "--workers", "0", "--unit-rows", "8")
    return out


def test_predict_with_clip_ml_and_with_a_head(tiny_cache, tiny_clip, folder_dataset, tmp_path):
    images = [os.path.join(folder_dataset, "img", "000.png"), os.path.join(folder_dataset, "img")]
    output = run("predict", *images, "--labels", "cat,dog,red square,tree", "--model", tiny_clip,
                 "--top-k", "2", "--json").output
    predictions = json.loads(output)
    assert len(predictions) == 1 + 24
    for prediction in predictions:
        scores = [label["score"] for label in prediction["labels"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    head = str(tmp_path / "head")
    run("train-head", "--cache", tiny_cache, "--out", head, "--epochs", "1", "--val-fraction", "0")
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("cat\ndog\n# a comment\nred square\n")
    explain = str(tmp_path / "maps")
    output = run("predict", images[0], os.path.join(folder_dataset, "odd", "missing.jpg"),
                 "--labels-file", str(labels_file), "--model", tiny_clip, "--head", head, "--alpha", "0.3",
                 "--top-k", "3", "--explain", explain).output
    assert "000.png: " in output and "missing.jpg: unreadable: missing file" in output
    maps = os.listdir(explain)
    assert maps == ["000.png"] and os.path.getsize(os.path.join(explain, maps[0])) > 1000


def test_predict_refuses_a_head_of_other_weights(tiny_clip, tiny_clip_files, tiny_cache, small_world, tmp_path,
                                                 folder_dataset):
    image = os.path.join(folder_dataset, "img", "000.png")
    head = str(tmp_path / "planted-head")
    run("train-head", "--cache", small_world, "--out", head, "--epochs", "1")
    result = CliRunner().invoke(main, ["predict", image, "--labels", "cat", "--model", tiny_clip, "--head", head])
    assert result.exit_code == 1 and "trained on features of other CLIP weights" in result.output
    tiny_head = str(tmp_path / "tiny-head")
    run("train-head", "--cache", tiny_cache, "--out", tiny_head, "--epochs", "1", "--val-fraction", "0")
    result = CliRunner().invoke(main, ["predict", image, "--labels", "cat", "--head", tiny_head,
                                       "--model", tiny_clip_files["torchscript"]])
    assert result.exit_code == 1 and "other CLIP weights" in result.output
    assert "000.png: cat" in run("predict", image, "--labels", "cat", "--head", tiny_head).output
    evaluated = run("eval", "--cache", tiny_cache, "--head", tiny_head, "--image-split", "train",
                    "--out", str(tmp_path / "e")).output
    assert "alpha auto skipped: the run kept no validation images" in evaluated


def test_add_labels_then_eval_scores_the_new_columns(tiny_cache, tiny_clip, tmp_path):
    names = tmp_path / "new.txt"
    names.write_text("purple_cone\norange hexagon\n")
    annotations = tmp_path / "new.csv"
    annotations.write_text("id,labels\nimg/001.png,purple_cone\nimg/004.png,\n")
    run("add-labels", "--cache", tiny_cache, "--names", str(names), "--model", tiny_clip,
        "--annotations", str(annotations))
    reader = CacheReader(tiny_cache)
    assert reader.names[-2:] == ["purple_cone", "orange hexagon"] and not reader.seen[-2:].any()
    expected = embed_labels(load_backbone(tiny_clip).model, ["purple_cone", "orange hexagon"], reader.prompts,
                            progress=False)
    assert np.allclose(reader.text[-2:], expected, atol=1e-6)
    ids = reader.image_ids("train")
    labels = reader.read_labels("train")
    assert labels[ids.index("img/001.png"), -2:].tolist() == [1, -1]
    assert labels[ids.index("img/004.png"), -2:].tolist() == [-1, -1]
    assert labels[ids.index("img/002.png"), -2:].tolist() == [0, 0]
    metrics = json.loads(run("eval", "--cache", tiny_cache, "--split", "unseen", "--image-split", "train",
                             "--json", "--out", str(tmp_path / "e")).output)
    assert metrics["labels"] == 4 and metrics["label_names"][-2:] == ["purple_cone", "orange hexagon"]
    again = CliRunner().invoke(main, ["add-labels", "--cache", tiny_cache, "--names", str(names), "--model", tiny_clip])
    assert again.exit_code == 1 and "new.txt:1: label 'purple_cone' is already in the cache" in again.output


def test_interrupted_add_labels_leaves_a_valid_cache(tiny_cache, tiny_clip, tmp_path, monkeypatch):
    names = tmp_path / "new.txt"
    names.write_text("kite\n")
    new, old_count = prepare(AddLabelsConfig(tiny_cache, str(names), model=tiny_clip, progress=False))
    group = zarr.open_group(tiny_cache, mode="a")
    group.attrs["adding_labels"] = {"from": old_count, "to": old_count + 1}   # a commit cut short:
    group["labels/names"].resize((old_count + 1,))                           # some arrays grown,
    group["splits/train/labels"].resize((group["splits/train/labels"].shape[0], old_count + 1))  # others not
    reader = CacheReader(tiny_cache)
    assert reader.num_labels == old_count and reader.read_labels("train").shape[1] == old_count
    assert add_labels(AddLabelsConfig(tiny_cache, str(names), model=tiny_clip, progress=False)) == ["kite"]
    reader = CacheReader(tiny_cache)
    assert reader.names[-1] == "kite" and reader.read_labels("test").shape[1] == old_count + 1


def test_add_labels_needs_the_cache_model(tiny_cache, tiny_clip_files, tmp_path):
    names = tmp_path / "new.txt"
    names.write_text("kite\n")
    with pytest.raises(UsageError, match="not the weights that made"):
        add_labels(AddLabelsConfig(tiny_cache, str(names), model=tiny_clip_files["torchscript"], progress=False))
