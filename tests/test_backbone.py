"""Stage 1 backbone and text: loading paths, X' shapes, one-pass global, text embeddings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ovml.extract.backbone import BackboneError, load_backbone
from ovml.extract.backbone.weights import file_sha256, import_clip
from ovml.extract.text import PromptError, embed_labels, load_prompts
from tests.cache_arrays import clip_attention_pool


def test_state_dict_and_torchscript_load_the_same_model(tiny_clip_files):
    from_state = load_backbone(tiny_clip_files["state_dict"])
    from_script = load_backbone(tiny_clip_files["torchscript"])
    for (key, a), (_, b) in zip(from_state.model.state_dict().items(), from_script.model.state_dict().items()):
        assert torch.equal(a, b), key
    reference = tiny_clip_files["model"].state_dict()
    for key, value in from_state.model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert from_state.sha256 == file_sha256(tiny_clip_files["state_dict"])
    assert from_state.describe() == {**from_state.describe(), "grid": [3, 3], "channels": 256, "embed_dim": 64,
                                     "input_resolution": 96, "feature_dtype": "float16"}


def test_spatial_tokens_and_global_come_from_one_pass(tiny_clip_files):
    backbone = load_backbone(tiny_clip_files["state_dict"], precision="fp32")   # exact to clip's own fp32 forward
    images = torch.randn(3, 3, 96, 96)
    spatial, global_embedding = backbone.encode(images)
    assert spatial.shape == (3, 9, 256) and global_embedding.shape == (3, 64)
    assert torch.allclose(global_embedding, tiny_clip_files["model"].encode_image(images), atol=1e-4)
    pooled = clip_attention_pool(spatial.numpy(), backbone.pool_weights(), backbone.num_heads)
    assert np.allclose(pooled, global_embedding.numpy(), atol=1e-4)


def test_unknown_models_are_refused(tmp_path):
    not_clip = tmp_path / "not_clip.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, not_clip)
    with pytest.raises(BackboneError, match="not a CLIP state dict"):
        load_backbone(str(not_clip))
    with pytest.raises(BackboneError, match="neither a CLIP model name"):
        load_backbone("RN51")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not weights")
    with pytest.raises(BackboneError, match="junk.pt"):
        load_backbone(str(junk))


def test_named_model_goes_through_clip_download(tmp_path, monkeypatch):
    """A name resolves through clip's own download (which checks the sha256), into download_root."""
    asked = {}

    def fake_download(url, root):
        asked.update(url=url, root=root)
        raise RuntimeError("no network here")

    clip = import_clip()
    monkeypatch.setattr(clip.clip, "_download", fake_download)
    with pytest.raises(BackboneError, match="cannot download CLIP RN50"):
        load_backbone("RN50", download_root=str(tmp_path))
    assert asked["root"] == str(tmp_path) and asked["url"] == clip.clip._MODELS["RN50"]
    monkeypatch.setenv("OVML_CLIP_CACHE", str(tmp_path / "env"))
    with pytest.raises(BackboneError):
        load_backbone("RN101")
    assert asked["root"] == str(tmp_path / "env")


def test_text_embeddings_are_normalised_prompt_means(tiny_clip_files):
    clip = import_clip()
    model = tiny_clip_files["model"]
    templates = ["a photo of a {}.", "a drawing of the {}."]
    got = embed_labels(model, ["red_square", "cat"], templates, progress=False)
    with torch.no_grad():
        for row, name in enumerate(["red square", "cat"]):
            each = model.encode_text(clip.tokenize([t.format(name) for t in templates])).float()
            each = each / each.norm(dim=-1, keepdim=True)
            mean = each.mean(0)
            assert np.allclose(got[row], (mean / mean.norm()).numpy(), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_prompt_sources(tmp_path):
    assert load_prompts(None) == ["a photo of a {}."]
    assert len(load_prompts("imagenet80")) == 80
    good = tmp_path / "prompts.txt"
    good.write_text("a {} here.\r\n\r\nthe {}.\n")
    assert load_prompts(str(good)) == ["a {} here.", "the {}."]
    bad = tmp_path / "bad.txt"
    bad.write_text("a {} here.\nno slot\n")
    with pytest.raises(PromptError, match="bad.txt:2"):
        load_prompts(str(bad))
