"""`ovml tag` over image folders with the tiny CLIP: errors.tsv, --strict, txt sidecars, resuming
after a kill, and `ovml predict --threshold`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ovml.cli import main
from tests.folder_dataset import CLASSES, write_folder_dataset

LABELS = ",".join(name for name, _ in CLASSES)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def photos(tmp_path) -> str:
    """12 generated images under img/, and odd/ with 5 readable (some unusual) and 3 unreadable files."""
    root = tmp_path / "photos"
    write_folder_dataset(str(root), images=12, broken=True)
    return str(root)


def tag(tiny_clip: str, *args: str):
    return CliRunner().invoke(main, ["tag", *args, "--model", tiny_clip, "--labels", LABELS, "--workers", "0"])


def sidecar_texts(folder) -> dict[str, str]:
    return {name: open(os.path.join(folder, name), encoding="utf-8").read()
            for name in sorted(os.listdir(folder)) if name.endswith(".txt")}


def test_unreadable_images_are_listed_in_errors_tsv_and_the_run_goes_on(photos, tiny_clip, tmp_path):
    out = tmp_path / "tagged"
    result = tag(tiny_clip, photos, "--out", str(out), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert "17 images tagged" in result.output and "3 unreadable" in result.output
    errors = dict(line.rstrip("\n").split("\t") for line in open(out / "errors.tsv", encoding="utf-8"))
    assert {os.path.basename(path) for path in errors} == {"empty.jpg", "truncated.jpg", "notes.jpg"}
    assert errors[os.path.join(photos, "odd", "empty.jpg")] == "empty file (0 bytes)"
    rows = [json.loads(line) for line in open(out / "tags.jsonl", encoding="utf-8")]
    assert len(rows) == 17 and all(len(row["labels"]) == 5 for row in rows)


def test_strict_stops_at_the_first_unreadable_image_in_one_line(photos, tiny_clip, tmp_path):
    result = tag(tiny_clip, photos, "--out", str(tmp_path / "tagged"), "--strict")
    assert result.exit_code == 1 and result.stderr.endswith("empty file (0 bytes) (--strict)\n")
    assert [line for line in result.stderr.splitlines() if not line.startswith("text: ")] == \
        [result.stderr.splitlines()[-1]]


def test_txt_sidecars_are_kept_unless_overwrite_or_append(photos, tiny_clip, tmp_path):
    images = os.path.join(photos, "img")
    mine = os.path.join(images, "000.txt")
    with open(mine, "w", encoding="utf-8") as handle:
        handle.write("my tag, Red_Square\n")
    pixels = open(os.path.join(images, "000.png"), "rb").read()
    result = tag(tiny_clip, images, "--out", str(tmp_path / "keep"), "--format", "txt", "--top-k", "2",
                 "--always-first", "white ring")
    assert result.exit_code == 0, result.output
    assert "txt kept 1" in result.output and "txt written 11" in result.output
    texts = sidecar_texts(images)
    assert texts["000.txt"] == "my tag, Red_Square\n" and len(texts) == 12
    tags = [text.strip().split(", ") for text in texts.values()]
    assert all(len(t) == 2 for t in tags[1:]) and all(t[0] == "white_ring" for t in tags[1:] if "white_ring" in t)
    assert open(os.path.join(images, "000.png"), "rb").read() == pixels       # images are only read

    assert tag(tiny_clip, images, "--out", str(tmp_path / "append"), "--format", "txt", "--top-k", "5",
               "--append").exit_code == 0
    appended = open(mine, encoding="utf-8").read().strip().split(", ")
    assert appended[:2] == ["my tag", "Red_Square"] and len(appended) == 6       # red_square not added twice
    assert tag(tiny_clip, images, "--out", str(tmp_path / "overwrite"), "--format", "txt", "--top-k", "1",
               "--overwrite").exit_code == 0
    assert len(open(mine, encoding="utf-8").read().strip().split(", ")) == 1


def test_two_images_sharing_a_txt_sidecar_are_refused_before_any_work(photos, tiny_clip, tmp_path):
    images = os.path.join(photos, "img")
    with open(os.path.join(images, "000.png"), "rb") as source, open(os.path.join(images, "000.jpg"), "wb") as copy:
        copy.write(source.read())
    result = tag(tiny_clip, images, "--out", str(tmp_path / "t"), "--format", "txt")
    assert result.exit_code == 1 and "2 images would share this sidecar" in result.output
    assert not [name for name in os.listdir(images) if name.endswith(".txt")]


def wait_for_units(state: str, process: subprocess.Popen, count: int, limit: float = 120.0) -> dict:
    """The manifest once it lists `count` finished units (polled while the process runs)."""
    started = time.monotonic()
    while time.monotonic() - started < limit and process.poll() is None:
        try:
            with open(state, encoding="utf-8") as handle:
                manifest = json.load(handle)
            if len(manifest["done"]) >= count:
                return manifest
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"{count} units were not done in time (exit status {process.poll()})")


def test_a_run_killed_midway_then_rerun_equals_an_uninterrupted_run(tiny_clip, tmp_path, monkeypatch):
    for name in ("killed", "whole"):
        write_folder_dataset(str(tmp_path / name), images=60, broken=True)
    args = ["tag", "img", "odd", "--out", "tagged", "--model", tiny_clip, "--labels", LABELS, "--workers", "0",
            "--format", "jsonl,csv,parquet,txt", "--threshold", "mcut", "--unit-images", "4", "--batch-size", "2",
            "--threads", "1"]
    env = dict(os.environ, OVML_PROGRESS="off", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "ovml.cli", *args], cwd=killed, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        manifest = wait_for_units(str(killed / "tagged" / ".ovml-tag" / "state.json"), process, 2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert len(manifest["done"]) < manifest["units"] and not (killed / "tagged" / "tags.jsonl").exists()
    for part in os.listdir(killed / "tagged" / "tags.parquet"):               # every part there is whole
        if not part.startswith("."):                  # a hidden temporary file, which readers skip
            pq.read_table(killed / "tagged" / "tags.parquet" / part)

    outputs = {}
    for name in ("killed", "whole"):
        monkeypatch.chdir(tmp_path / name)
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
    assert "finished units skipped" in outputs["killed"] and "resumed" not in outputs["whole"]
    killed_out, whole_out = killed / "tagged", tmp_path / "whole" / "tagged"
    for name in ("tags.jsonl", "tags.csv", "errors.tsv", "tag.json"):
        assert (killed_out / name).read_bytes() == (whole_out / name).read_bytes(), name
    assert pq.read_table(killed_out / "tags.parquet").equals(pq.read_table(whole_out / "tags.parquet"))
    assert sidecar_texts(killed / "img") == sidecar_texts(tmp_path / "whole" / "img")
    assert len(sidecar_texts(killed / "img")) == 60


def test_predict_keeps_its_top_k_and_gains_a_threshold(photos, tiny_clip):
    image = os.path.join(photos, "img", "000.png")
    runner = CliRunner()
    base = ["predict", image, "--model", tiny_clip, "--labels", LABELS, "--json"]
    top = json.loads(runner.invoke(main, base).output)[0]["labels"]
    assert len(top) == 5
    cut = (top[1]["score"] + top[2]["score"]) / 2
    above = json.loads(runner.invoke(main, base + ["--threshold", str(cut)]).output)[0]["labels"]
    assert [label["name"] for label in above] == [label["name"] for label in top[:2]]
    capped = json.loads(runner.invoke(main, base + ["--threshold", str(cut), "--top-k", "1"]).output)[0]["labels"]
    assert len(capped) == 1
    mcut = runner.invoke(main, base + ["--threshold", "mcut"])
    assert mcut.exit_code == 0 and 1 <= len(json.loads(mcut.output)[0]["labels"]) <= 5


def test_features_saved_while_tagging_tag_the_images_again_without_the_image_tower(photos, tiny_clip, tmp_path,
                                                                                     monkeypatch):
    import ovml.tag.engine as engine
    kept = str(tmp_path / "features.zarr")
    first = tag(tiny_clip, photos, "--out", str(tmp_path / "first"), "--save-cache", kept, "--top-k", "2")
    assert first.exit_code == 0 and f"features kept in {kept}" in first.output
    monkeypatch.setattr(engine, "load_backbone", lambda *a, **k: pytest.fail("the image tower was loaded"))
    again = CliRunner().invoke(main, ["tag", "--cache", kept, "--out", str(tmp_path / "again"), "--top-k", "2",
                                      "--format", "jsonl,txt"])        # the vocabulary kept with the features
    assert again.exit_code == 0, again.output
    assert "3 cache rows not ok skipped" in again.output and "txt written 17" in again.output
    before = [json.loads(line) for line in open(tmp_path / "first" / "tags.jsonl", encoding="utf-8")]
    after = [json.loads(line) for line in open(tmp_path / "again" / "tags.jsonl", encoding="utf-8")]
    assert [os.path.abspath(row["image"]) for row in before] == [row["image"] for row in after]
    for old, new in zip(before, after):                     # the cache keeps float16 features
        assert old["labels"] == new["labels"] or abs(old["scores"][0] - old["scores"][1]) < 1e-3
        assert max(abs(a - b) for a, b in zip(old["scores"], new["scores"])) < 1e-3


def test_a_folder_tagged_with_a_head_scores_as_predict_does_over_the_heads_vocabulary(tiny_run, tmp_path):
    out = tmp_path / "tagged"
    result = CliRunner().invoke(main, ["tag", tiny_run["images"], "--out", str(out), "--head", tiny_run["run"],
                                       "--alpha", "0.5", "--top-k", "3", "--workers", "0"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in open(out / "tags.jsonl", encoding="utf-8")]
    assert len(rows) == 24 and json.loads((out / "tag.json").read_text())["vocabulary"] == [n for n, _ in CLASSES]
    predicted = CliRunner().invoke(main, ["predict", rows[0]["image"], "--head", tiny_run["run"], "--alpha", "0.5",
                                          "--labels", LABELS, "--top-k", "3", "--json"])
    labels = json.loads(predicted.output)[0]["labels"]
    assert [label["name"] for label in labels] == rows[0]["labels"]
    assert max(abs(label["score"] - score) for label, score in zip(labels, rows[0]["scores"])) < 1e-4
