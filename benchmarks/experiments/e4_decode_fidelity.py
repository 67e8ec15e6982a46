"""E4: what `extract --decode draft` and `--decode gpu` do to the features, and what they save.

Photo-like JPEGs of real sizes (benchmarks/common.py: 500x375 to 1024x768), random-weight CLIP
(tiny and RN50 shapes). For each decode mode, on the images it changes: the pixels' PSNR against
the exact path's; the cosine of X' (each image's HW x C tokens as one vector, and token by token)
and of CLIP's global feature to the exact path's; and, because random-weight features share a
large common part that keeps every cosine near 1 (the cosine between two *different* images is
printed for scale), the change relative to how much features vary between images:
|f - f_exact| / |f_exact - mean over images of f_exact|. Also the decode + preprocess rate of
one process. Without a GPU the gpu mode runs its own code with torchvision's
CPU JPEG decoder, so it measures the resize (torchvision's antialiased bicubic against PIL's)
but not nvJPEG's own rounding; with --gpu it runs on cuda:0 (features in fp16 there, so the
exact path is recomputed on the GPU as the reference).

    python -m benchmarks.experiments.e4_decode_fidelity [--images 40] [--gpu] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import random_clip_file, write_figures, write_photos
from ovml.extract.backbone import load_backbone
from ovml.extract.device_decode import DevicePixels
from ovml.extract.images import ImageRows, collate, normalise

MODES = ("exact", "draft", "gpu")


def decoded(paths: list[str], side: int, mode: str, device: torch.device) -> tuple[torch.Tensor, float]:
    """uint8 pixels (N, 3, S, S) of every file through one decode mode, and images/s (one process)."""
    started = time.perf_counter()
    rows = ImageRows(paths, side, mode=mode)
    batch = collate([rows[i] for i in range(len(paths))], side=side)
    pixels = DevicePixels(device, side)(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return pixels, len(paths) / (time.perf_counter() - started)


def cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise cosine of two (N, ...) tensors, each row flattened."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (torch.nn.functional.cosine_similarity(a, b, dim=1)).cpu().numpy()


def relative_change(changed: torch.Tensor, exact: torch.Tensor) -> np.ndarray:
    """Per image |changed - exact| / |exact - the mean image's exact|, each row flattened."""
    exact, changed = exact.flatten(1).double(), changed.flatten(1).double()
    spread = (exact - exact.mean(dim=0)).norm(dim=1)
    return ((changed - exact).norm(dim=1) / spread).cpu().numpy()


def psnr(changed: torch.Tensor, exact: torch.Tensor) -> np.ndarray:
    """Per image PSNR (dB) of uint8 pixels against the exact path's."""
    error = (changed.double() - exact.double()).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12)
    return (10 * torch.log10(255.0 ** 2 / error)).cpu().numpy()


def compare(model: str, paths: list[str], device: torch.device, drafted: np.ndarray) -> dict:
    backbone = load_backbone(model, device)
    side = backbone.input_resolution
    features, rates, all_pixels = {}, {}, {}
    for mode in MODES:
        pixels, rates[mode] = decoded(paths, side, mode, device)
        all_pixels[mode] = pixels
        spatial, global_embedding = [], []
        for start in range(0, len(paths), 16):
            x, g = backbone.encode(normalise(pixels[start:start + 16]))
            spatial.append(x.float().cpu())
            global_embedding.append(g.float().cpu())
        features[mode] = (torch.cat(spatial), torch.cat(global_embedding))
    exact_spatial, exact_global = features["exact"]
    others = torch.roll(exact_spatial, 1, dims=0)
    result = {"side": side, "decode_images_per_s": rates,
              "spatial_cos_between_images": float(cosines(exact_spatial, others).mean())}
    for mode in MODES[1:]:
        spatial, global_embedding = features[mode]
        image_cos = cosines(spatial, exact_spatial)
        token_cos = cosines(spatial.flatten(0, 1), exact_spatial.flatten(0, 1))
        global_cos = cosines(global_embedding, exact_global)
        chosen = drafted if mode == "draft" else np.ones_like(drafted)
        result[mode] = {"images_changed": int(chosen.sum()),
                        "pixel_psnr_db_median": float(np.median(psnr(all_pixels[mode], all_pixels["exact"])[chosen])),
                        "spatial_relative_change_median": float(np.median(relative_change(spatial, exact_spatial)[chosen])),
                        "spatial_relative_change_max": float(relative_change(spatial, exact_spatial)[chosen].max()),
                        "global_relative_change_median": float(np.median(relative_change(global_embedding, exact_global)[chosen])),
                        "spatial_cos_mean": float(image_cos[chosen].mean()),
                        "spatial_cos_min": float(image_cos[chosen].min()),
                        "token_cos_p01": float(np.quantile(token_cos.reshape(len(paths), -1)[chosen], 0.01)),
                        "global_cos_mean": float(global_cos[chosen].mean()),
                        "global_cos_min": float(global_cos[chosen].min())}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--shapes", default="tiny,rn50")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = torch.device("cuda:0" if args.gpu else "cpu")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, p) for p in write_photos(folder, args.images, processes=os.cpu_count() or 1)]
        from PIL import Image
        for shape in args.shapes.split(","):
            model = random_clip_file(folder, shape)
            side = load_backbone(model, "cpu").input_resolution
            drafted = np.array([min(Image.open(p).size) >= 2 * side for p in paths])
            results[shape] = compare(model, paths, device, drafted)
    for shape, result in results.items():
        rates = result["decode_images_per_s"]
        print(f"{shape} ({result['side']} px input) on {device}: decode + preprocess, one process: "
              + ", ".join(f"{mode} {rates[mode]:.0f}" for mode in MODES) + " images/s; X' cosine between "
              f"two different images {result['spatial_cos_between_images']:.4f} (for scale)")
        for mode in MODES[1:]:
            r = result[mode]
            print(f"  {mode:5s} vs exact on the {r['images_changed']} images it changes: pixels PSNR "
                  f"{r['pixel_psnr_db_median']:.1f} dB; X' cosine mean {r['spatial_cos_mean']:.5f} (min "
                  f"{r['spatial_cos_min']:.5f}, 1st percentile of tokens {r['token_cos_p01']:.5f}), change "
                  f"{100 * r['spatial_relative_change_median']:.1f} % of the between-image spread (max "
                  f"{100 * r['spatial_relative_change_max']:.1f} %); global cosine mean {r['global_cos_mean']:.5f} "
                  f"(min {r['global_cos_min']:.5f}), change {100 * r['global_relative_change_median']:.1f} %")
    write_figures(args.json, {"decode_fidelity": {"device": str(device), "images": args.images} | results})


if __name__ == "__main__":
    main()
