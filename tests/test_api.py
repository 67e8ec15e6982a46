"""`import ovml`: the README's snippet, lazy cache arrays on both backends, the tagger against
`ovml predict --json`, and a cheap import."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import ovml
from ovml.cache.reader import CacheReader
from ovml.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_snippet() -> str:
    """The first ```python block of README.md's "## Python API" section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_runs(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_run["cache"], "cache/pets.zarr")
    os.makedirs("photos")
    Image.open(os.path.join(tiny_run["images"], "000.png")).convert("RGB").save("photos/dog.jpg")
    namespace: dict = {}
    exec(compile(readme_snippet(), "README.md (Python API)", "exec"), namespace)
    assert namespace["result"].out == "runs/pets-ovml" and os.path.exists("runs/pets-ovml/head.pt")
    rows = namespace["evaluation"].summary["rows"]
    assert {row["method"] for row in rows} >= {"clip-ml", "ovml"} and all(0 <= row["mAP"] <= 100 for row in rows)
    (prediction,) = namespace["predictions"]
    assert prediction.image == "photos/dog.jpg" and len(prediction.labels) == 2
    assert prediction.labels[0][1] >= prediction.labels[1][1]


def extract(root: str, out: str, model: str) -> None:
    result = CliRunner().invoke(main, ["extract", "--dataset", "folder", "--root", root, "--out", out,
                                       "--model", model, "--workers", "0", "--unit-rows", "8"])
    assert result.exit_code == 0, result.output


def add_cls(path: str, split: str, rows: int, width: int) -> np.ndarray:
    """Write a `cls` array as a ViT cache holds one (N, W) float16, chunked like the rows."""
    values = np.random.default_rng(0).normal(size=(rows, width)).astype(np.float16)
    if path.endswith(".h5"):
        import h5py
        with h5py.File(path, "a") as handle:
            handle.create_dataset(f"splits/{split}/cls", data=values, chunks=(8, width))
    else:
        import zarr
        group = zarr.open_group(path, mode="a")
        group.create_array(f"splits/{split}/cls", shape=values.shape, chunks=(8, width), dtype="float16")[...] = values
    return values


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_open_cache_gives_lazy_arrays_on_the_stored_chunks(tiny_run, tiny_clip, tmp_path, suffix):
    path = tiny_run["cache"]
    if suffix == ".h5":
        path = str(tmp_path / "shapes.h5")
        extract(os.path.dirname(tiny_run["images"]), path, tiny_clip)
    else:
        path = str(shutil.copytree(path, tmp_path / "shapes.zarr"))
    cls = add_cls(path, "train", CacheReader(path).num_rows("train"), 16)
    with ovml.open_cache(path) as cache, CacheReader(path) as reader:
        assert cache.label_names == reader.names and cache.splits == ["test", "train"]
        assert cache.seen.tolist() == [True, True, True, False, False]
        for split in cache.splits:
            arrays = cache.arrays(split)
            assert set(arrays) == {"spatial", "global", "labels", "ok"} | ({"cls"} if split == "train" else set())
            n = reader.num_rows(split)
            for field in ("spatial", "global", "labels", "ok"):
                lazy = arrays[field]
                assert lazy.chunks[0] == tuple(min(8, n - start) for start in range(0, n, 8))
                np.testing.assert_array_equal(lazy.compute(), reader.read(split, field, 0, n))
            assert arrays["labels"].dtype == np.int8 and arrays["labels"].shape == (n, 5)
        np.testing.assert_array_equal(cache.arrays("train")["cls"].compute(), cls)
        assert int(cache.arrays("train")["labels"].sum(axis=0).compute().sum()) == int(reader.read_labels("train").sum())


def cli_predict(*args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["predict", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_tagger_scores_as_ovml_predict_does(tiny_run, tmp_path):
    image = os.path.join(tiny_run["images"], "003.png")
    tagger = ovml.load_tagger(tiny_run["run"])
    expected = cli_predict(image, "--labels", "cat, red square,dog", "--head", tiny_run["run"], "--top-k", "2",
                           "--alpha", "0.3")[0]["labels"]
    with open(image, "rb") as handle:
        data = handle.read()
    inputs = [image, Image.open(image), data, str(tmp_path / "missing.png")]
    predictions = tagger.predict(inputs, ["cat", "red square", "dog"], top_k=2, alpha=0.3)
    assert [p.image for p in predictions] == [image, image, "image 2", str(tmp_path / "missing.png")]
    for prediction in predictions[:3]:
        assert [name for name, _ in prediction.labels] == [label["name"] for label in expected]
        np.testing.assert_allclose([s for _, s in prediction.labels], [label["score"] for label in expected],
                                   atol=2e-6)
    assert predictions[3].labels == [] and predictions[3].error == "missing file"
    (alone,) = tagger.predict(image, "cat, red square,dog", top_k=2, alpha=0.3)
    assert alone.as_json()["labels"] == expected
    (mapped,) = tagger.predict(image, ["cat", "dog"], top_k=2, attention=True)
    assert mapped.attention.shape == (2, 3, 3) and mapped.picture.size == (96, 80)
    assert tagger.vocabulary() == ["red_square", "green_disc", "blue_bar", "yellow_dot", "white_ring"]


def test_import_ovml_is_cheap_and_documented():
    code = ("import sys, ovml, ovml.cli; ovml.TrainConfig, ovml.EvalConfig, ovml.open_cache, ovml.load_tagger; "
            "print(sorted(m for m in ('torch', 'dask', 'clip', 'zarr', 'h5py', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    assert set(ovml.__all__) >= {"open_cache", "load_tagger", "train_head", "evaluate", "TrainConfig", "EvalConfig"}
    for name in ovml.__all__:
        assert getattr(ovml, name).__doc__, name
    assert set(ovml.__all__) <= set(dir(ovml))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ovml.nothing
