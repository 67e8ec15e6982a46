"""`ovml reproduce` on small planted caches: both files with every row, the JSON layout of docs/architecture.md,
the paper's figures where the dataset is the paper's, and finished rows kept on a rerun."""
from __future__ import annotations

import json
import os

import pytest
import zarr
from click.testing import CliRunner

from ovml.cli import main
from ovml.config import ReproduceConfig
from ovml.errors import UsageError
from ovml.experiments import reproduce as reproduce_module
from ovml.experiments.reproduce import Reproduction, reproduce
from ovml.synthetic.planted import PlantedWorld, write_planted_world


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> str:
    return write_planted_world(str(tmp_path_factory.mktemp("reproduce") / "tiny.zarr"),
                               PlantedWorld(train_images=128, test_images=64))


def read(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle) if path.endswith(".json") else handle.read()


def test_table_2_through_the_cli_then_a_rerun_keeps_every_row(tiny_world, tmp_path, monkeypatch):
    out = str(tmp_path / "table2")
    command = ["reproduce", "--table", "2", "--cache", tiny_world, "--epochs", "1", "--out", out]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    table = read(os.path.join(out, "table.json"))
    assert set(table) == {"table", "dataset", "rows"} and table["table"] == 2 and table["dataset"] == "planted"
    assert [(row["method"], row["task"]) for row in table["rows"]] == [
        ("CLIP-ZSSDL", "ZSL"), ("CLIP-ZSSDL", "GZSL"), ("CLIP-BiAM", "ZSL"), ("CLIP-BiAM", "GZSL"),
        ("OVML", "ZSL"), ("OVML", "GZSL")]
    for row in table["rows"]:
        assert set(row) == {"method", "task", "F1@3", "F1@5", "mAP", "paper"} and row["paper"] is None
        assert 0 <= row["mAP"] <= 100
    markdown = read(os.path.join(out, "table.md"))
    assert "| CLIP-BiAM | GZSL |" in markdown and "paper mAP" in markdown
    assert ("Every head trained for 1 epoch: OVML with the paper's settings (`train-head --paper`), CLIP-ZSSDL and "
            "CLIP-BiAM with the library's defaults." in markdown)
    assert sorted(os.listdir(os.path.join(out, "runs"))) == ["biam", "ovml", "zssdl"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(reproduce_module, "train_head", no_training)
    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    assert again.output.count("kept from an earlier run") == 6
    assert read(os.path.join(out, "table.json")) == table


def test_table_3_with_a_finetuned_cache_and_the_papers_figures(tiny_world, tmp_path):
    nuswide = str(tmp_path / "nus.zarr")
    write_planted_world(nuswide, PlantedWorld(train_images=128, test_images=64))
    tuned = write_planted_world(str(tmp_path / "tuned.zarr"), PlantedWorld(train_images=128, test_images=64, seed=1))
    for path in (nuswide, tuned):                     # as if both were NUS-WIDE caches
        group = zarr.open_group(path, mode="a")
        group.attrs["dataset"] = {**group.attrs["dataset"], "name": "nuswide"}
    out = str(tmp_path / "table3")
    without = reproduce(ReproduceConfig(table=3, cache=nuswide, out=out, epochs=1, progress=False))
    assert [row["method"] for row in without["rows"]] == ["CLIP-ML", "Attention without L_con", "Attention with L_con"]
    assert "CLIP-ML, fine-tuned (ZSL): needs --finetuned-cache" in read(os.path.join(out, "table.md"))
    table = reproduce(ReproduceConfig(table=3, cache=nuswide, finetuned_cache=tuned, out=out, epochs=1,
                                      progress=False))
    rows = {row["method"]: row for row in table["rows"]}
    assert list(rows) == ["CLIP-ML", "CLIP-ML, fine-tuned", "Attention without L_con", "Attention with L_con"]
    assert rows["CLIP-ML, fine-tuned"]["paper"] == {"F1@3": 29.3, "F1@5": 29.1, "mAP": 41.6}
    assert rows["Attention with L_con"]["paper"] == {"F1@3": 40.1, "F1@5": 37.5, "mAP": 42.6}
    assert rows["CLIP-ML"]["mAP"] != rows["CLIP-ML, fine-tuned"]["mAP"]      # another cache, other scores
    assert all(row["task"] == "ZSL" for row in table["rows"])
    markdown = read(os.path.join(out, "table.md"))
    assert "| CLIP-ML, fine-tuned | ZSL |" in markdown and "| 41.6 |" in markdown
    with pytest.raises(UsageError, match="other settings \\(epochs\\)"):
        reproduce(ReproduceConfig(table=3, cache=nuswide, out=out, epochs=2, progress=False))


def test_table_1_rows_and_refusals(tiny_world, tmp_path):
    table = reproduce(ReproduceConfig(table=1, cache=tiny_world, out=str(tmp_path / "t1"), epochs=1,
                                      progress=False))
    assert [(row["method"], row["task"]) for row in table["rows"]] == [
        ("CLIP-ML", "ZSL"), ("CLIP-ML", "GZSL"), ("OVML", "ZSL"), ("OVML", "GZSL")]
    with pytest.raises(UsageError, match="--table"):
        reproduce(ReproduceConfig(table=4, cache=tiny_world, out=str(tmp_path / "t4")))


def test_table_md_says_which_settings_trained_the_attention_head(tiny_world, tmp_path):
    rows = [{"method": method} for method in ("CLIP-ML", "CLIP-ML", "OVML", "OVML")]
    paper = Reproduction(ReproduceConfig(table=1, cache=tiny_world, out=str(tmp_path / "p"), epochs=2))
    assert paper.training_sentence(rows) == ("Every head trained for 2 epochs: OVML with the paper's settings "
                                             "(`train-head --paper`).")
    defaults = Reproduction(ReproduceConfig(table=1, cache=tiny_world, out=str(tmp_path / "d"), settings="defaults"))
    assert defaults.training_sentence(rows) == "Every head trained with the library's defaults."
    assert paper.training_sentence(rows[:2]) == ""                  # CLIP-ML alone: no head trained
