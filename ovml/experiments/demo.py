"""`ovml demo`: the whole of stages 2 and 3 on a planted synthetic world, offline, in minutes.

It is a synthetic world (docs/method.md), not a benchmark. The demo's world mixes the two kinds
of label real vocabularies have: objects (small, strong on a few cells), which CLIP's global
pooling dilutes and dense CLIP finds, and scenes (weak, spread over the image), which the global
feature finds and dense CLIP misses. It trains the head with the library's defaults (learning
rate, logit scale and query length measured on the data) and with the paper's settings, and
shows the mAP of every scorer on each kind, so that what each is for is visible.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import numpy as np

from ..cache import store as backends
from ..cache.reader import CacheReader
from ..config import PAPER_SETTINGS, DemoConfig, EvalConfig, TrainConfig
from ..synthetic.planted import WORLDS, PlantedWorld, write_planted_world
from ..evaluation.evaluate import Evaluation, evaluate_cache
from ..evaluation.report import table, write_report
from ..train.trainer import train_head

SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)
RUNS = {"ovml": {}, "ovml-paper": PAPER_SETTINGS}   # the defaults, and the paper's head and settings
REAL_DATA = """On real data (CLIP RN50 weights, downloaded once, sha256-checked):
  ovml extract --dataset nuswide --root data/nuswide --gpu 0      # -> cache/nus.zarr
  ovml train-head --cache cache/nus.zarr                           # -> runs/nus-ovml
  ovml eval --split unseen                                         # ZSL; --split all for GZSL"""
WHY = ("CLIP-ML's global feature serves scene labels and dilutes small objects; dense CLIP finds objects "
       "and misses scenes. The head, trained on seen labels only, learns per label where to look (a "
       "label's kind is readable from its text), so it serves both.")


def demo_world(seed: int, quick: bool) -> PlantedWorld:
    """The "mixed" world (WORLDS), smaller with `quick`."""
    world = dataclasses.replace(WORLDS["mixed"], seed=seed)
    return dataclasses.replace(world, train_images=1200, test_images=400) if quick else world


def cached_world(path: str, world: PlantedWorld) -> str:
    """Reuse a planted world already written with the same settings; otherwise write it."""
    if backends.exists(path):
        try:
            with CacheReader(path) as reader:
                same = reader.dataset.get("settings") == dataclasses.asdict(world)
        except Exception:
            same = False
        if same:
            return path
        backends.remove(path)
    return write_planted_world(path, world)


def kind_lines(evaluation: Evaluation) -> list[str]:
    """mAP on object labels and on scene labels, per scorer (at each head's best alpha)."""
    names = evaluation.summary["label_names"]
    kinds = np.array(["scene" if name.startswith("scene_") else "object" for name in names])
    lines = ["| scorer | alpha | object labels mAP | scene labels mAP |", "|---|---|---|---|"]
    for row in evaluation.rows:
        per_label = 100 * row.per_label_ap
        label = row.method if row.run is None else os.path.basename(row.run)
        alpha = "" if row.alpha is None else f"{row.alpha:g}"
        lines.append(f"| {label} | {alpha} | {np.nanmean(per_label[kinds == 'object']):.1f} | "
                     f"{np.nanmean(per_label[kinds == 'scene']):.1f} |")
    return lines


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> list[str]:
    """Build the world, train the head (defaults, and the paper's settings), evaluate ZSL and GZSL."""
    started = time.perf_counter()
    out, seed, quick = config.out, config.seed, config.quick
    world = demo_world(seed, quick)
    echo(f"ovml demo: a SYNTHETIC planted world ({world.seen} seen + {world.unseen} unseen labels, half of "
         f"them scenes, half objects; {world.train_images} train / {world.test_images} test images, "
         f"{world.grid}x{world.grid} tokens), not a real benchmark.")
    cache = cached_world(os.path.join(out, "planted.zarr"), world)
    epochs = 6 if quick else 10
    runs = {}
    for name, settings in RUNS.items():
        config = TrainConfig(cache=cache, out=os.path.join(out, name), epochs=epochs, seed=seed, progress=False,
                             **settings)
        result = train_head(config, overwrite=True)
        runs[name] = config.out
        chosen = "lr auto" if config.lr == "auto" else f"lr {config.lr:g}"
        echo(f"trained {name} ({'defaults' if not settings else 'the paper settings'}, {chosen}): "
             f"{epochs} epochs, {result.seconds:.1f} s")
    lines = []
    for split in ("unseen", "all"):
        evaluation = evaluate_cache(EvalConfig(cache=cache, heads=tuple(runs.values()), split=split,
                                               alphas=SWEEP, alpha_auto=True, progress=False))
        report = os.path.join(out, f"eval-{split}")
        write_report(evaluation, report)
        lines += ["", f"{'ZSL' if split == 'unseen' else 'GZSL'} ({split} labels), report in {report}/report.md:"]
        lines += table(evaluation.summary) + evaluation.summary["notes"]
        if split == "unseen":
            lines += ["", "ZSL by kind of label:"] + kind_lines(evaluation) + ["", WHY]
    lines += ["", f"demo finished in {time.perf_counter() - started:.0f} s.", "", REAL_DATA]
    return lines
