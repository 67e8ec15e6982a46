"""E3: residual versus direct, the ViT head's two readings (docs/method.md), on planted ViT worlds.

Writes the planted world with a ViT-shaped pool (`PlantedWorld(backbone_kind="vit")`, otherwise
the default world: 40 seen + 10 unseen labels, 4000 train / 1000 test, 7x7 tokens, W = 128,
D = 64, 4 heads) for each class-token weight (|cls| entering the last block, in units of a
LayerNorm'd token) and seed, trains the OVML head with each reading and prints ZSL and GZSL mAP
and F1@3 at alpha 0, beside CLIP-ML and dense CLIP (MaskCLIP's reading).

    python -m benchmarks.experiments.e3_vit_readings [--weights 0.5,1,2] [--seeds 0] [--readings residual,direct] [--epochs 10]
                                      [--train-options '{"lr": 1e-2, "logit_scale": 20}']
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from ovml.config import EvalConfig, TrainConfig
from ovml.evaluation.evaluate import evaluate_cache
from ovml.train.trainer import train_head
from ovml.synthetic.planted import PlantedWorld, write_planted_world

READINGS = ("residual", "direct")
BASELINES = {"clip-ml": "CLIP-ML", "dense": "dense CLIP (top-3)"}


def measure(folder: str, weight: float, seed: int, readings: list[str], epochs: int, options: dict) -> dict:
    """{scorer: {split: row}} and training seconds per reading on one world."""
    world = PlantedWorld(backbone_kind="vit", class_token_weight=weight, seed=seed)
    cache = write_planted_world(os.path.join(folder, f"vit-{weight}-{seed}.zarr"), world)
    runs, seconds = {}, {}
    for reading in readings:
        out = os.path.join(folder, f"{reading}-{weight}-{seed}")
        started = time.perf_counter()
        train_head(TrainConfig(cache=cache, out=out, epochs=epochs, seed=seed, vit_output=reading,
                               progress=False, **options), overwrite=True)
        seconds[reading] = time.perf_counter() - started
        runs[out] = reading
    results: dict = {}
    for split in ("unseen", "all"):
        evaluation = evaluate_cache(EvalConfig(cache=cache, heads=tuple(runs), split=split, alphas=(0.0,),
                                               alpha_auto=False, progress=False))
        for row in evaluation.summary["rows"]:
            label = runs.get(row.get("run")) or BASELINES[row["method"]]
            results.setdefault(label, {})[split] = row
    return {"results": results, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="0.5,1,2", help="class-token weights, comma-separated")
    parser.add_argument("--seeds", default="0", help="world and training seeds, comma-separated")
    parser.add_argument("--readings", default=",".join(READINGS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-options", default="{}", help="JSON of extra TrainConfig fields, e.g. lr")
    args = parser.parse_args()
    options = json.loads(args.train_options)
    print(f"train-head --epochs {args.epochs} {options or '(defaults)'}; alpha 0; ZSL = 10 unseen labels")
    print("| class-token weight | seed | scorer | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | train s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for weight in (float(w) for w in args.weights.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                measured = measure(folder, weight, seed, args.readings.split(","), args.epochs, options)
                for label, rows in measured["results"].items():
                    spent = measured["seconds"].get(label)
                    print(f"| {weight:g} | {seed} | {label} | {rows['unseen']['mAP']:.1f} | "
                          f"{rows['unseen']['F1@3']:.1f} | {rows['all']['mAP']:.1f} | {rows['all']['F1@3']:.1f} | "
                          f"{'' if spent is None else f'{spent:.0f}'} |", flush=True)


if __name__ == "__main__":
    main()
