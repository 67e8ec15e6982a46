"""The image tower's CPU path (ovml/extract/backbone/engine.py) on the tiny CLIPs: the default
path within cosine 0.999 of the fp32 tower per image, folding exact to rounding, the onnxruntime
engine, the path recorded in the cache and mixing refused, and the planted world's metrics
through the new path's precision."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.speed.b9_cpu_tower import planted_metrics, planted_through_path
from ovml.cache.reader import CacheReader
from ovml.cli import main
from ovml.extract.backbone import BackboneError, load_backbone
from ovml.extract.backbone import engine as engines
from ovml.extract.backbone.engine import resolve_path


def cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1).numpy()


def reference(path: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The earlier tower: eager fp32, BatchNorms unfolded, contiguous layout."""
    backbone = load_backbone(path, precision="fp32")
    backbone.trunk = None
    return backbone.encode(images)


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_the_default_path_keeps_every_image_within_cosine_0999(family, tiny_clip, tiny_vit):
    path, side = (tiny_clip, 96) if family == "resnet" else (tiny_vit, 64)
    images = torch.randn(6, 3, side, side)
    tokens, global_embedding = reference(path, images)
    default = load_backbone(path)
    assert default.describe()["precision"] == ("bf16" if engines.native_bf16_flags() else "fp32")
    assert default.describe()["engine"] == "torch"
    fast_tokens, fast_global = default.encode(images)
    assert fast_tokens.dtype == fast_global.dtype == torch.float32
    assert cosines(fast_tokens, tokens).min() >= 0.999 and cosines(fast_global, global_embedding).min() >= 0.999
    folded_tokens, folded_global = load_backbone(path, precision="fp32").encode(images)   # folded, channels_last
    assert torch.allclose(folded_tokens, tokens, atol=1e-4) and torch.allclose(folded_global, global_embedding, atol=1e-4)


def test_the_onnxruntime_engine_gives_the_fp32_features(tiny_clip, tiny_vit):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    for path, side in ((tiny_clip, 96), (tiny_vit, 64)):
        backbone = load_backbone(path, engine="onnxruntime")
        assert backbone.describe()["engine"] == "onnxruntime" and backbone.describe()["precision"] == "fp32"
        images = torch.randn(3, 3, side, side)
        tokens, global_embedding = backbone.encode(images)
        expected = reference(path, images)
        assert torch.allclose(tokens, expected[0], atol=1e-4) and torch.allclose(global_embedding, expected[1], atol=1e-4)


def test_paths_resolve_per_device_and_bf16_falls_back_where_the_cpu_lacks_it(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert resolve_path("torch", "auto", cuda) == engines.TowerPath("torch", "fp16", None)
    assert resolve_path("onnxruntime", "auto", cpu) == engines.TowerPath("onnxruntime", "fp32", None)
    with pytest.raises(BackboneError, match="runs the tower on the CPU"):
        resolve_path("onnxruntime", "auto", cuda)
    with pytest.raises(BackboneError, match="engine 'tensorrt' unknown"):
        resolve_path("tensorrt", "auto", cpu)
    monkeypatch.setattr(engines, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert resolve_path("torch", "auto", cpu) == engines.TowerPath("torch", "fp32", None)
    fallback = resolve_path("torch", "bf16", cpu)
    assert fallback.precision == "fp32" and "no native bf16" in fallback.note
    monkeypatch.setattr(engines, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert resolve_path("torch", "auto", cpu).precision == "bf16"
    assert resolve_path("torch", "fp32", cpu).precision == "fp32"


def extract(root: str, out: str, model: str, *options: str):
    return CliRunner().invoke(main, ["extract", "--dataset", "folder", "--root", root, "--out", out, "--model", model,
                                     "--workers", "0", "--unit-rows", "8", *options])


def test_the_cache_records_its_tower_path_and_refuses_to_mix(folder_dataset, tiny_clip, tmp_path):
    fp32, default = str(tmp_path / "fp32.zarr"), str(tmp_path / "default.zarr")
    assert extract(folder_dataset, fp32, tiny_clip, "--tower-precision", "fp32").exit_code == 0
    result = extract(folder_dataset, default, tiny_clip)
    assert result.exit_code == 0, result.output
    with CacheReader(fp32) as exact, CacheReader(default) as fast:
        assert (exact.backbone["engine"], exact.backbone["precision"]) == ("torch", "fp32")
        assert fast.backbone["precision"] == ("bf16" if engines.native_bf16_flags() else "fp32")
        ok = np.asarray(exact.store.array("splits/train/ok")[...])
        for key in ("spatial", "global"):
            a = torch.from_numpy(np.asarray(exact.store.array(f"splits/train/{key}")[...], dtype=np.float32)[ok])
            b = torch.from_numpy(np.asarray(fast.store.array(f"splits/train/{key}")[...], dtype=np.float32)[ok])
            assert cosines(b, a).min() >= 0.999, key
    if engines.native_bf16_flags():
        mixed = extract(folder_dataset, fp32, tiny_clip)        # fp32 cache, bf16 tower: refused
        assert mixed.exit_code == 1 and "different precision" in mixed.output, mixed.output
    try:
        import onnx, onnxruntime  # noqa: F401
    except ImportError:
        return
    mixed = extract(folder_dataset, fp32, tiny_clip, "--engine", "onnxruntime")
    assert mixed.exit_code == 1 and "different engine" in mixed.output, mixed.output


def test_planted_metrics_hold_through_the_new_paths_precision(planted_world, trained_run, tmp_path):
    """The planted world's tokens changed as the bf16 path changes X' (2 % of the between-image
    spread, above what B9 measures at RN50 shapes; the tiny CLIP maps every image to nearly the
    same features, so its own ratio says nothing), bf16-rounded, the global pooled from them:
    LESA's mAP of the trained head and of the baselines moves by less than 0.2 points."""
    changed = planted_through_path(planted_world, str(tmp_path / os.path.basename(planted_world)), 0.02)
    before, after = planted_metrics(planted_world, trained_run), planted_metrics(changed, trained_run)
    assert set(before) == set(after) and len(before) >= 6
    assert max(abs(after[key] - before[key]) for key in before) < 0.2, (before, after)
