"""`ovml check`: a valid cache passes in both backends and both backbone kinds; each broken
cache fails naming what broke. An independent checker of schema v1 (docs/cache.md), where
`$OVML_CACHE_CHECKER` names one (a script taking the cache's path), agrees."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ovml.cache import store as backends
from ovml.cache.schema import vit_pool_shapes
from ovml.cache.pooling import vit_pool_global
from ovml.cache.writer import CachePlan, LabelTable, UnitRows, create_cache, mark_complete, write_unit
from ovml.cli import main
from ovml.synthetic.planted import PlantedWorld, write_planted_world

INDEPENDENT_CHECKER = os.environ.get("OVML_CACHE_CHECKER", "")
SMALL = PlantedWorld(train_images=70, test_images=40, unit_rows=16)


def check(path: str, *options: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["check", path, "--json", *options])
    return result.exit_code, json.loads(result.output)


def write_vit_cache(path: str, seed: int = 0) -> str:
    """A small ViT-kind cache (W = 128, 2 heads, 2 x 2 patches, D = 32) whose global is the
    stored last block applied to cls and spatial."""
    rng = np.random.default_rng(seed)
    width, dim, grid, heads, n = 128, 32, 2, 2, 20
    pool = {key: rng.normal(0, 0.05, shape).astype(np.float32)
            for key, shape in vit_pool_shapes(width, dim).items()}
    for name in ("ln_1", "ln_2", "ln_post"):
        pool[f"{name}_weight"] += 1.0
    text = rng.normal(size=(6, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    names = [f"label_{j}" for j in range(6)]
    backbone = {"name": "tiny-vit", "kind": "vit", "weights_sha256": "0" * 64, "input_resolution": 32,
                "grid": [grid, grid], "channels": width, "embed_dim": dim, "feature_dtype": "float16"}
    plan = CachePlan(backbone, {"name": "hand-made"}, ["{}"], LabelTable(names, names, np.arange(6) < 4, text),
                     pool, heads, {"train": n}, unit_rows=8)
    store = create_cache(path, plan)
    cls = rng.normal(size=(n, width)).astype(np.float16)
    spatial = rng.normal(size=(n, grid * grid, width)).astype(np.float16)
    tensors = {key: torch.from_numpy(value) for key, value in pool.items()}
    global_embedding = vit_pool_global(torch.from_numpy(cls).float(), torch.from_numpy(spatial).float(), tensors,
                                       heads).numpy().astype(np.float16)
    labels = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, 6))
    tokens = np.concatenate([cls[:, None], spatial], axis=1)                     # [cls; spatial]
    for unit, start in enumerate(range(0, n, 8)):
        rows = slice(start, min(start + 8, n))
        write_unit(store, "train", unit, 8, UnitRows(tokens[rows], global_embedding[rows], labels[rows],
                                                     [f"img{i}" for i in range(rows.start, rows.stop)],
                                                     np.ones(rows.stop - rows.start, dtype=bool)))
    mark_complete(store)
    store.close()
    return path


@pytest.fixture(params=[".zarr", ".h5"])
def small_cache(request, tmp_path) -> str:
    return write_planted_world(str(tmp_path / f"world{request.param}"), SMALL)


def edit(path: str, change) -> None:
    store = backends.open_store(path, "a")
    try:
        change(store)
    finally:
        store.close()


def scale_global(store):
    array = store.array("splits/test/global")
    array[:8] = (np.asarray(array[:8], dtype=np.float32) * 1.5).astype(np.float16)


def bad_label(store):
    array = store.array("splits/train/labels")
    block = np.asarray(array[:4])
    block[2, 3] = 2
    array[:4] = block


BREAKAGES = {
    "invariant": (scale_global, "splits/test/global: CLIP's attention pool (pool/*) applied to spatial does not give global"),
    "deleted": (lambda store: store.root.__delitem__("splits/train/ok"), "splits/train/ok is missing"),
    "schema": (lambda store: store.set_attr("ovml_cache", 7), "ovml_cache is 7"),
    "label value": (bad_label, "splits/train/labels holds values outside {-1, 0, 1}"),
    "incomplete": (lambda store: store.set_attr("complete", False), "root attribute complete is not true"),
}


def test_a_valid_cache_passes(small_cache):
    assert check(small_cache) == (0, {"ok": True, "problems": []})
    result = CliRunner().invoke(main, ["check", small_cache])
    assert result.exit_code == 0 and "schema v1 OK" in result.output


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_cache_fails_naming_what_broke(small_cache, breakage):
    change, message = BREAKAGES[breakage]
    edit(small_cache, change)
    code, report = check(small_cache)
    assert code == 1 and not report["ok"]
    assert any(message in problem for problem in report["problems"]), report["problems"]
    result = CliRunner().invoke(main, ["check", small_cache])
    assert result.exit_code == 1 and "problem: " in result.output and "problem(s)" in result.output


def test_units_not_done_in_a_complete_cache_fail(tmp_path):
    path = write_planted_world(str(tmp_path / "w.zarr"), SMALL)
    edit(path, lambda store: store.array("splits/train/units_done").__setitem__(1, False))
    code, report = check(path)
    assert code == 1 and any("splits/train/units_done: 1 of 5 units not done" in p for p in report["problems"])


def test_a_vit_cache_passes_and_its_broken_invariant_fails(tmp_path):
    path = write_vit_cache(str(tmp_path / "vit.zarr"))
    assert check(path) == (0, {"ok": True, "problems": []})
    edit(path, lambda store: store.array("splits/train/cls").__setitem__(slice(0, 4), 0))
    code, report = check(path)
    assert code == 1 and any("the last ViT block (pool/*) applied to cls and spatial does not give global" in p
                             for p in report["problems"])
    edit(path, lambda store: store.root.__delitem__("pool/proj"))
    assert any(p == "pool/proj is missing" for p in check(path)[1]["problems"])


def test_rows_zero_skips_the_invariant(tmp_path):
    path = write_planted_world(str(tmp_path / "w.zarr"), SMALL)
    edit(path, scale_global)
    assert check(path, "--rows", "0")[0] == 0


@pytest.mark.skipif(not os.path.isfile(INDEPENDENT_CHECKER),
                    reason="no independent cache checker named by $OVML_CACHE_CHECKER: "
                           "`ovml check` alone carries the assertions")
@pytest.mark.parametrize("kind", ["resnet.zarr", "resnet.h5", "vit.zarr"])
def test_an_independent_checker_agrees(tmp_path, kind):
    path = str(tmp_path / kind)
    write_vit_cache(path) if kind.startswith("vit") else write_planted_world(path, SMALL)
    assert subprocess.run([sys.executable, INDEPENDENT_CHECKER, path], capture_output=True).returncode == 0
