"""E6: decisions for labels never trained on: `--threshold auto` against thresholds chosen in hindsight.

For each planted world and seed: train a head (`train-head --pseudo-unseen F`), fit its calibration on
its validation images (ovml/calibrate/fit.py), score the test split at alpha 0 over every label, and
decide with each rule over the whole vocabulary; report unseen and seen labels apart: macro-F1,
micro-F1 and ECE (15 bins) of `auto` (probability >= 0.5; new labels standardised over the test
images at hand) and `auto-f1` (probability >= each label's level of best expected F1 over those
images, no labels used), of the shared map on raw scores without standardisation (the variant it replaced),
the best single global threshold on the raw score chosen on the test labels (hindsight), per-label
thresholds chosen on the test labels (the upper bound), MCut and top-3; and `calibrate` from 5, 10,
20 labelled positives per label (drawn from half of the test images, annotated for every label, as
an annotations file is) scored on the other half against the per-label upper bound on that half.

    python -m benchmarks.experiments.e6_calibration [--worlds objects,mixed,wide] [--seeds 0,1,2]
        [--epochs 5] [--train-images 3000] [--test-images 1000] [--pseudo-unseen 0.1] [--json F]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

import numpy as np
import torch

from benchmarks.common import write_figures
from ovml.cache.batches import RowSelection, cache_pool, validation_rows
from ovml.cache.reader import CacheReader
from ovml.calibrate.fit import PRIOR_STRENGTH, fit_run, head_scorer, score_rows
from ovml.calibrate.record import reference_statistics
from ovml.config import TrainConfig
from ovml.metrics.calibration import (best_threshold, ece, expected_f1_levels, f1_scores, fit_platt, fit_shared_map,
                                      label_statistics, sigmoid, standardise)
from ovml.synthetic.planted import WORLDS, write_planted_world
from ovml.tag.rules import MCut, TopK
from ovml.train.saved_head import load_trained_head
from ovml.train.trainer import train_head

SHOTS = (5, 10, 20)


def test_scores(cache: str, run: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(n, L) head scores at alpha 0 on the test split, (n, L) ±1 labels, (L,) seen, names."""
    device = torch.device("cpu")
    with CacheReader(cache) as reader:
        head = load_trained_head(run, cache_pool(reader, device), reader.num_heads, device)
        selection = RowSelection.usable(reader, "test")
        columns = np.arange(reader.num_labels)
        scores, labels = score_rows(reader, selection, head_scorer(head, 0.0, reader.text, device), columns, device)
        return scores, labels, reader.seen.copy(), list(reader.names)


def quality(present: np.ndarray, labels: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    result = f1_scores(present, labels)
    result.pop("per_label_f1")
    if probabilities is not None:
        result["ece"] = ece(probabilities, labels)
    return result


def hindsight_global(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The single threshold of best macro-F1 on these labels themselves, applied."""
    grid = np.quantile(scores, np.linspace(0.5, 0.999, 200))
    best = max(grid, key=lambda t: f1_scores(scores >= t, labels)["macro_f1"])
    return scores >= best


def per_label_best(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each label's threshold of best F1 on its own labels (the upper bound), applied."""
    thresholds = np.array([best_threshold(scores[:, j], labels[:, j])[0] for j in range(scores.shape[1])])
    return scores >= thresholds[None]


def few_shot(scores: np.ndarray, labels: np.ndarray, shared: tuple[float, float], shots: int,
             rng: np.random.Generator) -> dict:
    """`calibrate` from `shots` positives a label (annotated images: the union, every label) on the first half;
    macro-F1 on the second half at p >= 0.5 (`auto`) and at each label's level of best expected F1 over that
    half (`auto-f1`, no labels used), beside the per-label upper bound there."""
    half = len(scores) // 2
    pool, rest = np.arange(half), np.arange(half, len(scores))
    chosen = set()
    for j in range(scores.shape[1]):
        positives = pool[labels[pool, j] == 1]
        chosen.update(rng.choice(positives, size=min(shots, len(positives)), replace=False).tolist())
    picked = np.array(sorted(chosen))
    mean, spread = label_statistics(scores[pool])     # the cache's unlabelled images, as `ovml calibrate`
    slope, intercept = fit_platt(standardise(scores[picked], mean, spread), labels[picked], prior=shared,
                                 strength=PRIOR_STRENGTH)
    probabilities = sigmoid(slope[None] * standardise(scores[rest], mean, spread) + intercept[None])
    ours = f1_scores(probabilities >= 0.5, labels[rest])["macro_f1"]
    at_level = f1_scores(probabilities >= expected_f1_levels(probabilities)[None], labels[rest])["macro_f1"]
    bound = f1_scores(per_label_best(scores[rest], labels[rest]), labels[rest])["macro_f1"]
    return {"macro_f1": ours, "upper_bound": bound, "ratio": ours / bound if bound else float("nan"),
            "auto_f1_macro_f1": at_level, "auto_f1_ratio": at_level / bound if bound else float("nan"),
            "images": len(picked), "ece": ece(probabilities, labels[rest])}


def one_world(world_name: str, seed: int, args, folder: str) -> dict:
    world = dataclasses.replace(WORLDS[world_name], seed=seed, train_images=args.train_images,
                                test_images=args.test_images)
    cache = write_planted_world(os.path.join(folder, f"{world_name}-{seed}.zarr"), world)
    run = os.path.join(folder, f"{world_name}-{seed}-run")
    train_head(TrainConfig(cache=cache, out=run, epochs=args.epochs, seed=seed, progress=False,
                           pseudo_unseen=args.pseudo_unseen))
    calibration = fit_run(run, 0.0)
    scores, labels, seen, names = test_scores(cache, run)
    maps = calibration.maps(names, reference_statistics(scores))
    probabilities = maps.probabilities(scores)
    raw = raw_variant(run, scores)
    rules = {"auto": (probabilities >= 0.5, probabilities),
             "auto-f1": (probabilities >= maps.choose_f1_levels(scores).f1_levels[None], probabilities),
             "shared map on raw scores": (raw >= 0.5, raw),
             "mcut": (MCut().decide(scores), None), "top-3": (TopK(3).decide(scores), None)}
    results = {}
    for group, columns in (("unseen", ~seen), ("seen", seen)):
        s, y = scores[:, columns], labels[:, columns]
        entry = {name: quality(present[:, columns], y, None if p is None else p[:, columns])
                 for name, (present, p) in rules.items()}
        entry["hindsight global threshold"] = quality(hindsight_global(s, y), y)
        entry["per-label thresholds (upper bound)"] = quality(per_label_best(s, y), y)
        rng = np.random.default_rng([seed, 21])
        for shots in SHOTS:
            entry[f"calibrate {shots}"] = few_shot(s, y, calibration.shared, shots, rng)
        results[group] = entry
    return {"results": results, "shared_from": calibration.shared_from}


def raw_variant(run: str, scores: np.ndarray) -> np.ndarray:
    """The variant without standardisation: one Platt map on raw scores, fitted on the run's validation
    images' pseudo-unseen labels and applied to every label; its probabilities."""
    config = json.load(open(os.path.join(run, "config.json")))
    device = torch.device("cpu")
    with CacheReader(config["cache"]["path"]) as reader:
        head = load_trained_head(run, cache_pool(reader, device), reader.num_heads, device)
        held = np.array(config["pseudo_unseen_columns"] or np.flatnonzero(reader.seen), dtype=int)
        selection = validation_rows(reader, config["validation"])
        val_scores, val_labels = score_rows(reader, selection, head_scorer(head, 0.0, reader.text[held], device),
                                            held, device)
    slope, intercept = fit_shared_map(val_scores, val_labels)
    return sigmoid(slope * scores + intercept)


def table(all_results: dict) -> list[str]:
    lines = []
    for group in ("unseen", "seen"):
        lines.append(f"\n{group} labels: macro-F1 / micro-F1 / ECE (mean over runs)")
        methods = list(next(iter(all_results.values()))["results"][group])
        for method in methods:
            values = [r["results"][group][method] for r in all_results.values()]
            mean = lambda key: np.nanmean([v.get(key, np.nan) for v in values])
            extra = (f"  (upper bound on those labels {mean('upper_bound'):.1f}: {100 * mean('ratio'):.0f} %, "
                     f"{mean('images'):.0f} images; auto-f1 {mean('auto_f1_macro_f1'):.1f}, "
                     f"{100 * mean('auto_f1_ratio'):.0f} %)" if "ratio" in values[0] else "")
            ece_text = f"{mean('ece'):.3f}" if "ece" in values[0] else "-"
            micro = f"{mean('micro_f1'):.1f}" if "micro_f1" in values[0] else "-"
            lines.append(f"  {method:38s} {mean('macro_f1'):5.1f} / {micro:>5s} / {ece_text}{extra}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="objects,mixed,wide")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--pseudo-unseen", type=float, default=0.1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for world_name in args.worlds.split(","):
            for seed in map(int, args.seeds.split(",")):
                results[f"{world_name}/{seed}"] = one_world(world_name, seed, args, folder)
                shared_from = results[f"{world_name}/{seed}"]["shared_from"]
                print(f"{world_name} seed {seed}: shared map fitted on {shared_from}")
                print("\n".join(table({f"{world_name}/{seed}": results[f"{world_name}/{seed}"]})), flush=True)
                write_figures(args.json, results, indent=1)
    print("\nall runs:" + "\n".join(table(results)))


if __name__ == "__main__":
    main()
