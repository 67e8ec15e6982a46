"""`ovml demo`: the whole of stages 2 and 3 on the planted synthetic world, offline, in minutes.

It is a synthetic world (design/METHOD.md), not a benchmark: it shows the pipeline working and
the head beating CLIP-ML where global pooling dilutes small objects. The demo sets its own
learning rate and logit scale (the paper's 2e-4 is sized for NUS-WIDE's ~2,500 steps an epoch).
"""
from __future__ import annotations

import os
import time
from typing import Callable

from ..cache import store as backends
from ..cache.reader import CacheReader
from ..config import EvalConfig, TrainConfig
from ..synthetic import PlantedWorld, write_planted_world
from .evaluate import evaluate_cache
from .report import table, write_report
from .train import train_head

DEMO_LR, DEMO_LOGIT_SCALE = 1e-2, 20.0
SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)
REAL_DATA = """On real data (CLIP RN50 weights, downloaded once, sha256-checked):
  ovml extract --dataset nuswide --root data/nuswide --gpu 0      # -> cache/nus.zarr
  ovml train-head --cache cache/nus.zarr                           # -> runs/nus-ovml
  ovml eval --split unseen                                         # ZSL; --split all for GZSL"""


def demo_world(seed: int, quick: bool) -> PlantedWorld:
    if quick:
        return PlantedWorld(train_images=2048, test_images=512, seed=seed)
    return PlantedWorld(seed=seed)


def cached_world(path: str, world: PlantedWorld) -> str:
    """Reuse a planted world already written with the same settings; otherwise write it."""
    if backends.exists(path):
        try:
            with CacheReader(path) as reader:
                if reader.dataset.get("settings", {}).get("seed") == world.seed and \
                        reader.num_rows("train") == world.train_images:
                    return path
        except Exception:
            pass
        backends.remove(path)
    return write_planted_world(path, world)


def run_demo(out: str = "runs/demo", seed: int = 0, quick: bool = False,
             echo: Callable[[str], None] = print) -> list[str]:
    """Build the world, train with and without the contrastive loss, evaluate ZSL and GZSL."""
    started = time.perf_counter()
    world = demo_world(seed, quick)
    echo(f"ovml demo: a SYNTHETIC planted world ({world.seen} seen + {world.unseen} unseen labels, "
         f"{world.train_images} train / {world.test_images} test images, {world.grid}x{world.grid} tokens), "
         "not a real benchmark.")
    cache = cached_world(os.path.join(out, "planted.zarr"), world)
    epochs = 8 if quick else 10
    runs = {}
    for name, weight in (("ovml", 1.0), ("ovml-no-contrastive", 0.0)):
        config = TrainConfig(cache=cache, out=os.path.join(out, name), epochs=epochs, lr=DEMO_LR,
                             logit_scale=DEMO_LOGIT_SCALE, contrastive_weight=weight, seed=seed,
                             pseudo_unseen=0.1, progress=False)
        result = train_head(config, overwrite=True)
        runs[name] = config.out
        echo(f"trained {name}: {epochs} epochs, lr {DEMO_LR:g}, logit scale {DEMO_LOGIT_SCALE:g}, "
             f"{result.seconds:.1f} s")
    lines = []
    for split in ("unseen", "all"):
        evaluation = evaluate_cache(EvalConfig(cache=cache, heads=tuple(runs.values()), split=split,
                                               alphas=SWEEP, alpha_auto=True, progress=False))
        report = os.path.join(out, f"eval-{split}")
        write_report(evaluation, report)
        lines += ["", f"{'ZSL' if split == 'unseen' else 'GZSL'} ({split} labels), report in {report}/report.md:"]
        lines += table(evaluation.summary) + evaluation.summary["notes"]
    lines += ["", f"demo finished in {time.perf_counter() - started:.0f} s.", "", REAL_DATA]
    return lines
