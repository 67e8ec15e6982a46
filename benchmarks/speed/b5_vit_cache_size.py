"""B5-ViT: what a ViT cache costs on disk, and a planning table of cache sizes per dataset and backbone.

Measured: random-weight CLIP models of full size (ViT-B/16, ViT-L/14 and, for the ResNet
compression ratio, RN50) on generated photo-like images; the tokens a cache stores per image
(a ViT's [cls; X']: the post-LayerNorm residual stream entering its last block; a ResNet's
post-ReLU X'), written float16 as one chunk with the cache's codecs (Zarr: zstd, HDF5: gzip).
Computed: the planning table, float16 bytes of each backbone's shapes (X' + cls + global) times
the compression measured here for its family, times each dataset's listed images.

    python -m benchmarks.speed.b5_vit_cache_size [--images 32] [--shapes rn50,vit-b16,vit-l14]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

from benchmarks.speed.b5_cache_size import stored_bytes
from benchmarks.common import random_clip_file, write_images
from ovml.extract.backbone import load_backbone
from ovml.extract.images import decode

# name: (family, grid side, C or W, D) of openai/CLIP's published models
BACKBONES = {"RN50": ("resnet", 7, 2048, 1024), "RN101": ("resnet", 7, 2048, 512),
             "RN50x4": ("resnet", 9, 2560, 640), "RN50x16": ("resnet", 12, 3072, 768),
             "RN50x64": ("resnet", 14, 4096, 1024), "ViT-B/32": ("vit", 7, 768, 512),
             "ViT-B/16": ("vit", 14, 768, 512), "ViT-L/14": ("vit", 16, 1024, 768),
             "ViT-L/14@336px": ("vit", 24, 1024, 768)}
# images listed by each benchmark's release files (README "Benchmark datasets")
DATASETS = {"NUS-WIDE (161,789 + 107,859)": 269_648, "COCO 2017 (118,287 + 5,000)": 123_287,
            "Open Images v4 (9,011,219 train + 125,436 test)": 9_136_655}


def stored_tokens(folder: str, shape: str, count: int, batch: int) -> np.ndarray:
    """The tokens a cache stores for `count` generated images through a random `shape` CLIP."""
    backbone = load_backbone(random_clip_file(folder, shape))
    paths = write_images(folder, count)
    tokens = []
    for start in range(0, count, batch):
        images = torch.stack([decode(os.path.join(folder, p), backbone.preprocess)[0] for p in paths[start:start + batch]])
        tokens.append(backbone.encode(images)[0].float().numpy())
    return np.concatenate(tokens)                                              # (n, T, C)


def fp16_bytes(family: str, side: int, channels: int, embed_dim: int) -> int:
    """Float16 bytes per image of X' (+ cls for a ViT) + global."""
    tokens = side * side + (1 if family == "vit" else 0)
    return 2 * (tokens * channels + embed_dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shapes", default="rn50,vit-b16,vit-l14")
    args = parser.parse_args()
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes.split(","):
            tokens = stored_tokens(folder, shape, args.images, args.batch_size)
            n, t, c = tokens.shape
            sizes = {suffix: stored_bytes(os.path.join(folder, f"{shape}{suffix}"), tokens) / n
                     for suffix in (".zarr", ".h5")}
            half = t * c * 2
            family = "vit" if shape.startswith("vit") else "resnet"
            ratios.setdefault(family, []).append(sizes[".zarr"] / half)
            print(f"{shape}: {t} x {c} tokens/image, {float((tokens == 0).mean()):.1%} exact zeros; raw float32 "
                  f"{2 * half / 1e3:.1f} kB, float16 {half / 1e3:.1f} kB, zarr (fp16+zstd) {sizes['.zarr'] / 1e3:.1f} kB, "
                  f"hdf5 (fp16+gzip) {sizes['.h5'] / 1e3:.1f} kB per image ({args.images} images)", flush=True)
    ratio = {family: float(np.mean(values)) for family, values in ratios.items()}
    print(f"\nzarr / float16: {', '.join(f'{k} {v:.3f}' for k, v in ratio.items())} (applied below per family)")
    print("| backbone | tokens x width | kB/image on disk | " + " | ".join(DATASETS) + " |")
    print("|---|---|---|" + "---|" * len(DATASETS))
    for name, (family, side, channels, embed_dim) in BACKBONES.items():
        if family not in ratio:
            continue
        per_image = fp16_bytes(family, side, channels, embed_dim) * ratio[family]
        tokens = f"{side * side}{' + 1' if family == 'vit' else ''} x {channels}"
        cells = " | ".join(f"{per_image * images / 1e9:,.0f} GB" for images in DATASETS.values())
        print(f"| {name} | {tokens} | {per_image / 1e3:.0f} | {cells} |")
    if "vit" in ratio:
        print(f"RATIO B5-ViT {1 / (ratio['vit'] / 2):.2f} raw-float32-bytes / zarr-bytes-on-disk "
              f"(ViT tokens, random weights, {args.images} images)")


if __name__ == "__main__":
    main()
