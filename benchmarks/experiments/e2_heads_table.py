"""E2: the planted-world table with every head: ZSL and GZSL mAP and F1@3, mean and spread over seeds.

For each seed, writes the default planted world with that seed (docs/method.md: 40 seen + 10 unseen
labels, 4000 train / 1000 test, 7x7 tokens, C=128, D=64, 4 heads), trains every head with the
library's defaults (`train-head --epochs 10`: learning rate from the range test, learnt logit
scale, batch 64; each head with its own loss, OVML with and without L_con) and OVML also with the
paper's settings (`--paper`), evaluates at alpha 0 (the head alone), and
prints mean +- standard deviation over the seeds, beside CLIP-ML, dense CLIP and a random scorer.

    python -m benchmarks.experiments.e2_heads_table [--seeds 0,1,2] [--epochs 10] [--train-images 4000] [--json FILE]

On a shared machine the seeds can run as separate processes, each writing --json, and be
combined afterwards: `--combine seed0.json,seed1.json,seed2.json` prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import write_figures
from ovml.config import PAPER_SETTINGS, EvalConfig, TrainConfig
from ovml.metrics.protocol import evaluate
from ovml.evaluation.evaluate import evaluate_cache, evaluated_labels
from ovml.train.trainer import train_head
from ovml.synthetic.planted import PlantedWorld, write_planted_world

HEADS = {
    "linear head": dict(head="linear", contrastive_weight=0.0),
    "OVML, no L_con": dict(head="ovml", contrastive_weight=0.0),
    "OVML": dict(head="ovml", contrastive_weight=1.0),
    "OVML, paper settings": dict(head="ovml", contrastive_weight=1.0, **PAPER_SETTINGS),
    "CLIP-ZSSDL": dict(head="zssdl"),
    "CLIP-BiAM": dict(head="biam"),
    "CLIP-LESA": dict(head="lesa"),
}
BASELINES = {"clip-ml": "CLIP-ML", "dense": "dense CLIP (top-3)"}
COLUMNS = (("unseen", "mAP"), ("unseen", "F1@3"), ("all", "mAP"), ("all", "F1@3"))


def one_seed(seed: int, args: argparse.Namespace, folder: str) -> dict[str, dict]:
    """{row name: {(split, metric): value, 'seconds': training seconds}} for one world."""
    world = PlantedWorld(seed=seed, train_images=args.train_images, test_images=args.test_images)
    cache = write_planted_world(os.path.join(folder, f"planted-{seed}.zarr"), world)
    runs, results = {}, {}
    for name, options in HEADS.items():
        out = os.path.join(folder, f"{seed}-{name.replace(' ', '_').replace(',', '')}")
        started = time.perf_counter()
        train_head(TrainConfig(cache=cache, out=out, epochs=args.epochs, seed=seed,
                               progress=False, **options))
        runs[out] = name
        results[name] = {"seconds": time.perf_counter() - started}
        print(f"seed {seed}: {name} trained in {results[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
    rng = np.random.default_rng([seed, 99])
    for split in ("unseen", "all"):
        config = EvalConfig(cache=cache, heads=tuple(runs), split=split, alphas=(0.0,), alpha_auto=False,
                            progress=False)
        evaluation, labels = evaluate_cache(config), evaluated_labels(config)
        for row in evaluation.summary["rows"]:
            name = runs.get(row.get("run"), BASELINES.get(row["method"]))
            results.setdefault(name, {}).update({(split, m): row[m] for m in ("mAP", "F1@3")})
        chance = evaluate(rng.random(labels.shape), labels, ks=(3,))
        results.setdefault("random scorer", {}).update({(split, m): chance[m] for m in ("mAP", "F1@3")})
    return results


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def print_table(per_seed: dict, settings: str) -> None:
    seeds = sorted(per_seed)
    order = list(BASELINES.values()) + ["random scorer"] + list(HEADS)
    print(f"{settings}; mean ± sd over seeds {', '.join(map(str, seeds))}")
    print("| scorer | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 | train s |")
    print("|---|---|---|---|---|---|")
    for name in order:
        cells = [spread([per_seed[s][name]["/".join(key)] for s in seeds]) for key in COLUMNS]
        seconds = [per_seed[s][name]["seconds"] for s in seeds if "seconds" in per_seed[s][name]]
        cells.append(f"{statistics.mean(seconds):.0f}" if seconds else "")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write the per-seed figures here")
    parser.add_argument("--combine", default=None, help="print the table of these --json files instead")
    args = parser.parse_args()
    if args.combine:
        per_seed = {}
        for path in args.combine.split(","):
            with open(path) as handle:
                saved = json.load(handle)
            per_seed.update({int(seed): rows for seed, rows in saved["seeds"].items()})
        print_table(per_seed, saved["settings"])
        return
    per_seed = {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows = one_seed(seed, args, folder)
            per_seed[seed] = {name: {"/".join(k) if isinstance(k, tuple) else k: v for k, v in row.items()}
                              for name, row in rows.items()}
    settings = (f"Planted world, {args.train_images} train / {args.test_images} test images, {args.epochs} epochs, "
                "train-head defaults (OVML also with --paper), alpha 0")
    print_table(per_seed, settings)
    write_figures(args.json, {"settings": settings, "seeds": per_seed}, indent=1)


if __name__ == "__main__":
    main()
