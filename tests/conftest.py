"""Shared fixtures: a tiny random-weight CLIP saved as a state dict and as TorchScript, and a
small folder dataset of generated images."""
from __future__ import annotations

import warnings

import pytest
import torch

from tests.folder_dataset import write_folder_dataset

TINY = dict(embed_dim=64, image_resolution=96, vision_layers=(1, 1, 1, 1), vision_width=8,
            vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
            transformer_heads=1, transformer_layers=1)


TINY_VIT = dict(embed_dim=64, image_resolution=64, vision_layers=3, vision_width=128,
                vision_patch_size=16, context_length=77, vocab_size=49408, transformer_width=64,
                transformer_heads=1, transformer_layers=1)


def build_tiny_vit(seed: int = 0) -> torch.nn.Module:
    """A random CLIP ViT: 64 px, 16 px patches (grid 4x4), W=128 (2 heads), 3 blocks, D=64;
    fp16-rounded like `build_tiny_clip`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip.model
    torch.manual_seed(seed)
    model = clip.model.CLIP(**TINY_VIT)
    clip.model.convert_weights(model)
    return model.float().eval()


def save_clip_files(model: torch.nn.Module, folder, stem: str, resolution: int) -> dict:
    """{'state_dict': path, 'torchscript': path, 'model': model}: one CLIP saved both ways."""
    state_path = str(folder / f"{stem}_state.pt")
    torch.save(model.state_dict(), state_path)
    script_path = str(folder / f"{stem}_script.pt")
    images = torch.randn(1, 3, resolution, resolution)
    tokens = torch.zeros(1, 77, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, (images, tokens)).save(script_path)
    return {"state_dict": state_path, "torchscript": script_path, "model": model}


def build_tiny_clip(seed: int = 0) -> torch.nn.Module:
    """A random CLIP ResNet: 96 px, grid 3x3, C=256, D=64, 4 pool heads; fp16-rounded so that
    saving and reloading (through clip's fp16 build_model) is lossless."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip.model
    torch.manual_seed(seed)
    model = clip.model.CLIP(**TINY)
    with torch.no_grad():  # random BatchNorm statistics, so the stages are not identity-like
        for module in model.visual.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    clip.model.convert_weights(model)
    return model.float().eval()


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory) -> dict:
    """{'state_dict': path, 'torchscript': path, 'model': the module} of one tiny CLIP."""
    return save_clip_files(build_tiny_clip(), tmp_path_factory.mktemp("clip"), "tiny", TINY["image_resolution"])


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_files) -> str:
    """Path of the tiny CLIP state dict, usable as `--model FILE`."""
    return tiny_clip_files["state_dict"]


@pytest.fixture(scope="session")
def tiny_vit_files(tmp_path_factory) -> dict:
    """{'state_dict': path, 'torchscript': path, 'model': the module} of one tiny CLIP ViT."""
    return save_clip_files(build_tiny_vit(), tmp_path_factory.mktemp("vit"), "tiny_vit",
                           TINY_VIT["image_resolution"])


@pytest.fixture(scope="session")
def tiny_vit(tiny_vit_files) -> str:
    """Path of the tiny CLIP ViT state dict, usable as `--model FILE`."""
    return tiny_vit_files["state_dict"]


@pytest.fixture
def folder_dataset(tmp_path) -> str:
    """A small folder dataset (classes.csv, labels.csv, images) with a few broken images."""
    root = tmp_path / "shapes"
    write_folder_dataset(str(root), images=24, broken=True)
    return str(root)




@pytest.fixture(scope="session")
def planted_world(tmp_path_factory) -> str:
    """The default planted world (4000 train / 1000 test images), written once per session."""
    from ovml.synthetic.planted import write_planted_world
    return write_planted_world(str(tmp_path_factory.mktemp("world") / "planted.zarr"))


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> str:
    """A small planted world for tests about mechanics rather than learning."""
    from ovml.synthetic.planted import PlantedWorld, write_planted_world
    return write_planted_world(str(tmp_path_factory.mktemp("small") / "small.zarr"),
                               PlantedWorld(train_images=512, test_images=128))


@pytest.fixture(scope="session")
def trained_run(planted_world, tmp_path_factory) -> str:
    """An OVML head trained on the planted world through the CLI with the defaults."""
    from click.testing import CliRunner

    from ovml.cli import main
    out = str(tmp_path_factory.mktemp("runs") / "planted-ovml")
    result = CliRunner().invoke(main, ["train-head", "--cache", planted_world, "--out", out, "--epochs", "10",
                                       "--pseudo-unseen", "0.1"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_clip, tmp_path_factory) -> dict:
    """A tiny cache extracted with the tiny CLIP and an OVML head trained on it for one epoch:
    {'cache': path, 'run': folder, 'images': the dataset's image folder}."""
    from click.testing import CliRunner

    from ovml.cli import main
    folder = tmp_path_factory.mktemp("tiny-run")
    root = str(folder / "shapes")
    write_folder_dataset(root, images=24)
    paths = {"cache": str(folder / "shapes.zarr"), "run": str(folder / "shapes-ovml"), "images": root + "/img"}
    for args in (["extract", "--dataset", "folder", "--root", root, "--out", paths["cache"], "--model", tiny_clip,
                  "--workers", "0", "--unit-rows", "8"],
                 ["train-head", "--cache", paths["cache"], "--out", paths["run"], "--epochs", "1"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    return paths
