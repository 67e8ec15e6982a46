"""B1: extraction at its ceilings. `ovml extract`'s steady-state throughput (decode, preprocess,
forward, write; its fixed start-up reported apart) against the slower of two ceilings measured in
the same run: the bare forward on pre-decoded pixels, and decode + preprocess alone with the same
workers. Photo-like JPEGs of real sizes (500x375 to 1024x768), random-weight CLIP.

    python -m benchmarks.speed.b1_extract                       # RN50 shapes, CPU, --decode exact
    python -m benchmarks.speed.b1_extract --decode draft
    python -m benchmarks.speed.b1_extract --shape vit-b16 --images 64      # random-weight ViT-B/16, CPU
    python -m benchmarks.speed.b1_extract --gpu --decode gpu --workers 16 --images 20000 --batch-size 256

Each repetition runs the three arms back to back; the ratio is the median over repetitions of
pipeline / min(forward, decode), so a drift of a shared machine hits the arms of a repetition alike.
Steady state (all arms that decode): the batches after the workers' first round, over the time
since that round (ovml.extract.summary.SteadyRate); what `extract` spends beyond that is its fixed cost.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from benchmarks.common import random_clip_file, write_figures, write_folder_dataset
from ovml.config import ExtractConfig
from ovml.extract.backbone import Backbone, load_backbone
from ovml.extract.datasets import open_dataset
from ovml.extract.device_decode import DevicePixels, resolve_decode
from ovml.extract.images import decode_pixels, normalise, read_image_file
from ovml.extract.runner import image_loader, run_extraction, unit_batches
from ovml.extract.summary import SteadyRate


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rate(backbone: Backbone, pixels: torch.Tensor, batches: list[list[int]]) -> float:
    """Images/s of the bare forward over the same batches as `extract`: pre-decoded pixels (one
    batch's worth, pinned on CUDA, reused) -> device -> normalise -> CLIP -> float16 features
    back on the host; no decode and no writes."""
    device = backbone.device
    sync(device)
    started = time.perf_counter()
    for batch in batches:
        images = pixels[:len(batch)].to(device, non_blocking=True)
        spatial, global_embedding = backbone.encode(normalise(images))
        spatial.half().to("cpu", non_blocking=True), global_embedding.half().to("cpu", non_blocking=True)
    sync(device)
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def decode_rate(root: str, batches: list[list[int]], backbone: Backbone, decode: str, workers: int) -> float:
    """Steady images/s of decode + preprocess alone: the same loader and workers as `extract`,
    plus the device step (the GPU decode in gpu mode), nothing else."""
    split = open_dataset("folder", root).splits["train"]
    loader = image_loader(split, batches, backbone.input_resolution, decode, workers, backbone.device)
    to_device = DevicePixels(backbone.device, backbone.input_resolution)
    steady = SteadyRate(max(1, workers))
    for batch in loader:
        to_device(batch)
        sync(backbone.device)
        steady.mark(len(batch.rows))
    return steady.images_per_second


def pipeline(root: str, model: str, out: str, args: argparse.Namespace, device: str):
    return run_extraction(ExtractConfig(dataset="folder", root=root, out=out, model=model, device=device,
                                        batch_size=args.batch_size, workers=args.workers, decode=args.decode,
                                        unit_rows=args.unit_rows, progress=False, overwrite=True))


def measure(args: argparse.Namespace, device: str, folder: str, data: str) -> dict:
    """The three arms, `args.repeats` times, on the photos and model kept in `data`."""
    os.makedirs(data, exist_ok=True)
    model = random_clip_file(data, args.shape)
    root = os.path.join(data, f"photos_{args.images}")
    started = time.perf_counter()
    if not os.path.exists(os.path.join(root, "labels.csv")):
        write_folder_dataset(root, args.images, photos=True, processes=args.make_processes)
    made = time.perf_counter() - started
    backbone = load_backbone(model, device)
    decode, note = resolve_decode(args.decode, backbone.device)
    if note:
        print(note)
    split = open_dataset("folder", root).splits["train"]
    batches = unit_batches(list(range(-(-len(split) // args.unit_rows))), args.unit_rows, len(split),
                           args.batch_size)
    pixels = torch.stack([decode_pixels(read_image_file(p)[0], backbone.input_resolution)[0]
                          for p in split.paths[:args.batch_size]])                  # (B, 3, S, S)
    if backbone.device.type == "cuda":
        pixels = pixels.pin_memory()
    out = os.path.join(folder, "cache.zarr")
    pipeline(root, model, out, args, device)        # warm-up: page cache, thread pools, cuDNN autotuning
    forward_rate(backbone, pixels, batches[:2])
    reps = []
    for rep in range(args.repeats):
        forward = forward_rate(backbone, pixels, batches)
        decoded = decode_rate(root, batches, backbone, decode, args.workers)
        summary = pipeline(root, model, out, args, device)
        steady = summary.steady.images_per_second
        reps.append({"forward": forward, "decode": decoded, "pipeline": steady, "fixed_seconds": summary.fixed_seconds,
                     "ratio": steady / min(forward, decoded), "phases": summary.lines()[1]})
        print(f"rep {rep + 1}: bare forward {forward:.1f} images/s, decode + preprocess {decoded:.1f} images/s, "
              f"extract {steady:.1f} images/s steady after {summary.fixed_seconds:.1f} s fixed "
              f"-> {reps[-1]['ratio']:.3f}", flush=True)
    median = {key: statistics.median(r[key] for r in reps) for key in ("forward", "decode", "pipeline",
                                                                        "fixed_seconds", "ratio")}
    return median | {"bound": "forward" if median["forward"] <= median["decode"] else "decode",
                     "decode_mode": decode, "make_seconds": made, "last_phases": reps[-1]["phases"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--unit-rows", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="decode processes (0: in the main process)")
    parser.add_argument("--decode", choices=["exact", "draft", "gpu"], default="exact")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", choices=["rn50", "tiny", "vit-b16"], default="rn50")
    parser.add_argument("--make-processes", type=int, default=os.cpu_count() or 1,
                        help="processes writing the generated photos")
    parser.add_argument("--gpu", action="store_true", help="run on cuda:0 (fp16, as extract --gpu)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--data", help="keep the generated photos and model here (reused when present)")
    args = parser.parse_args()
    device = "cuda:0" if args.gpu else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args, device, folder, args.data or folder)
    print(f"{args.shape} on {device}, {args.images} photo-like JPEGs (written in {result['make_seconds']:.0f} s), "
          f"batch {args.batch_size}, {args.workers} decode workers, --decode {result['decode_mode']}: "
          f"bare forward {result['forward']:.1f}, decode + preprocess {result['decode']:.1f}, extract "
          f"{result['pipeline']:.1f} images/s steady (median of {args.repeats}); fixed cost "
          f"{result['fixed_seconds']:.1f} s; the ceiling is the {result['bound']}")
    print(f"last run's {result['last_phases']}")
    write_figures(args.json, {"B1": vars(args) | result | {"device": device}})
    print(f"RATIO B1 {result['ratio']:.3f} extract-steady-images-per-s / min(bare-forward, decode+preprocess) "
          f"({args.shape}, {args.images} images, batch {args.batch_size}, {args.workers} workers, "
          f"--decode {result['decode_mode']}, {device}, ceiling: {result['bound']})")


if __name__ == "__main__":
    main()
