"""The head learns with the defaults alone (`train-head --epochs 10`, no other training flag) on
planted worlds of two shapes, and beats the training-free scorers by the margins of docs/method.md:
objects only: ZSL mAP >= CLIP-ML + 8 and >= dense CLIP - 1; with scene labels: >= max(CLIP-ML,
dense CLIP) + 8. Unseen columns are scattered among the seen ones in both worlds."""
from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from ovml.cli import main
from ovml.synthetic.planted import WORLDS, write_planted_world

SMALLER = dict(train_images=2000, test_images=800)


@pytest.fixture(scope="module", params=["objects", "mixed"])
def world(request, tmp_path_factory) -> tuple[str, str]:
    shape = dataclasses.replace(WORLDS[request.param], **SMALLER)
    return request.param, write_planted_world(str(tmp_path_factory.mktemp(request.param) / "world.zarr"), shape)


@pytest.mark.slow  # 10 epochs
def test_defaults_beat_the_training_free_scorers(world, tmp_path):
    kind, cache = world
    runner = CliRunner()
    trained = runner.invoke(main, ["train-head", "--cache", cache, "--out", str(tmp_path / "run"), "--epochs", "10"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(main, ["eval", "--cache", cache, "--head", str(tmp_path / "run"), "--alpha", "auto",
                                  "--out", str(tmp_path / "eval"), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row["mAP"] for row in json.loads(result.output)["rows"]}
    clip, dense, head = rows["clip-ml"], rows["dense"], rows["ovml"]
    if kind == "objects":
        assert head >= clip + 8 and head >= dense - 1, rows
    else:
        assert head >= max(clip, dense) + 8, rows
