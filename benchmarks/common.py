"""Shared helpers for the benchmarks: random-weight CLIP files and generated image folders."""
from __future__ import annotations

import os
import statistics
import time
import warnings

import numpy as np
import torch
from PIL import Image

# openai/CLIP's RN50: embed 1024, 224 px, layers (3, 4, 6, 3), width 64; text 512 wide, 8 heads, 12 layers.
RN50 = dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
            vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=512,
            transformer_heads=8, transformer_layers=12)
TINY = dict(embed_dim=64, image_resolution=96, vision_layers=(1, 1, 1, 1), vision_width=8,
            vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
            transformer_heads=1, transformer_layers=1)
# openai/CLIP's ViT-B/16 (D 512, 224 px, 12 blocks of width 768) and ViT-L/14 (D 768, 224 px,
# 24 blocks of width 1024; text 768 wide, 12 heads).
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
               transformer_layers=12)
VIT_L14 = dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
               context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12,
               transformer_layers=12)
SHAPES = {"tiny": TINY, "rn50": RN50, "vit-b16": VIT_B16, "vit-l14": VIT_L14}


def random_clip_file(folder: str, shape: str, seed: int = 0) -> str:
    """Save a random-weight CLIP (a name in SHAPES) as a state dict; returns its path."""
    path = os.path.join(folder, f"random_{shape}.pt")
    if os.path.exists(path):
        return path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip.model
    torch.manual_seed(seed)
    model = clip.model.CLIP(**SHAPES[shape])
    clip.model.convert_weights(model)
    torch.save(model.float().state_dict(), path)
    return path


def write_images(folder: str, count: int, size: tuple[int, int] = (320, 256), seed: int = 0) -> list[str]:
    """`count` JPEGs of smooth random content (compressible like photos) under folder/img."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse, "RGB").resize(size, Image.BICUBIC)
        path = f"img/{i:05d}.jpg"
        image.save(os.path.join(folder, path), quality=90)
        paths.append(path)
    return paths


def write_folder_dataset(folder: str, count: int, labels: int = 20, seed: int = 0) -> str:
    """A folder dataset (classes.csv, labels.csv) over generated images."""
    paths = write_images(folder, count, seed=seed)
    rng = np.random.default_rng(seed)
    names = [f"label_{j:03d}" for j in range(labels)]
    with open(os.path.join(folder, "classes.csv"), "w") as handle:
        handle.write("name,seen\n" + "".join(f"{n},{int(j < labels * 3 // 4)}\n" for j, n in enumerate(names)))
    with open(os.path.join(folder, "labels.csv"), "w") as handle:
        handle.write("path,split,labels\n")
        for path in paths:
            chosen = [n for n in names if rng.random() < 0.15] or [names[0]]
            handle.write(f"{path},train,{';'.join(chosen)}\n")
    return folder


def median_seconds(run, repeats: int) -> float:
    """Median wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
