"""`ovml tag --cache`: tables from stored features, refusals before any work, Dask, new vocabularies."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner

from ovml.cache.reader import CacheReader
from ovml.cli import main
from tests.conftest import TINY, build_tiny_clip, save_clip_files


def tag(*args: str):
    result = CliRunner().invoke(main, ["tag", *args])
    return result


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_each_table_format_holds_the_same_decisions_and_records_the_rule(small_world, tmp_path):
    out = tmp_path / "tagged"
    result = tag("--cache", small_world, "--split", "test", "--out", str(out), "--top-k", "3",
                 "--format", "jsonl,csv,parquet")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "tags.jsonl")
    with open(out / "tags.csv", newline="", encoding="utf-8") as handle:
        cells = list(csv.DictReader(handle))
    table = pq.read_table(out / "tags.parquet")
    assert len(rows) == len(cells) == table.num_rows == 128
    assert [row["labels"] for row in rows] == table.column("labels").to_pylist()
    assert [", ".join(row["labels"]) for row in rows] == [cell["labels"] for cell in cells]
    assert all(row["rule"] == "top-k 3" and row["probabilities"] is None for row in rows)
    assert json.loads(table.schema.metadata[b"ovml.tag"])["rule"] == "top-k 3"
    summary = json.loads((out / "tag.json").read_text())
    assert summary["rule"] == "top-k 3" and summary["totals"]["images"] == 128 and len(summary["vocabulary"]) == 50
    with CacheReader(small_world) as reader:            # the scores are CLIP-ML's, from the stored features
        global_embedding = reader.read("test", "global", 0, 128).astype(np.float32)
        names, text = list(reader.names), reader.text
    expected = (global_embedding / np.linalg.norm(global_embedding, axis=1, keepdims=True)) @ text.T
    first = rows[0]
    assert first["split"] == "test" and first["row"] == 0 and first["id"] == "test/000000"
    assert first["labels"] == [names[j] for j in np.argsort(-expected[0])[:3]]
    np.testing.assert_allclose(first["scores"], np.sort(expected[0])[::-1][:3], atol=1e-5)


def test_long_tables_hold_every_label_of_every_image(small_world, tmp_path):
    out = tmp_path / "long"
    result = tag("--cache", small_world, "--split", "test", "--out", str(out), "--threshold", "0.6", "--long",
                 "--format", "parquet,csv")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "tags.parquet").to_pydict()
    assert len(table["label"]) == 128 * 50 and set(table) >= {"id", "label", "score", "present", "probability"}
    assert all((score >= 0.6) == present for score, present in zip(table["score"], table["present"]))
    assert set(table["probability"]) == {None} and set(table["rule"]) == {"threshold 0.6"}
    with open(out / "tags.csv", encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == 128 * 50 + 1


def test_dask_local_2_gives_the_single_process_result(small_world, tmp_path):
    args = ["--cache", small_world, "--threshold", "mcut", "--format", "jsonl,parquet", "--unit-images", "128",
            "--threads", "1"]
    single, spread = tmp_path / "single", tmp_path / "spread"
    assert tag(*args, "--out", str(single)).exit_code == 0
    result = tag(*args, "--out", str(spread), "--dask", "local:2")
    assert result.exit_code == 0, result.output
    assert (single / "tags.jsonl").read_bytes() == (spread / "tags.jsonl").read_bytes()
    assert len(os.listdir(spread / "tags.parquet")) == 5                      # one file per unit
    assert pq.read_table(single / "tags.parquet").equals(pq.read_table(spread / "tags.parquet"))


def test_an_output_folder_that_cannot_be_written_is_one_line(small_world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = tag("--cache", small_world, "--out", str(blocker / "tagged"))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "cannot write the output folder" in result.output


def test_a_vocabulary_emptied_by_only_and_exclude_is_refused_before_any_work(small_world, tmp_path):
    out = tmp_path / "empty"
    result = tag("--cache", small_world, "--out", str(out), "--only", "seen_001", "--exclude", "Seen-001")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "the vocabulary is empty after --only/--exclude" in result.output
    assert not any(name.startswith("tags") for name in os.listdir(out))


def test_a_head_trained_on_another_clip_is_refused_in_one_line(small_world, tiny_run, tmp_path):
    result = tag("--cache", small_world, "--out", str(tmp_path / "a"), "--head", tiny_run["run"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "the head was trained on features of other CLIP weights" in result.output
    other = save_clip_files(build_tiny_clip(seed=1), tmp_path, "other", TINY["image_resolution"])["state_dict"]
    result = tag(tiny_run["images"], "--out", str(tmp_path / "b"), "--head", tiny_run["run"], "--model", other)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "the head was trained on features of other CLIP weights" in result.output


def test_a_rerun_with_other_settings_is_refused_and_a_finished_run_is_left_alone(small_world, tmp_path):
    out = str(tmp_path / "tagged")
    assert tag("--cache", small_world, "--split", "test", "--out", out).exit_code == 0
    again = tag("--cache", small_world, "--split", "test", "--out", out)
    assert again.exit_code == 0 and "nothing to do" in again.output
    other = tag("--cache", small_world, "--split", "test", "--out", out, "--top-k", "2")
    assert other.exit_code == 1 and "made with other rule" in other.output


def test_a_cache_is_tagged_with_a_new_vocabulary_without_the_image_tower(tiny_run, tmp_path, monkeypatch):
    import ovml.extract.backbone as backbone
    import ovml.tag.engine as engine

    def refuse(*args, **kwargs):
        raise AssertionError("the image tower was built or run")
    monkeypatch.setattr(backbone, "load_backbone", refuse)
    monkeypatch.setattr(engine, "load_backbone", refuse)
    for family in (backbone.Backbone, *backbone.Backbone.__subclasses__()):
        monkeypatch.setattr(family, "encode", refuse)
    out = tmp_path / "retagged"
    result = tag("--cache", tiny_run["cache"], "--out", str(out), "--labels", "Red-Square, cat, dog",
                 "--threshold", "mcut", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert "1 name(s) use the cache's stored text; 2 went through CLIP's text tower" in result.output
    rows = read_jsonl(out / "tags.jsonl")
    with CacheReader(tiny_run["cache"]) as reader:
        ok = int(sum(reader.usable_rows(split).sum() for split in reader.splits))
    assert len(rows) == ok and all(os.path.isfile(row["image"]) for row in rows)
    assert {label for row in rows for label in row["labels"]} <= {"Red-Square", "cat", "dog"}
