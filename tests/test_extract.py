"""`ovml extract` on folder datasets: contents, both backends, and the faults of docs/benchmarks.md:
resume after SIGKILL (R1), broken images (R2), malformed label files (R3)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ovml.cache.reader import CacheReader
from ovml.cache.schema import CacheError
from ovml.config import ExtractConfig
from ovml.extract.datasets import DatasetError
from ovml.errors import ExtractError
from ovml.cache.store import open_store
from ovml.extract import runner
from ovml.extract.runner import run_extraction
from tests.cache_arrays import all_arrays, assert_cache_checks, assert_same_arrays, clip_attention_pool
from tests.folder_dataset import CLASSES, write_folder_dataset


def extract(root, out, model, **options):
    settings = dict(dataset="folder", root=root, out=out, model=model, workers=0, unit_rows=4,
                    batch_size=3, progress=False, threads=2)
    return run_extraction(ExtractConfig(**{**settings, **options}))


def expected_labels(root: str) -> dict[str, tuple[list, np.ndarray]]:
    """labels.csv read independently: split -> (paths, ±1 matrix in classes.csv order)."""
    names = [name for name, _ in CLASSES]
    out: dict = {}
    with open(os.path.join(root, "labels.csv")) as handle:
        for row in csv.DictReader(handle):
            positives = set(filter(None, row["labels"].split(";")))
            vector = [1 if name in positives else -1 for name in names]
            paths, rows = out.setdefault(row["split"], ([], []))
            paths.append(row["path"])
            rows.append(vector)
    return {split: (paths, np.array(rows, dtype=np.int8)) for split, (paths, rows) in out.items()}


def test_cache_holds_what_the_dataset_says(folder_dataset, tiny_clip, tiny_clip_files, tmp_path):
    out = str(tmp_path / "c.zarr")
    summary = extract(folder_dataset, out, tiny_clip)
    assert summary.images == 32 and summary.failures == 4
    assert_cache_checks(out)
    reader = CacheReader(out)
    assert reader.names == [name for name, _ in CLASSES]
    assert reader.seen.tolist() == [bool(seen) for _, seen in CLASSES]
    for split, (paths, matrix) in expected_labels(folder_dataset).items():
        assert reader.image_ids(split) == paths
        if split == "train":                                # zero-shot: unseen columns never annotated
            matrix[:, ~reader.seen] = 0
        assert np.array_equal(reader.read_labels(split), matrix)
    spatial = reader.read("train", "spatial", 0, 8)
    assert spatial.shape == (8, 9, 256) and spatial.dtype == np.float16
    global_embedding = reader.read("train", "global", 0, 8).astype(np.float64)
    pooled = clip_attention_pool(spatial.astype(np.float32), reader.pool, reader.num_heads)
    assert np.abs(pooled - global_embedding).max() <= 2e-3 * np.abs(global_embedding).max() + 1e-3
    assert np.allclose(np.linalg.norm(reader.text, axis=1), 1, atol=1e-5)


def test_broken_images_become_ok_false_rows(tmp_path, tiny_clip):
    root = str(tmp_path / "odd")
    cases = write_folder_dataset(root, images=3, broken=True)
    out = str(tmp_path / "odd.zarr")
    summary = extract(root, out, tiny_clip)
    reader = CacheReader(out)
    ok = dict(zip(reader.image_ids("train"), np.asarray(reader.read("train", "ok", 0, reader.num_rows("train")))))
    for path, kind in cases.items():
        assert ok[path] == (kind == ""), path
    with open(summary.errors_file) as handle:
        listed = {line.split("\t")[1]: line.split("\t")[2] for line in handle}
    assert set(listed) == {p for p, kind in cases.items() if kind}
    assert "missing" in listed["odd/missing.jpg"] and "0 bytes" in listed["odd/empty.jpg"]
    spatial = reader.read("train", "spatial", 0, reader.num_rows("train"))
    assert not spatial[~np.array([ok[i] for i in reader.image_ids("train")])].any()


def test_strict_stops_at_the_first_unreadable_image(tmp_path, tiny_clip):
    root = str(tmp_path / "odd")
    write_folder_dataset(root, images=3, broken=True)
    with pytest.raises(ExtractError, match="missing.jpg: missing file"):
        extract(root, str(tmp_path / "s.zarr"), tiny_clip, strict=True)


@pytest.mark.parametrize("content, message", [
    ("path,split\nimg/000.png,train\n", "labels.csv:1: missing column"),
    ("path,split,labels\nimg/000.png,train,red_square\nimg/001.png,train,purple_cone\n",
     "labels.csv:3: unknown label 'purple_cone'"),
])
def test_malformed_labels_fail_before_writing(tmp_path, tiny_clip, folder_dataset, content, message):
    with open(os.path.join(folder_dataset, "labels.csv"), "w") as handle:
        handle.write(content)
    out = str(tmp_path / "never.zarr")
    with pytest.raises(DatasetError, match=message) as caught:
        extract(folder_dataset, out, tiny_clip)
    assert "\n" not in str(caught.value) and not os.path.exists(out)


@pytest.mark.parametrize("content, message", [
    ("name,seen\nred_square,yes\n", "classes.csv:2: seen must be 1 or 0"),
    ("name\nred_square\n", "classes.csv:1: missing column"),
    ("name,seen\nred_square,1\nred_square,0\n", "classes.csv:3: class 'red_square' listed twice"),
])
def test_malformed_classes_fail_before_writing(tmp_path, tiny_clip, folder_dataset, content, message):
    with open(os.path.join(folder_dataset, "classes.csv"), "w") as handle:
        handle.write(content)
    out = str(tmp_path / "never.zarr")
    with pytest.raises(DatasetError, match=message):
        extract(folder_dataset, out, tiny_clip)
    assert not os.path.exists(out)


def test_zarr_and_hdf5_hold_the_same_arrays(folder_dataset, tiny_clip, tmp_path):
    extract(folder_dataset, str(tmp_path / "c.zarr"), tiny_clip)
    extract(folder_dataset, str(tmp_path / "c.h5"), tiny_clip)
    assert_cache_checks(str(tmp_path / "c.h5"))
    assert_same_arrays(all_arrays(str(tmp_path / "c.zarr")), all_arrays(str(tmp_path / "c.h5")))


def test_rerun_resumes_and_another_model_is_refused(folder_dataset, tiny_clip, tiny_clip_files, tmp_path):
    out = str(tmp_path / "c.zarr")
    extract(folder_dataset, out, tiny_clip)
    again = extract(folder_dataset, out, tiny_clip)
    assert again.resumed and again.images == 0
    with pytest.raises(CacheError, match="different"):
        extract(folder_dataset, out, tiny_clip, unit_rows=8)
    assert CacheReader(out).complete
    replaced = extract(folder_dataset, out, tiny_clip, unit_rows=8, overwrite=True)
    assert not replaced.resumed and replaced.images == 32


def test_sigkill_mid_run_then_rerun_is_bit_identical(tmp_path, tiny_clip):
    """R1: kill -9 after some units are written; the rerun redoes at most the unit in flight."""
    root = str(tmp_path / "many")
    write_folder_dataset(root, images=150)
    reference = str(tmp_path / "reference.zarr")
    extract(root, reference, tiny_clip, batch_size=2)
    out = str(tmp_path / "killed.zarr")
    command = [sys.executable, "-m", "ovml.cli", "extract", "--dataset", "folder", "--root", root,
               "--out", out, "--model", tiny_clip, "--workers", "0", "--unit-rows", "4", "--batch-size", "2",
               "--threads", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_at_kill = wait_for_some_units(out, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    reader = CacheReader(out, allow_partial=True)
    flags = np.concatenate([reader.units_done(s) for s in reader.splits])
    assert not reader.complete and 0 < flags.sum() < len(flags)
    resumed = extract(root, out, tiny_clip, batch_size=2)
    assert resumed.resumed and resumed.units_skipped >= done_at_kill
    assert_same_arrays(all_arrays(reference), all_arrays(out))
    assert CacheReader(out).complete


def wait_for_some_units(out: str, process: subprocess.Popen, timeout: float = 120.0) -> int:
    """Poll the store until at least one unit is flagged done; the number seen."""
    import zarr
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "extraction finished before it could be killed"
        try:
            group = zarr.open_group(out, mode="r")
            done = sum(int(np.asarray(group[f"splits/{s}/units_done"][...]).sum()) for s in ("test", "train"))
            if done >= 2:
                return done
        except (FileNotFoundError, KeyError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError("no unit finished in time")


def test_decompression_bombs_are_rows_not_crashes(tmp_path, monkeypatch):
    """R2, huge images: PIL's pixel limit turns them into an ok = false reason."""
    from PIL import Image

    from ovml.extract.images import decode
    path = str(tmp_path / "big.png")
    Image.new("RGB", (400, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    tensor, reason = decode(path, lambda image: image)
    assert tensor is None and reason.startswith("too large to decode safely")


def forward_sizes(monkeypatch) -> list[int]:
    """The batch sizes every later extraction forwards (Backbone.encode wrapped), in order."""
    sizes: list[int] = []
    load = runner.load_backbone

    def counting(*args, **options):
        backbone = load(*args, **options)
        encode = backbone.encode
        backbone.encode = lambda images: sizes.append(len(images)) or encode(images)
        return backbone

    monkeypatch.setattr(runner, "load_backbone", counting)
    return sizes


def test_batches_span_units(tmp_path, tiny_clip, monkeypatch):
    """--batch-size 256 --unit-rows 64 forwards batches of 256 (not 64), and units are still
    written whole: the cache equals one made with batches inside units."""
    root = str(tmp_path / "many")
    write_folder_dataset(root, images=400)                    # 266 train rows, 134 test rows
    sizes = forward_sizes(monkeypatch)
    spanning = str(tmp_path / "spanning.zarr")
    summary = extract(root, spanning, tiny_clip, unit_rows=64, batch_size=256)
    assert sorted(sizes) == [10, 134, 256] and summary.images == 400
    assert_cache_checks(spanning)
    reader = CacheReader(spanning)
    assert all(reader.units_done(split).all() for split in reader.splits)


def test_resuming_scattered_units_computes_rows_in_the_same_batches(tmp_path, tiny_clip, monkeypatch):
    """Batches of 6 rows straddle units of 4: resuming units 1 and 4 alone forwards the batches
    that hold their rows whole (rows of finished units included, then dropped), so the resumed
    cache is bit for bit the uninterrupted one."""
    root = str(tmp_path / "few")
    write_folder_dataset(root, images=36)                     # 24 train rows: units 0-5
    reference = str(tmp_path / "reference.zarr")
    extract(root, reference, tiny_clip, batch_size=6)
    out = str(tmp_path / "resumed.zarr")
    extract(root, out, tiny_clip, batch_size=6)
    store = open_store(out, "a")                              # units 1 and 4 undone, their rows wiped
    for key, rows in (("units_done", [1, 4]), ("ok", [*range(4, 8), *range(16, 20)]),
                      ("spatial", [*range(4, 8), *range(16, 20)])):
        values = np.asarray(store.array(f"splits/train/{key}")[...])
        values[rows] = 0
        store.array(f"splits/train/{key}")[...] = values
    store.set_attr("complete", False)
    store.close()
    sizes = forward_sizes(monkeypatch)
    resumed = extract(root, out, tiny_clip, batch_size=6)
    assert sizes == [6, 6, 6, 6] and resumed.images == 8       # rows 4-7 lie in 0-11, rows 16-19 in 12-23
    assert_same_arrays(all_arrays(reference), all_arrays(out))


def test_an_hdf5_unit_the_disk_has_no_room_for_is_refused_before_it_is_written(tmp_path, tiny_clip, folder_dataset,
                                                                               monkeypatch):
    """HDF5 cannot take back a write that failed half-way on a full disk, so a unit is refused
    first (one line); with room again the same command completes the cache."""
    import shutil
    from click.testing import CliRunner
    from ovml.cli import main
    out = str(tmp_path / "c.h5")
    args = ["extract", "--dataset", "folder", "--root", folder_dataset, "--out", out, "--model", tiny_clip,
            "--workers", "0", "--unit-rows", "8"]
    usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(path)._replace(free=4096))
    refused = CliRunner().invoke(main, args)
    last = refused.output.strip().splitlines()[-1]
    assert refused.exit_code == 1 and last.startswith("Error:") and "No space left on device" in last, refused.output
    assert "Traceback" not in refused.output
    monkeypatch.setattr(shutil, "disk_usage", usage)
    assert CliRunner().invoke(main, args).exit_code == 0
    assert_cache_checks(out)
