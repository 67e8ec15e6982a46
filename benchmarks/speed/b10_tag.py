"""B10: `ovml tag`'s speed against the stages it builds on, and its memory at scale.

    python -m benchmarks.speed.b10_tag                      # both ratios, CPU
    python -m benchmarks.speed.b10_tag --memory             # also peak RSS, 10,000 vs 100,000 cached images x 5,000 labels
    python -m benchmarks.speed.b10_tag --gpu --shape rn50 --images 2048 --workers 8

Cache arm: `tag --cache` (all labels, top-k 5, a Parquet table) against `eval`'s scoring of the
same cache, head and labels (`evaluate_cache`, the same images and label columns), each timed
whole, in the same run, on a planted world with a head trained for one epoch; then CLIP-ML alone
the same way. Folder arm: `tag` over a folder against `extract` over the same JPEGs, same batch
and decode workers, both at their steady rate (ovml.extract.runner.SteadyRate: the batches after
the workers' first round). Each repetition runs the arms back to back; ratios are medians.
Memory (`--memory`): peak RSS of a fresh process tagging a random cache of N images x 5,000
labels (CLIP-ML, top-k 5, Parquet), N = 10,000 and 100,000: equal peaks mean memory does not grow
with images x labels.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import random_clip_file, write_folder_dataset
from ovml.config import EvalConfig, ExtractConfig, TagConfig, TrainConfig
from ovml.evaluation.evaluate import evaluate_cache
from ovml.extract.runner import run_extraction
from ovml.synthetic.planted import PlantedWorld, write_planted_world
from ovml.tag.runner import run_tag
from ovml.train.trainer import train_head

MEMORY_LABELS = 5000


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def cache_arm(folder: str, args: argparse.Namespace, device: str) -> dict:
    """tag --cache seconds against eval's, with a head and with CLIP-ML alone (medians)."""
    cache = os.path.join(folder, "planted.zarr")
    write_planted_world(cache, PlantedWorld(train_images=1024, test_images=args.cache_images))
    run = os.path.join(folder, "head")
    train_head(TrainConfig(cache=cache, out=run, epochs=1, lr=2e-4, device=device, progress=False))
    rates = {}
    for name, heads in (("head", (run,)), ("clip-ml", ())):
        evaluate = EvalConfig(cache=cache, heads=heads, split="all", alphas=(0.0,) if heads else (),
                              baselines=() if heads else ("clip-ml",), device=device, progress=False)
        ratios = []
        for rep in range(args.repeats):
            out = os.path.join(folder, f"tag-{name}-{rep}")
            tag = TagConfig(out=out, cache=cache, splits=("test",), head=heads[0] if heads else None, top_k=5,
                            formats=("parquet",), device=device, progress=False)
            eval_seconds = timed(lambda: evaluate_cache(evaluate))
            tag_seconds = timed(lambda: run_tag(tag))
            ratios.append(eval_seconds / tag_seconds)
            print(f"cache, {name}, rep {rep + 1}: eval {args.cache_images / eval_seconds:.0f} images/s, "
                  f"tag {args.cache_images / tag_seconds:.0f} images/s -> {ratios[-1]:.2f}", flush=True)
        rates[name] = statistics.median(ratios)
    return rates


def folder_arm(folder: str, args: argparse.Namespace, device: str) -> float:
    """tag's steady images/s over extract's, same JPEGs, batch and workers (median)."""
    model = random_clip_file(folder, args.shape)
    root = write_folder_dataset(os.path.join(folder, "photos"), args.images)
    extract = ExtractConfig(dataset="folder", root=root, out=os.path.join(folder, "photos.zarr"), model=model,
                            device=device, batch_size=args.batch_size, workers=args.workers, progress=False,
                            overwrite=True)
    labels = ",".join(f"label {j}" for j in range(args.labels))
    ratios = []
    run_extraction(extract)                             # warm-up: page cache, thread pools
    for rep in range(args.repeats):
        extracted = run_extraction(extract).steady.images_per_second
        tag = TagConfig(out=os.path.join(folder, f"tag-folder-{rep}"), inputs=(os.path.join(root, "img"),),
                        labels=labels, model=model, top_k=5, formats=tuple(args.formats.split(",")), device=device,
                        batch_size=args.batch_size, workers=args.workers, progress=False)
        tagged = run_tag(tag).steady.images_per_second
        ratios.append(tagged / extracted)
        print(f"folder, rep {rep + 1}: extract {extracted:.1f} images/s steady, tag {tagged:.1f} images/s steady "
              f"-> {ratios[-1]:.3f}", flush=True)
    return statistics.median(ratios)


MEMORY_RUN = """
import resource, sys
from ovml.config import TagConfig
from ovml.tag.runner import run_tag
run_tag(TagConfig(out=sys.argv[2], cache=sys.argv[1], top_k=5, formats=("parquet",), progress=False))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory_arm(folder: str, counts: list[int]) -> dict[int, float]:
    """Peak RSS (MB) of a fresh process tagging N cached images x MEMORY_LABELS labels."""
    peaks = {}
    for count in counts:
        cache = os.path.join(folder, f"wide_{count}.zarr")
        started = time.perf_counter()
        write_planted_world(cache, PlantedWorld(seen=MEMORY_LABELS * 4 // 5, unseen=MEMORY_LABELS // 5,
                                                channels=64, grid=2, train_images=64, test_images=count,
                                                unit_rows=1024, big_cells=(1, 2), small_cells=(1, 1)))
        made = time.perf_counter() - started
        env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", ".."))
        done = subprocess.run([sys.executable, "-c", MEMORY_RUN, cache, os.path.join(folder, f"tagged_{count}")],
                              capture_output=True, text=True, env=env, check=True)
        peaks[count] = int(done.stdout.split()[-1]) / 1024
        print(f"memory: {count} images x {MEMORY_LABELS} labels (cache written in {made:.0f} s): "
              f"peak RSS {peaks[count]:.0f} MB", flush=True)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-images", type=int, default=4000, help="test images of the planted cache")
    parser.add_argument("--images", type=int, default=512, help="JPEGs of the folder arm")
    parser.add_argument("--labels", type=int, default=100, help="vocabulary of the folder arm")
    parser.add_argument("--formats", default="jsonl,parquet", help="tag's outputs in the folder arm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shape", choices=["tiny", "rn50"], default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also the peak-RSS check (writes ~1 GB of cache)")
    parser.add_argument("--memory-counts", default="10000,100000")
    parser.add_argument("--gpu", action="store_true", help="run on cuda:0")
    args = parser.parse_args()
    device = "cuda:0" if args.gpu else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        cache = cache_arm(folder, args, device)
        folder_ratio = folder_arm(folder, args, device)
        peaks = memory_arm(folder, [int(n) for n in args.memory_counts.split(",")]) if args.memory else {}
    print(f"RATIO B10 {cache['head']:.2f} tag-cache-images-per-s / eval-scoring-images-per-s (planted cache, "
          f"{args.cache_images} images x 50 labels, OVML head, {device}; CLIP-ML alone: {cache['clip-ml']:.2f}; "
          "target >= 0.8)")
    print(f"RATIO B10 {folder_ratio:.3f} tag-folder-steady-images-per-s / extract-steady-images-per-s "
          f"({args.shape} random CLIP, {args.images} JPEGs, batch {args.batch_size}, {args.workers} workers, "
          f"--format {args.formats}, {device}; target >= 0.9)")
    if peaks:
        low, high = min(peaks), max(peaks)
        print(f"RATIO B10 {peaks[high] / peaks[low]:.3f} peak-RSS-{high}-images / peak-RSS-{low}-images "
              f"({MEMORY_LABELS} labels, {peaks[low]:.0f} MB and {peaks[high]:.0f} MB; target about 1)")


if __name__ == "__main__":
    main()
