"""B1: extraction pipeline overhead. `ovml extract` end to end (decode, preprocess, forward, write)
against the bare forward on pre-decoded tensors, same model and images, same run.

    python benchmarks/bench_extract.py                 # tiny and full-size random-weight RN50, CPU
    python benchmarks/bench_extract.py --gpu           # on cuda:0 (fp16, as extract --gpu)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.common import median_seconds, random_clip_file, write_folder_dataset  # noqa: E402
from ovml.config import ExtractConfig  # noqa: E402
from ovml.extract.backbone import load_backbone  # noqa: E402
from ovml.extract.images import decode  # noqa: E402
from ovml.extract.runner import run_extraction  # noqa: E402


def measure(shape: str, images: int, batch: int, workers: int, device: str, repeats: int, folder: str) -> dict:
    model = random_clip_file(folder, shape)
    root = os.path.join(folder, f"data_{images}")
    if not os.path.exists(os.path.join(root, "labels.csv")):
        write_folder_dataset(root, images)
    backbone = load_backbone(model, device)
    paths = sorted(os.path.join(root, "img", f) for f in os.listdir(os.path.join(root, "img")))
    tensors = torch.stack([decode(p, backbone.preprocess)[0] for p in paths])

    def bare():
        for start in range(0, len(tensors), batch):
            spatial, global_embedding = backbone.encode(tensors[start:start + batch])
            spatial.half().cpu(), global_embedding.half().cpu()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    summaries = []

    def pipeline():
        out = os.path.join(folder, f"{shape}.zarr")
        summaries.append(run_extraction(ExtractConfig(dataset="folder", root=root, out=out, model=model,
                                                      device=device, batch_size=batch, workers=workers,
                                                      progress=False, overwrite=True)))

    pipeline()  # warm-up: file system caches, thread pools
    bare_times, pipeline_times = [], []
    for _ in range(repeats):  # interleaved, so drifts of a shared machine hit both arms alike
        bare_times.append(median_seconds(bare, 1))
        pipeline_times.append(median_seconds(pipeline, 1))
    bare_seconds, pipeline_seconds = statistics.median(bare_times), statistics.median(pipeline_times)
    rows = os.path.join(folder, f"{shape}.zarr", "splits")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(rows) for f in fs)
    return {"shape": shape, "bare": images / bare_seconds, "pipeline": images / pipeline_seconds,
            "bytes_per_image": size / images, "phases": summaries[-1].lines()[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", default="tiny,rn50")
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    device = "cuda:0" if args.gpu else "cpu"
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes.split(","):
            result = measure(shape, args.images, args.batch_size, args.workers, device, args.repeats, folder)
            results.append(result)
            print(f"{shape:5s} on {device}: bare forward {result['bare']:.1f} images/s, end to end "
                  f"{result['pipeline']:.1f} images/s (ratio {result['pipeline'] / result['bare']:.3f}), "
                  f"{result['bytes_per_image'] / 1e3:.1f} kB/image of row arrays on disk; last run's {result['phases']}")
    last = results[-1]
    print(f"RATIO B1 {last['pipeline'] / last['bare']:.3f} pipeline-images-per-s / bare-forward-images-per-s "
          f"({last['shape']}, {args.images} images, batch {args.batch_size}, {args.workers} decode workers, {device})")


if __name__ == "__main__":
    main()
