"""B5: what the cache costs on disk. Raw float32 bytes per image of RN50-shaped X' (49 x 2048,
post-ReLU, taken from a random-weight RN50 on generated photos-like images) against the bytes
the cache stores per image (float16 + zstd in Zarr, float16 + gzip in HDF5).

    python -m benchmarks.speed.b5_cache_size [--images 64] [--gpu]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

from benchmarks.common import random_clip_file, write_images
from ovml.cache.store import open_store
from ovml.extract.backbone import load_backbone
from ovml.extract.images import decode

UNIT = 64


def rn50_features(folder: str, count: int, device: str) -> np.ndarray:
    backbone = load_backbone(random_clip_file(folder, "rn50"), device)
    paths = write_images(folder, count)
    tensors = torch.stack([decode(os.path.join(folder, p), backbone.preprocess)[0] for p in paths])
    spatial, _ = backbone.encode(tensors)
    return spatial.float().cpu().numpy()                                       # (N, 49, 2048)


def stored_bytes(path: str, spatial: np.ndarray) -> int:
    store = open_store(path, "w")
    array = store.create("spatial", spatial.shape, np.float16, (UNIT,) + spatial.shape[1:])
    array[...] = spatial.astype(np.float16)
    store.close()
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--gpu", action="store_true", help="compute the features on cuda:0 (fp16, as extract --gpu)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        spatial = rn50_features(folder, args.images, "cuda:0" if args.gpu else "cpu")
        raw = spatial.shape[1] * spatial.shape[2] * 4
        zeros = float((spatial == 0).mean())
        sizes = {suffix: stored_bytes(os.path.join(folder, f"x{suffix}"), spatial) / args.images
                 for suffix in (".zarr", ".h5")}
    print(f"X' per image: {spatial.shape[1]} x {spatial.shape[2]}, {zeros:.1%} exact zeros (post-ReLU)")
    print(f"raw float32: {raw / 1e3:.1f} kB/image; zarr (fp16+zstd): {sizes['.zarr'] / 1e3:.1f} kB/image; "
          f"hdf5 (fp16+gzip): {sizes['.h5'] / 1e3:.1f} kB/image")
    print(f"Open Images scale (9M images): {9e6 * sizes['.zarr'] / 1e12:.2f} TB in Zarr vs {9e6 * raw / 1e12:.2f} TB raw")
    print(f"RATIO B5 {raw / sizes['.zarr']:.2f} raw-float32-bytes / zarr-bytes-on-disk "
          f"(RN50 X' 49x2048, random weights, {args.images} images)")


if __name__ == "__main__":
    main()
