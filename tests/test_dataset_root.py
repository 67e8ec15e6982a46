"""Dataset paths stay inside the root: a listed image that resolves outside `--root` (and the
`--images` folder), through `..`, an absolute path or a symlink, is an ok = false row with the
reason (or stops `--strict`), unless `--allow-outside-root`."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from ovml.cache.reader import CacheReader
from ovml.cli import main
from ovml.config import ExtractConfig
from ovml.errors import ExtractError
from ovml.extract.datasets import open_dataset
from ovml.extract.images import OUTSIDE_ROOT, ImageRows
from ovml.extract.runner import run_extraction
from tests.dataset_layouts import write_coco
from tests.folder_dataset import write_folder_dataset


def escaping_dataset(tmp_path) -> tuple[str, dict[str, bool]]:
    """A folder dataset whose labels.csv also lists `../outside.png`, the absolute path of that
    file, a symlink inside the root pointing to it, and a symlink pointing within the root.
    Returns (root, {listed path: whether it must be read})."""
    root = str(tmp_path / "data")
    write_folder_dataset(root, images=4)
    outside = str(tmp_path / "outside.png")
    os.link(os.path.join(root, "img", "000.png"), outside)                # a real image, elsewhere
    os.symlink(outside, os.path.join(root, "img", "out_link.png"))
    os.symlink(os.path.join(root, "img", "001.png"), os.path.join(root, "img", "in_link.png"))
    listed = {"../outside.png": False, outside: False, "img/out_link.png": False, "img/in_link.png": True}
    with open(os.path.join(root, "labels.csv"), "a") as handle:
        handle.writelines(f"{path},train,red_square\n" for path in listed)
    return root, listed


def read_ok(path: str, split: str = "train") -> dict[str, bool]:
    reader = CacheReader(path)
    ok = np.asarray(reader.read(split, "ok", 0, reader.num_rows(split)), dtype=bool)
    return dict(zip(reader.image_ids(split), ok.tolist()))


def extract(root, out, model, **options):
    return run_extraction(ExtractConfig(dataset="folder", root=root, out=out, model=model, workers=0,
                                        unit_rows=4, batch_size=4, progress=False, threads=1, **options))


def test_paths_outside_the_root_are_ok_false_rows(tmp_path, tiny_clip):
    root, listed = escaping_dataset(tmp_path)
    summary = extract(root, str(tmp_path / "c.zarr"), tiny_clip)
    ok = read_ok(str(tmp_path / "c.zarr"))
    assert {path: ok[path] for path in listed} == listed
    assert all(ok[f"img/{i:03d}.png"] for i in range(4) if f"img/{i:03d}.png" in ok)
    with open(summary.errors_file) as handle:
        reasons = {line.split("\t")[1]: line.rstrip("\n").split("\t")[2] for line in handle}
    assert set(reasons) == {path for path, good in listed.items() if not good}
    assert set(reasons.values()) == {OUTSIDE_ROOT}


def test_strict_stops_at_a_path_outside_the_root(tmp_path, tiny_clip):
    root, _ = escaping_dataset(tmp_path)
    with pytest.raises(ExtractError, match=r"outside\.png: path resolves outside the dataset root"):
        extract(root, str(tmp_path / "s.zarr"), tiny_clip, strict=True)


def test_allow_outside_root_reads_them(tmp_path, tiny_clip):
    root, listed = escaping_dataset(tmp_path)
    out = str(tmp_path / "a.zarr")
    result = CliRunner().invoke(main, ["extract", "--dataset", "folder", "--root", root, "--out", out,
                                       "--model", tiny_clip, "--workers", "0", "--allow-outside-root"])
    assert result.exit_code == 0, result.output
    ok = read_ok(out)
    assert all(ok[path] for path in listed)


def test_every_adapter_is_confined(tmp_path):
    """COCO's file_name comes from a downloaded json: `../../x.jpg` there is refused too."""
    root = str(tmp_path / "coco")
    write_coco(root)
    instances = os.path.join(root, "annotations", "instances_val2017.json")
    with open(instances) as handle:
        data = json.load(handle)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not for the cache")
    data["images"][0]["file_name"] = "../../secret.jpg"
    with open(instances, "w") as handle:
        json.dump(data, handle)
    split = open_dataset("coco", root).splits["val"]
    assert split.roots == (os.path.realpath(root),)
    rows = ImageRows(split.paths, 32, split.file_check, roots=split.roots)
    assert rows[0][3] == OUTSIDE_ROOT and rows[2][3] == ""
    assert open_dataset("coco", root, allow_outside_root=True).splits["val"].roots is None
    images = str(tmp_path / "elsewhere")                    # an --images folder the user names is allowed
    assert os.path.realpath(images) in open_dataset("coco", root, images=images).splits["val"].roots
