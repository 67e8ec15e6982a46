"""B2: streaming training from the cache. One train-head epoch reading the on-disk Zarr store
(chunks read ahead in a thread, shuffled across chunks) against the same epoch from in-memory
tensors (the whole split read into RAM beforehand). RN50-shaped planted world.

    python -m benchmarks.speed.b2_stream [--images 1024] [--gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from benchmarks.common import write_figures
from ovml.config import TrainConfig
from ovml.train.trainer import train_head
from ovml.synthetic.planted import PlantedWorld, write_planted_world


def epoch_seconds(cache: str, out: str, in_memory: bool, device: str, epochs: int) -> list[float]:
    """Per-epoch seconds of a run; epoch 1 of the in-memory arm also reads the store, so it is skipped."""
    train_head(TrainConfig(cache=cache, out=out, epochs=epochs, lr=1e-3, in_memory=in_memory, device=device,
                           val_fraction=0.0, progress=False), overwrite=True)
    with open(os.path.join(out, "log.jsonl")) as handle:
        return [json.loads(line)["seconds"] for line in handle][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per arm; the first is not timed")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--small", action="store_true", help="the small default planted world (smoke test)")
    args = parser.parse_args()
    device = "cuda:0" if args.gpu else "cpu"
    shape = {} if args.small else dict(channels=2048, embed_dim=1024, num_heads=32)
    world = PlantedWorld(**shape, seen=40, unseen=10, train_images=args.images, test_images=64)
    with tempfile.TemporaryDirectory() as folder:
        cache = write_planted_world(os.path.join(folder, "rn50shape.zarr"), world)
        streamed = epoch_seconds(cache, os.path.join(folder, "stream"), False, device, args.epochs)
        memory = epoch_seconds(cache, os.path.join(folder, "memory"), True, device, args.epochs)
    stream_s, memory_s = sorted(streamed)[len(streamed) // 2], sorted(memory)[len(memory) // 2]
    print(f"{args.images} images, 49 x {world.channels} tokens, 40 seen labels, batch 64, {device}")
    print(f"epoch from the Zarr store: {stream_s:.2f} s ({args.images / stream_s:.1f} images/s); "
          f"from RAM: {memory_s:.2f} s ({args.images / memory_s:.1f} images/s)")
    write_figures(args.json, {"B2": {"device": device, "images": args.images, "stream_seconds": stream_s,
                                     "memory_seconds": memory_s, "ratio": memory_s / stream_s}})
    print(f"RATIO B2 {memory_s / stream_s:.3f} streaming-images-per-s / in-memory-images-per-s "
          f"(median of {len(streamed)} epochs each, {device})")


if __name__ == "__main__":
    main()
