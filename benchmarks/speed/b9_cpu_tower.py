"""B9: the CPU image tower. Images/s of the tower on ovml's default CPU path (ResNet BatchNorms
folded into the convolutions, channels_last, each convolution fused with its ReLU and residual
add, bf16 where the CPU has native bf16) over
the eager float32 tower every cache was made with before, measured side by side in one run, with
the fidelity of the default path beside it; the other candidates are measured in the same
repetitions. Random-weight CLIP (RN50 and ViT-B/16 shapes), photo-like JPEGs of real sizes.

    python -m benchmarks.speed.b9_cpu_tower                         # RN50 then ViT-B/16, every candidate
    python -m benchmarks.speed.b9_cpu_tower --shapes rn50 --images 32 --reps 5
    python -m benchmarks.speed.b9_cpu_tower --compile               # also torch.compile of the default path

Each repetition runs every arm once over the same images (batches of --batch-size), arms back to
back, so a drift of the shared machine hits them alike; an arm's time is its median over the
repetitions. Fidelity, per image against the eager float32 tower on the same pixels: the cosine
of X' (its tokens as one vector) and of the global feature, the smallest over the images; and,
since random-weight features share a large common part that keeps any two images' cosine high,
the cosine between two *different* images for scale and the change relative to how much the
features vary between images. Then the planted world (`--planted`, on by default): LESA's
metrics of a head and of the two baselines on a planted cache, and on the same cache with its
features passed through the new path's precision (tokens perturbed by the tower's measured
change and rounded to bf16, the global feature recomputed from them by the pool, which the
tower runs in float32).

The last line is `RATIO B9 <default over eager fp32>` for the first shape (RN50); the others' ratios
are printed above it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import torch

from benchmarks.common import random_clip_file, write_figures, write_photos
from ovml.extract.backbone import Backbone, load_backbone
from ovml.extract.backbone.engine import describe_cpu, native_bf16_flags
from ovml.extract.images import ImageRows, collate, normalise

Encode = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
NAMES = {"rn50": "RN50", "vit-b16": "ViT-B/16"}


def pixels_of(paths: list[str], side: int) -> torch.Tensor:
    """CLIP's normalised input (N, 3, S, S) of the files, decoded exactly as `extract` does."""
    rows = ImageRows(paths, side)
    return normalise(collate([rows[i] for i in range(len(paths))], side=side).pixels)


def arms_of(base: Backbone, candidates: bool, compiled: bool) -> dict[str, Encode]:
    """The arms over one loaded CLIP: eager fp32 (the earlier tower), the default path, and the
    other candidates."""
    eager = dataclasses.replace(base, precision="fp32", runner=None)     # unfolded, contiguous: the earlier pass
    arms = {"eager fp32": eager.encode, "default": base.encode}
    if not candidates:
        return arms
    if base.kind == "resnet":
        folded = dataclasses.replace(base, precision="fp32", runner=None)
        folded.fold_for_cpu()
        arms["folded BN + channels_last + fused, fp32"] = folded.encode
        unfused = dataclasses.replace(base)
        unfused.fold_for_cpu()
        unfused.fused = None
        arms["default without the fused convolutions"] = unfused.encode
        arms["bf16 autocast alone (no folding, contiguous)"] = dataclasses.replace(base, precision="bf16").encode
    try:
        from ovml.extract.backbone.onnx_tower import onnx_tower
        arms["onnxruntime fp32"] = onnx_tower(eager)
    except Exception as err:  # the onnx extra is optional
        print(f"onnxruntime arm skipped: {err}")
    threads = torch.get_num_threads()
    if threads > 1:
        def one_thread(images: torch.Tensor, encode: Encode = base.encode):
            torch.set_num_threads(1)
            try:
                return encode(images)
            finally:
                torch.set_num_threads(threads)
        arms["default, 1 thread"] = one_thread
    if compiled:
        arms["torch.compile of the default path"] = compiled_encode(base)
    return arms


def compiled_encode(base: Backbone) -> Encode:
    """The default path's pass under torch.compile (compiled on the first call, outside the timing)."""
    graph = torch.compile(base.tokens_and_global)
    autocast = base.precision == "bf16"

    @torch.no_grad()
    def encode(images: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            tokens, global_embedding = graph(images)
        return tokens.float(), global_embedding.float()
    return encode


def features(encode: Encode, pixels: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [encode(pixels[start:start + batch]) for start in range(0, len(pixels), batch)]
    return torch.cat([p[0].float() for p in parts]), torch.cat([p[1].float() for p in parts])


def cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise cosine of two (N, ...) tensors, each row flattened."""
    return torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1).numpy()


def relative_change(changed: torch.Tensor, exact: torch.Tensor) -> np.ndarray:
    """Per image |changed - exact| / |exact - the mean image's exact|, rows flattened."""
    exact, changed = exact.flatten(1).double(), changed.flatten(1).double()
    return ((changed - exact).norm(dim=1) / (exact - exact.mean(dim=0)).norm(dim=1)).numpy()


def fidelity(reference: tuple, other: tuple) -> dict:
    spatial, global_embedding = other
    return {"spatial_cos_min": float(cosines(spatial, reference[0]).min()),
            "global_cos_min": float(cosines(global_embedding, reference[1]).min()),
            "spatial_change_max": float(relative_change(spatial, reference[0]).max()),
            "global_change_max": float(relative_change(global_embedding, reference[1]).max())}


def measure(shape: str, paths: list[str], folder: str, args: argparse.Namespace) -> dict:
    base = load_backbone(random_clip_file(folder, shape))
    pixels = pixels_of(paths, base.input_resolution)
    arms = arms_of(base, args.candidates, args.compile)
    outputs = {name: features(encode, pixels, args.batch_size) for name, encode in arms.items()}  # warm-up too
    reference = outputs["eager fp32"]
    times = {name: [] for name in arms}
    for _ in range(args.reps):
        for name, encode in arms.items():
            started = time.perf_counter()
            features(encode, pixels, args.batch_size)
            times[name].append(time.perf_counter() - started)
    rates = {name: len(paths) / statistics.median(seconds) for name, seconds in times.items()}
    return {"shape": shape, "path": base.describe() | {"note": base.note}, "images": len(paths),
            "rates": rates, "ratios": {name: rate / rates["eager fp32"] for name, rate in rates.items()},
            "fidelity": {name: fidelity(reference, out) for name, out in outputs.items() if name != "eager fp32"},
            "between_images": {"spatial_cos": float(cosines(reference[0], torch.roll(reference[0], 1, 0)).mean()),
                               "global_cos": float(cosines(reference[1], torch.roll(reference[1], 1, 0)).mean())}}


def planted_through_path(source: str, out: str, spatial_error: float, seed: int = 0) -> str:
    """A copy of a planted ResNet cache whose features went through the bf16 path: each image's
    tokens perturbed by Gaussian noise of `spatial_error` times their distance to the mean image
    (the tower's measured change relative to the between-image spread) and rounded to bf16, as
    the tower's last convolution outputs them; the global feature recomputed from those tokens
    by the cache's pool in float32, as the tower's attention pool runs outside autocast."""
    from ovml.cache import store as backends
    from ovml.cache.batches import pool_tensors
    from ovml.cache.pooling import resnet_pool_global
    shutil.copytree(source, out)
    store = backends.open_store(out, "a")
    pool = pool_tensors({key: np.asarray(store.array(f"pool/{key}")[...]) for key in store.children("pool")},
                        torch.device("cpu"))
    heads = int(store.get_attr("num_heads", node="pool"))
    rng = np.random.default_rng(seed)
    for split in store.children("splits"):
        tokens = np.asarray(store.array(f"splits/{split}/spatial")[...], dtype=np.float32)   # (N, HW, C)
        spread = np.linalg.norm((tokens - tokens.mean(axis=0)).reshape(len(tokens), -1), axis=1)   # (N,)
        noise = rng.standard_normal(tokens.shape).astype(np.float32)
        noise *= (spatial_error * spread / np.sqrt(tokens[0].size))[:, None, None]
        changed = torch.from_numpy(tokens + noise).bfloat16().float()
        with torch.no_grad():
            global_embedding = resnet_pool_global(changed, pool, heads)                       # (N, D)
        store.array(f"splits/{split}/spatial")[...] = changed.half().numpy()
        store.array(f"splits/{split}/global")[...] = global_embedding.half().numpy()
    store.flush()
    store.close()
    return out


def planted_metrics(cache: str, run: str) -> dict:
    """mAP (ZSL and GZSL) of the head and the two baselines on `cache`'s test split."""
    import ovml
    from ovml.config import EvalConfig
    metrics = {}
    for split in ("unseen", "all"):
        evaluation = ovml.evaluate(EvalConfig(cache=cache, heads=(run,), split=split, progress=False))
        for row in evaluation.summary["rows"]:
            metrics[f"{row['method']} {split}"] = row["mAP"]
    return metrics


def planted(folder: str, spatial_error: float, train_images: int, epochs: int) -> dict:
    """LESA's metrics on a planted world, and on it through the new path (same trained head)."""
    from ovml.api import train_head
    from ovml.config import TrainConfig
    from ovml.synthetic.planted import PlantedWorld, write_planted_world
    world = write_planted_world(os.path.join(folder, "world.zarr"),
                                PlantedWorld(train_images=train_images, test_images=max(256, train_images // 4)))
    run = os.path.join(folder, "run")
    train_head(TrainConfig(cache=world, out=run, epochs=epochs, progress=False))
    changed = planted_through_path(world, os.path.join(folder, "world-bf16.zarr"), spatial_error)
    before, after = planted_metrics(world, run), planted_metrics(changed, run)
    return {"spatial_error": spatial_error, "before": before, "after": after,
            "largest_change": max(abs(after[key] - before[key]) for key in before)}


def report(result: dict) -> None:
    name, path = NAMES.get(result["shape"], result["shape"]), result["path"]
    print(f"{name}: {result['images']} photo-like JPEGs; default path = engine {path['engine']}, precision "
          f"{path['precision']}{', BatchNorm folded, channels_last, fused convolutions' if path['kind'] == 'resnet' else ''}"
          + (f" ({path['note']})" if path["note"] else ""))
    between = result["between_images"]
    print(f"  for scale, cosine between two different images (eager fp32): X' {between['spatial_cos']:.4f}, "
          f"global {between['global_cos']:.4f}")
    for arm, rate in result["rates"].items():
        line = f"  {arm:46s} {rate:7.2f} images/s  x{result['ratios'][arm]:.2f}"
        if arm in result["fidelity"]:
            f = result["fidelity"][arm]
            line += (f"  min cosine X' {f['spatial_cos_min']:.6f}, global {f['global_cos_min']:.6f}; "
                     f"max change {100 * f['spatial_change_max']:.2f} % / {100 * f['global_change_max']:.2f} % "
                     "of the between-image spread")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="rn50,vit-b16", help="comma-separated: rn50, vit-b16 (RN50 first)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-candidates", dest="candidates", action="store_false",
                        help="only the two arms of the ratio")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling)")
    parser.add_argument("--no-planted", dest="planted", action="store_false")
    parser.add_argument("--planted-train", type=int, default=2000, help="planted world's training images")
    parser.add_argument("--planted-epochs", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    print(describe_cpu() + f"; native bf16: {', '.join(native_bf16_flags()) or 'no'}; torch {torch.__version__}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, p) for p in write_photos(folder, args.images, processes=os.cpu_count() or 1)]
        for shape in args.shapes.split(","):
            results[shape] = measure(shape, paths, folder, args)
            report(results[shape])
        first = results[args.shapes.split(",")[0]]
        if args.planted and first["path"]["kind"] == "resnet":
            error = first["fidelity"]["default"]["spatial_change_max"]
            results["planted"] = planted(folder, error, args.planted_train, args.planted_epochs)
            p = results["planted"]
            print(f"planted world, features through the default path (tokens perturbed by {100 * error:.2f} % of "
                  f"the between-image spread, bf16-rounded; global pooled from them): largest mAP change "
                  f"{p['largest_change']:.3f} points")
            for key, value in p["before"].items():
                print(f"  {key:24s} mAP {value:6.2f} -> {p['after'][key]:6.2f}")
    write_figures(args.json, {"b9_cpu_tower": results})
    for shape, result in list(results.items())[1:]:
        if shape in NAMES:
            print(f"B9 {NAMES[shape]}: {result['ratios']['default']:.2f} default CPU path over eager fp32 "
                  f"images/s ({NAMES[shape]} shapes, precision {result['path']['precision']}, batch "
                  f"{args.batch_size}, {args.images} images)")
    print(f"RATIO B9 {first['ratios']['default']:.2f} default CPU path over eager fp32 images/s "
          f"({NAMES.get(first['shape'])} shapes, precision {first['path']['precision']}, batch {args.batch_size}, "
          f"{args.images} images, median of {args.reps})")


if __name__ == "__main__":
    main()
