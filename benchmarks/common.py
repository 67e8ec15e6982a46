"""Shared helpers for the benchmarks: random-weight CLIP files, generated image folders, timing,
and the command that reruns a benchmark module in a fresh process.

Every benchmark is a module run from the repository root, `python -m benchmarks.speed.b1_extract`
or `python -m benchmarks.experiments.e1_planted_table`; benchmarks/README.md lists them all.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from ovml.extract.backbone import import_clip

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def random_clip_file(folder: str, shape: str, seed: int = 0, embed_dim: int | None = None) -> str:
    """Save a random-weight CLIP (a name in SHAPES; `embed_dim` replaces its D) as a state dict;
    returns its path."""
    settings = dict(SHAPES[shape], **({"embed_dim": embed_dim} if embed_dim else {}))
    path = os.path.join(folder, f"random_{shape}{f'_d{embed_dim}' if embed_dim else ''}.pt")
    if os.path.exists(path):
        return path
    clip = import_clip()     # clip-anytorch through ovml's pkg_resources shim
    torch.manual_seed(seed)
    model = clip.model.CLIP(**settings)
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


# Sizes of real photos: NUS-WIDE / Flickr "medium" (500 px), COCO (640 px), Open Images (1024 px).
PHOTO_SIZES = ((500, 375), (375, 500), (500, 333), (640, 480), (480, 640), (640, 427), (800, 600),
               (1024, 768), (768, 1024), (1024, 683))


def photo_like(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like RGB image: a smooth two-colour gradient, forty soft-edged shapes from 1 % to
    50 % of the frame, fine texture and sensor noise, so that JPEG and resampling see photo
    statistics (about 1.5 bits per pixel at quality 90)."""
    from PIL import ImageDraw, ImageFilter
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height + 1) / 2        # (H, W) in [0, 1]
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = low + ramp[..., None] * (high - low)                                   # (H, W, 3)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        box_w, box_h = np.exp(rng.uniform(np.log(0.01), np.log(0.5), 2)) * (width, height)
        x, y = rng.uniform(-0.1, 1) * width, rng.uniform(-0.1, 1) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse((x, y, x + box_w, y + box_h), fill=colour)
        elif shape == 1:
            draw.rectangle((x, y, x + box_w, y + box_h), fill=colour)
        else:
            points = [(x + rng.uniform(0, box_w), y + rng.uniform(0, box_h)) for _ in range(5)]
            draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    texture = 128 + rng.standard_normal((height // 4 + 1, width // 4 + 1, 3), dtype=np.float32) * 8
    texture = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8), "RGB").resize(size, Image.BICUBIC)
    noisy = (np.asarray(image, dtype=np.float32) + np.asarray(texture, dtype=np.float32) - 128 +
             rng.standard_normal((height, width, 3), dtype=np.float32) * 2)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _write_photo(job: tuple[str, tuple[int, int], int]) -> None:
    path, size, seed = job
    photo_like(size, seed).save(path, quality=90)


def write_photos(folder: str, count: int, seed: int = 0, processes: int = 1) -> list[str]:
    """`count` photo-like JPEGs (quality 90) of real photo sizes under folder/img; returns the
    paths relative to `folder`. `processes` > 1 writes them in a process pool."""
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    paths = [f"img/{i:05d}.jpg" for i in range(count)]
    jobs = [(os.path.join(folder, path), PHOTO_SIZES[(seed + i) % len(PHOTO_SIZES)], seed * 1_000_003 + i)
            for i, path in enumerate(paths)]
    if processes > 1:
        import multiprocessing
        with multiprocessing.Pool(processes) as pool:
            pool.map(_write_photo, jobs, chunksize=16)
    else:
        for job in jobs:
            _write_photo(job)
    return paths


def write_folder_dataset(folder: str, count: int, labels: int = 20, seed: int = 0, photos: bool = False,
                         processes: int = 1) -> str:
    """A folder dataset (classes.csv, labels.csv) over generated images: small smooth JPEGs, or
    with `photos` photo-like JPEGs of real sizes."""
    paths = write_photos(folder, count, seed, processes) if photos else write_images(folder, count, seed=seed)
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


def module_command(module: str, *arguments: str) -> list[str]:
    """`python -m module arguments...`: how a benchmark reruns itself (`__spec__.name`) in a fresh
    process; run it with `cwd=REPOSITORY` so that `benchmarks` is importable there."""
    return [sys.executable, "-m", module, *arguments]


def write_figures(path: str | None, figures: dict, indent: int = 2) -> None:
    """A benchmark's figures as JSON at `path` (its `--json`), for gpu_suite.sh and the README;
    nothing when no path is given."""
    if path:
        with open(path, "w") as handle:
            json.dump(figures, handle, indent=indent, default=float)
