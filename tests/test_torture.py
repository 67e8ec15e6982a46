"""The fault-injection suite (tests/torture.py): every writer killed at points over its run, a
second writer at each of those moments, a full disk at the output's first and last writes.

`make test` runs the fast subset (FAST_POINTS per writer, marker `torture`); `make torture` the
full run (FULL_POINTS per writer and the full disks, marker `torture_long`), printing its counts
(the README's Reliability section) and writing them as JSON to $OVML_TORTURE_COUNTS when set.
"""
from __future__ import annotations

import glob
import json
import os
import shutil

import pytest
import torch

from ovml.cache.check import check_cache
from ovml.config import CheckConfig
from ovml.synthetic.planted import PlantedWorld, write_planted_world
from tests.folder_dataset import write_folder_dataset
from tests.processes import Launcher
from tests.torture import (Tally, Writer, compare_caches, compare_json, compare_tensor_files, full_disk,
                           kill_points, read_json, read_json_lines)

FAST_POINTS, FULL_POINTS = 2, 20
TIMINGS = ("seconds", "images_per_second")
COUNTS_FILE = os.environ.get("OVML_TORTURE_COUNTS")   # where the full run writes its counts as JSON, if set
WRITERS = ("extract", "extract-hdf5", "add-labels", "train-head", "finetune", "reproduce", "tag", "calibrate")
LABELS = "red square,blue bar,green disc,tree"   # the vocabulary tag scores the folder against


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_clip) -> dict:
    """The inputs every writer reads: a folder dataset (16 images and the 8 odd ones), the tiny
    CLIP, a cache extracted from them, new label names with annotations, a planted world."""
    folder = tmp_path_factory.mktemp("torture-inputs")
    dataset = str(folder / "shapes")
    write_folder_dataset(dataset, images=16, broken=True)
    names, annotations = folder / "new.txt", folder / "annotations.csv"
    names.write_text("purple_cone\nblue_star\n")
    annotations.write_text("id,labels\nimg/000.png,purple_cone\nimg/004.png,blue_star;purple_cone\nimg/005.png,\n")
    labelled = folder / "labelled.csv"
    labelled.write_text("id,labels\nimg/000.png,red_square\nimg/002.png,blue_bar\nimg/004.png,red_square;blue_bar\n")
    world = write_planted_world(str(folder / "world.zarr"), PlantedWorld(
        seen=20, unseen=5, rank=8, channels=64, grid=4, train_images=128, test_images=64, unit_rows=32))
    launcher = Launcher(str(folder))
    cache = str(folder / "base.zarr")
    status, output = launcher.run(["extract", "--dataset", "folder", "--root", dataset, "--out", cache, "--model",
                                   tiny_clip, "--workers", "0", "--unit-rows", "4", "--threads", "1"])
    assert status == 0, output
    return {"dataset": dataset, "model": tiny_clip, "names": str(names), "annotations": str(annotations),
            "labelled": str(labelled), "world": world, "cache": cache}


def errors_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return sorted(handle)


def writers(inputs: dict) -> dict[str, Writer]:
    data, model = inputs["dataset"], inputs["model"]

    def compare_run(case: str, reference: str, run: str = "run") -> int:
        left, right = os.path.join(case, run), os.path.join(reference, run)
        return (compare_tensor_files(os.path.join(left, "head.pt"), os.path.join(right, "head.pt"))
                + compare_json(read_json_lines(os.path.join(left, "log.jsonl")),
                               read_json_lines(os.path.join(right, "log.jsonl")), case, reference, TIMINGS)
                + compare_json(read_json(os.path.join(left, "config.json")),
                               read_json(os.path.join(right, "config.json")), case, reference))

    def compare_extract(case: str, reference: str, name: str = "c.zarr") -> int:
        lost = compare_caches(f"{case}/{name}", f"{reference}/{name}", case, reference)
        left, right = errors_lines(f"{case}/{name}.errors.tsv"), errors_lines(f"{reference}/{name}.errors.tsv")
        return lost + (0 if left == right else sum(map(len, right)))

    def extract(store: str) -> Writer:
        return Writer(
            "extract", lambda case: ["extract", "--dataset", "folder", "--root", data, "--out", f"{case}/{store}",
                                     "--model", model, "--workers", "0", "--unit-rows", "4", "--batch-size", "4",
                                     "--threads", "1"],
            lambda case: f"{case}/{store}.lock", lambda case, reference: compare_extract(case, reference, store),
            lambda case: check_cache(CheckConfig(f"{case}/{store}")))

    def compare_finetune(case: str, reference: str) -> int:
        sidecar = "tuned.pt.finetune"
        return (compare_tensor_files(f"{case}/tuned.pt", f"{reference}/tuned.pt")
                + compare_json(read_json_lines(f"{case}/{sidecar}/log.jsonl"),
                               read_json_lines(f"{reference}/{sidecar}/log.jsonl"), case, reference, TIMINGS)
                + compare_json(read_json(f"{case}/{sidecar}/config.json"),
                               read_json(f"{reference}/{sidecar}/config.json"), case, reference))

    def compare_reproduce(case: str, reference: str) -> int:
        lost = 0
        for path in sorted(glob.glob(f"{reference}/table/**/*.json", recursive=True)):
            mirrored = path.replace(reference, case, 1)
            lost += compare_json(read_json(mirrored), read_json(path), case, reference, TIMINGS)
        for run in sorted(glob.glob(f"{reference}/table/runs/*")):
            lost += compare_run(case, reference, os.path.relpath(run, reference))
        return lost

    def compare_tag(case: str, reference: str) -> int:
        lost = compare_json(read_json_lines(f"{case}/tagged/tags.jsonl"), read_json_lines(f"{reference}/tagged/tags.jsonl"),
                            case, reference)
        lost += compare_json(open(f"{case}/tagged/tags.csv").read(), open(f"{reference}/tagged/tags.csv").read(),
                             case, reference)
        return lost + compare_json(read_json(f"{case}/tagged/tag.json"), read_json(f"{reference}/tagged/tag.json"),
                                   case, reference, TIMINGS)

    def loads(path: str) -> list[str]:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
            return []
        except Exception as err:  # any failure to load is the problem reported
            return [f"{path}: {err}"]

    return {
        "extract": extract("c.zarr"),
        "extract-hdf5": extract("c.h5"),
        "add-labels": Writer(
            "add-labels", lambda case: ["add-labels", "--cache", f"{case}/c.zarr", "--names", inputs["names"],
                                        "--annotations", inputs["annotations"], "--model", model],
            lambda case: f"{case}/c.zarr.lock",
            lambda case, reference: compare_caches(f"{case}/c.zarr", f"{reference}/c.zarr", case, reference),
            lambda case: check_cache(CheckConfig(f"{case}/c.zarr")),
            prepare=lambda case: shutil.copytree(inputs["cache"], f"{case}/c.zarr"),
            done_refusal="is already in the cache"),
        "train-head": Writer(
            "train-head", lambda case: ["train-head", "--cache", inputs["world"], "--out", f"{case}/run", "--epochs",
                                        "3", "--lr", "0.01", "--logit-scale", "20", "--resume"],
            lambda case: f"{case}/run/.ovml.lock", compare_run, lambda case: loads(f"{case}/run/head.pt")),
        "finetune": Writer(
            "finetune", lambda case: ["finetune", "--dataset", "folder", "--root", data, "--model", model, "--out",
                                      f"{case}/tuned.pt", "--epochs", "2", "--batch-size", "4", "--limit", "12",
                                      "--workers", "0", "--threads", "1"],
            lambda case: f"{case}/tuned.pt.finetune/.ovml.lock", compare_finetune,
            lambda case: loads(f"{case}/tuned.pt"), done_refusal="already exists"),
        "reproduce": Writer(
            "reproduce", lambda case: ["reproduce", "--table", "1", "--cache", inputs["world"], "--epochs", "1",
                                       "--out", f"{case}/table"],
            lambda case: f"{case}/table/.ovml.lock", compare_reproduce,
            lambda case: [] if read_json(f"{case}/table/table.json")["rows"] else ["table.json has no row"]),
        "tag": Writer(
            "tag", lambda case: ["tag", data, "--out", f"{case}/tagged", "--model", model, "--labels", LABELS,
                                 "--top-k", "2", "--format", "jsonl,csv", "--unit-images", "4", "--batch-size", "4",
                                 "--workers", "0", "--threads", "1"],
            lambda case: f"{case}/tagged/.ovml.lock", compare_tag,
            lambda case: [] if read_json(f"{case}/tagged/tag.json")["totals"] else ["tag.json has no totals"]),
        "calibrate": Writer(
            "calibrate", lambda case: ["calibrate", "--cache", inputs["cache"], "--annotations", inputs["labelled"],
                                       "--out", f"{case}/clip.json"],
            lambda case: f"{case}/clip.json.lock",
            lambda case, reference: compare_json(read_json(f"{case}/clip.json"), read_json(f"{reference}/clip.json"),
                                                 case, reference),
            lambda case: [] if read_json(f"{case}/clip.json")["scorers"] else ["clip.json has no scorer"]),
    }


@pytest.fixture(scope="module")
def tally():
    """The counts over the module's tests; the full run writes them to COUNTS_FILE."""
    totals: dict[str, Tally] = {}
    yield totals
    if COUNTS_FILE and totals:
        whole = Tally()
        for part in totals.values():
            whole.add(part)
        with open(COUNTS_FILE, "w", encoding="utf-8") as handle:
            json.dump({"total": vars(whole), **{name: vars(part) for name, part in totals.items()}}, handle, indent=2)
    for name, part in totals.items():
        print(f"\ntorture {name}: {part.points} points, {part.survived} survived ({part.finished_first} had "
              f"finished), {part.refused} second writers refused, {part.full_disk} full disks, "
              f"{part.bytes_lost} bytes lost, {part.seconds:.0f} s; {'; '.join(part.notes)}")


@pytest.mark.torture
@pytest.mark.parametrize("name", WRITERS)
def test_kill_points_fast(name, inputs, tally, tmp_path):
    launcher = Launcher(str(tmp_path))
    tally[f"{name} fast"] = result = kill_points(launcher, writers(inputs)[name], str(tmp_path / "cases"),
                                                 FAST_POINTS, seed=WRITERS.index(name))
    assert result.survived == result.points == FAST_POINTS and result.bytes_lost == 0


@pytest.mark.torture_long
@pytest.mark.parametrize("name", WRITERS)
def test_kill_points_full(name, inputs, tally, tmp_path):
    launcher = Launcher(str(tmp_path))
    tally[f"{name} full"] = result = kill_points(launcher, writers(inputs)[name], str(tmp_path / "cases"),
                                                 FULL_POINTS, seed=100 + WRITERS.index(name))
    assert result.survived == result.points == FULL_POINTS and result.bytes_lost == 0


@pytest.mark.torture_long
@pytest.mark.parametrize("name", WRITERS)
def test_full_disk(name, inputs, tally, tmp_path):
    launcher = Launcher(str(tmp_path))
    try:
        tally[f"{name} full disk"] = result = full_disk(launcher, writers(inputs)[name], str(tmp_path / "disk"))
    except PermissionError as err:
        pytest.skip(str(err))
    assert result.full_disk == 2
