"""B3: what the cache buys. One train-head epoch from the cache against the same epoch with the
backbone in the loop (decode, CLIP RN50 forward, then the same head step), random-weight RN50.

    python -m benchmarks.speed.b3_backbone_loop [--images 64] [--gpu]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from benchmarks.common import random_clip_file, write_figures, write_folder_dataset
from ovml.cache.reader import CacheReader
from ovml.config import ExtractConfig, TrainConfig
from ovml.extract.backbone import load_backbone
from ovml.extract.images import decode
from ovml.extract.runner import run_extraction
from ovml.train.trainer import Trainer


def backbone_epoch(trainer: Trainer, backbone, paths: list[str], labels, batch: int) -> float:
    """The same steps as a cached epoch, but every batch decodes and runs CLIP first."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(paths), batch):
        images = torch.stack([decode(p, backbone.preprocess)[0] for p in paths[start:start + batch]])
        spatial, global_embedding = backbone.encode(images)
        rows = {"tokens": spatial.half().cpu().numpy(), "global": global_embedding.half().cpu().numpy(),
                "labels": labels[start:start + batch]}
        loss, _ = trainer.loss(rows, generator)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--shape", choices=["rn50", "tiny"], default="rn50", help="random-weight CLIP shape")
    args = parser.parse_args()
    device = "cuda:0" if args.gpu else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        model = random_clip_file(folder, args.shape)
        root = write_folder_dataset(os.path.join(folder, "data"), args.images)
        cache = os.path.join(folder, "c.zarr")
        run_extraction(ExtractConfig(dataset="folder", root=root, out=cache, model=model, device=device,
                                     progress=False))
        config = TrainConfig(cache=cache, out=os.path.join(folder, "run"), batch_size=args.batch_size,
                             val_fraction=0.0, device=device, progress=False, shuffle_buffer=1)
        with CacheReader(cache) as reader:
            trainer = Trainer(config, reader)
            trainer.prepare()
            cached = trainer.train_epoch(1)["seconds"]
            labels = reader.read_labels("train")
            paths = [os.path.join(root, i) for i in reader.image_ids("train")]
            backbone = load_backbone(model, device)
            looped = backbone_epoch(trainer, backbone, paths, labels, args.batch_size)
    print(f"{args.images} images, batch {args.batch_size}, {args.shape} shapes, {device}: epoch from the cache "
          f"{cached:.2f} s, with the backbone in the loop {looped:.2f} s")
    write_figures(args.json, {"B3": {"device": device, "images": args.images, "cached_seconds": cached,
                                     "backbone_loop_seconds": looped, "ratio": looped / cached}})
    print(f"RATIO B3 {looped / cached:.1f} backbone-in-loop-seconds / cached-seconds "
          f"({args.images} images, one epoch, {device})")


if __name__ == "__main__":
    main()
