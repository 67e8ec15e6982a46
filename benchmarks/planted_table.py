"""The planted-world comparison of every scorer and head variant (issue 4's table).

Writes the default planted world (METHOD.md: 40 seen + 10 unseen labels, 4000 train / 1000 test,
7x7 tokens, C=128, D=64, 4 heads), trains each head variant with the demo's settings (10 epochs,
batch 64, one-cycle max LR 1e-2, logit scale 20, seed 0) and prints ZSL and GZSL mAP and F1@3.

    python benchmarks/planted_table.py [--epochs 10] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ovml.config import EvalConfig, TrainConfig  # noqa: E402
from ovml.pipelines.evaluate import evaluate_cache  # noqa: E402
from ovml.pipelines.train import train_head  # noqa: E402
from ovml.synthetic import PlantedWorld, write_planted_world  # noqa: E402

VARIANTS = {
    "linear head": dict(head="linear", contrastive_weight=0.0),
    "OVML, no contrastive, q random": dict(contrastive_weight=0.0),
    "OVML, contrastive, q random": dict(contrastive_weight=1.0),
    "OVML, no contrastive, q pinv": dict(contrastive_weight=0.0, q_init="pinv"),
    "OVML, contrastive, q pinv": dict(contrastive_weight=1.0, q_init="pinv"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cache = write_planted_world(os.path.join(folder, "planted.zarr"), PlantedWorld(seed=args.seed))
        runs = {}
        for name, options in VARIANTS.items():
            out = os.path.join(folder, name.replace(" ", "_").replace(",", ""))
            train_head(TrainConfig(cache=cache, out=out, epochs=args.epochs, lr=1e-2, logit_scale=20.0,
                                   seed=args.seed, progress=False, **options))
            runs[out] = name
        results = {}
        for split in ("unseen", "all"):
            evaluation = evaluate_cache(EvalConfig(cache=cache, heads=tuple(runs), split=split, alphas=(0.0,),
                                                   progress=False))
            for row in evaluation.summary["rows"]:
                label = runs.get(row.get("run"), {"clip-ml": "CLIP-ML", "dense": "dense CLIP (top-3)"}.get(row["method"]))
                results.setdefault(label, {})[split] = row
    print("| scorer | ZSL mAP | ZSL F1@3 | GZSL mAP | GZSL F1@3 |")
    print("|---|---|---|---|---|")
    for label, by_split in results.items():
        print(f"| {label} | {by_split['unseen']['mAP']:.1f} | {by_split['unseen']['F1@3']:.1f} | "
              f"{by_split['all']['mAP']:.1f} | {by_split['all']['F1@3']:.1f} |")


if __name__ == "__main__":
    main()
