"""CLIP Vision Transformers as backbones (docs/cache.md, "Vision Transformer backbones"): loading by
file (state dict, TorchScript) and by name, one forward pass for [cls; X'] and global, the
invariant on extracted caches in both backends, resume and Dask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ovml.cache.pooling import vit_pool_global
from ovml.cache.reader import CacheReader
from ovml.config import ExtractConfig
from ovml.extract.backbone import BackboneError, VitBackbone, load_backbone
from ovml.extract.backbone.weights import import_clip
from ovml.extract.distributed import UNITS_PER_TASK, _worker_config, extract_units_task
from ovml.extract.runner import begin, finish, run_extraction
from tests.cache_arrays import all_arrays, assert_cache_checks, assert_same_arrays

SETTINGS = dict(dataset="folder", workers=0, unit_rows=4, batch_size=3, progress=False, threads=2)


def extract(root: str, out: str, model: str, **options):
    return run_extraction(ExtractConfig(**{**SETTINGS, "root": root, "out": out, "model": model, **options}))


def test_state_dict_and_torchscript_load_the_same_vit(tiny_vit_files):
    from_state = load_backbone(tiny_vit_files["state_dict"])
    from_script = load_backbone(tiny_vit_files["torchscript"])
    assert isinstance(from_state, VitBackbone) and isinstance(from_script, VitBackbone)
    reference = tiny_vit_files["model"].state_dict()
    for key, value in from_script.model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert from_state.describe() == {**from_state.describe(), "kind": "vit", "grid": [4, 4], "channels": 128,
                                     "embed_dim": 64, "input_resolution": 64, "feature_dtype": "float16"}
    assert from_state.num_heads == 2


def test_tokens_and_global_come_from_one_pass_and_the_last_block_gives_global(tiny_vit_files):
    backbone = load_backbone(tiny_vit_files["state_dict"], precision="fp32")   # exact to clip's own fp32 forward
    images = torch.randn(3, 3, 64, 64)
    tokens, global_embedding = backbone.encode(images)
    assert tokens.shape == (3, 1 + 16, 128) and global_embedding.shape == (3, 64)
    assert torch.allclose(global_embedding, tiny_vit_files["model"].encode_image(images), atol=1e-4)
    pool = {key: torch.from_numpy(value) for key, value in backbone.pool_weights().items()}
    pooled = vit_pool_global(tokens[:, 0], tokens[:, 1:], pool, backbone.num_heads, torch.float64)
    assert torch.allclose(pooled.float(), global_embedding, atol=1e-4)


def test_every_openai_vit_name_goes_through_clip_download(tmp_path, monkeypatch):
    clip = import_clip()
    asked = []

    def fake_download(url, root):
        asked.append(url)
        raise RuntimeError("no network here")

    monkeypatch.setattr(clip.clip, "_download", fake_download)
    for name in ("ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"):
        with pytest.raises(BackboneError, match=f"cannot download CLIP {name}"):
            load_backbone(name, download_root=str(tmp_path))
        assert asked[-1] == clip.clip._MODELS[name]


def test_incomplete_vit_state_dict_is_refused_in_one_line(tmp_path):
    broken = tmp_path / "vit.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, broken)
    with pytest.raises(BackboneError, match="not a complete CLIP state dict") as caught:
        load_backbone(str(broken))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_vit_cache_holds_cls_spatial_and_global_that_agree(folder_dataset, tiny_vit, tmp_path, suffix):
    out = str(tmp_path / f"vit{suffix}")
    summary = extract(folder_dataset, out, tiny_vit)
    assert summary.images == 32 and summary.failures == 4
    assert_cache_checks(out)
    with CacheReader(out) as reader:
        assert reader.kind == "vit" and reader.hw == 16 and reader.channels == 128
        spatial, cls = reader.read("train", "spatial", 0, 8), reader.read("train", "cls", 0, 8)
        assert spatial.shape == (8, 16, 128) and cls.shape == (8, 128) and spatial.dtype == np.float16
        tokens = reader.read("train", "tokens", 0, 8)
        assert np.array_equal(tokens[:, 0], cls) and np.array_equal(tokens[:, 1:], spatial)
        ok = reader.read("train", "ok", 0, 8)
        pool = {key: torch.from_numpy(value) for key, value in reader.pool.items()}
        pooled = vit_pool_global(torch.from_numpy(cls).double(), torch.from_numpy(spatial).double(), pool,
                                 reader.num_heads, torch.float64).numpy()
        stored = reader.read("train", "global", 0, 8).astype(np.float64)
        assert np.abs(pooled - stored)[ok].max() <= 2e-3 * np.abs(stored).max() + 1e-3
        assert not tokens[~ok].any()


def test_vit_cache_resumes_and_zarr_equals_hdf5(folder_dataset, tiny_vit, tmp_path):
    zarr_out, hdf5_out = str(tmp_path / "v.zarr"), str(tmp_path / "v.h5")
    extract(folder_dataset, zarr_out, tiny_vit)
    again = extract(folder_dataset, zarr_out, tiny_vit)
    assert again.resumed and again.images == 0
    extract(folder_dataset, hdf5_out, tiny_vit)
    assert_same_arrays(all_arrays(zarr_out), all_arrays(hdf5_out))


def test_vit_dask_tasks_write_the_same_bytes(folder_dataset, tiny_vit, tmp_path):
    """The Dask path's own code (the coordinator's plan, each task's units written into the store
    by `extract_units_task`) run in this process: the cluster itself is the ResNet test's concern."""
    single, tasks = str(tmp_path / "single.zarr"), str(tmp_path / "tasks.zarr")
    extract(folder_dataset, single, tiny_vit)
    config = ExtractConfig(**{**SETTINGS, "root": folder_dataset, "out": tasks, "model": tiny_vit,
                              "dask": "local:2"})
    job = begin(config)
    for split, units in job.pending().items():
        for start in range(0, len(units), UNITS_PER_TASK):
            extract_units_task(_worker_config(config), split, units[start:start + UNITS_PER_TASK])
    finish(job)
    assert_same_arrays(all_arrays(single), all_arrays(tasks))


def test_fp16_as_on_cuda_gives_clips_own_fp16_embedding(tiny_vit_files):
    """On CUDA clip's weights stay fp16 (convert_weights); the same model on this CPU checks that
    the split forward keeps clip's dtypes: global equals clip's own fp16 encode_image."""
    import copy

    model = copy.deepcopy(tiny_vit_files["model"])
    import_clip().model.convert_weights(model)
    backbone = VitBackbone(model, "tiny", "0" * 64, torch.device("cpu"), None)
    images = torch.randn(2, 3, 64, 64)
    tokens, global_embedding = backbone.encode(images)
    assert tokens.dtype == global_embedding.dtype == torch.float16
    with torch.no_grad():
        assert torch.equal(global_embedding, model.encode_image(images.half()))
