"""E5: mixed precision end to end, `ovml train-head` then `ovml eval` (ZSL and GZSL) on an RN50-shaped
planted world, in float32 and with --amp bf16 and --amp fp16, same world, seed and settings, each
through the real command line in its own process. Reports epoch seconds, the speed-up over float32
and how far the metrics move.

    python -m benchmarks.experiments.e5_planted_amp --gpu                  # RN50 shapes on cuda:0
    python -m benchmarks.experiments.e5_planted_amp --small --epochs 1     # CPU smoke: --amp is ignored there (said once)
    python -m benchmarks.experiments.e5_planted_amp --small --epochs 1 --emulate-autocast   # the CPU rehearsal

With --emulate-autocast (the CPU rehearsal in `benchmarks/gpu_suite.sh --cpu-smoke`) the bf16 and
fp16 processes run under tests/autocast_emulation.py, CUDA autocast's dtype rules on the CPU, so
what --amp would break on a GPU breaks there too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import write_figures
from ovml.synthetic.planted import PlantedWorld, write_planted_world

PRECISIONS = ("fp32", "bf16", "fp16")


def ovml(*arguments: str, emulated: str | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m ovml.cli ...` in a fresh process, under the autocast emulation in the
    `emulated` dtype (bf16, fp16) if given; (its outputs, seconds)."""
    emulation = ["-m", "tests.autocast_emulation", "--dtype", emulated] if emulated else []
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *emulation, "-m", "ovml.cli", *arguments], capture_output=True,
                          text=True, env=os.environ | {"OVML_PROGRESS": "log"})
    if done.returncode:
        raise SystemExit(f"ovml {' '.join(arguments)} failed:\n{done.stdout}{done.stderr}")
    return done, time.perf_counter() - started


def world(small: bool, train_images: int, folder: str) -> str:
    """The planted world: RN50 shapes (C 2048, D 1024, 32 heads, NUS-WIDE's 925 + 81 labels) or the
    default small one."""
    shape = {} if small else dict(channels=2048, embed_dim=1024, num_heads=32, seen=925, unseen=81, rank=64)
    settings = PlantedWorld(**shape, train_images=train_images, test_images=max(64, train_images // 4))
    return write_planted_world(os.path.join(folder, "world.zarr"), settings)


def run_precision(cache: str, folder: str, precision: str, device: list[str], epochs: int, emulate: bool) -> dict:
    amp = [] if precision == "fp32" else ["--amp", precision]
    emulated = precision if emulate and amp else None
    run = os.path.join(folder, f"run-{precision}")
    done, train_seconds = ovml("train-head", "--cache", cache, "--out", run, "--epochs", str(epochs),
                               "--lr", "1e-3", "--seed", "0", *device, *amp, emulated=emulated)
    with open(os.path.join(run, "log.jsonl")) as handle:
        epochs_seconds = [json.loads(line)["seconds"] for line in handle]
    result = {"train_seconds": train_seconds, "epoch_seconds": statistics.median(epochs_seconds),
              "notes": [line for line in (done.stdout + done.stderr).splitlines() if "--amp" in line]}
    for split in ("unseen", "all"):
        done, seconds = ovml("eval", "--cache", cache, "--head", run, "--split", split, "--alpha", "0",
                             "--baselines", "none", "--out", os.path.join(folder, f"eval-{precision}-{split}"),
                             "--json", *device, *amp, emulated=emulated)
        row = json.loads(done.stdout)["rows"][0]
        result[split] = {"seconds": seconds, "mAP": row["mAP"], "F1@3": row.get("F1@3")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="the small default world (smoke test)")
    parser.add_argument("--gpu", action="store_true", help="run on cuda:0")
    parser.add_argument("--emulate-autocast", action="store_true",
                        help="run the bf16 and fp16 arms under tests/autocast_emulation.py (CPU rehearsal)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = ["--gpu", "0"] if args.gpu else []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        cache = world(args.small, args.train_images, folder)
        made = time.perf_counter() - started
        results = {precision: run_precision(cache, folder, precision, device, args.epochs, args.emulate_autocast)
                   for precision in PRECISIONS}
    base = results["fp32"]
    print(f"planted world {'small' if args.small else 'RN50-shaped'}, {args.train_images} train images "
          f"(written in {made:.0f} s), {args.epochs} epochs, {'cuda:0' if args.gpu else 'cpu'}"
          + (", bf16 and fp16 under the autocast emulation" if args.emulate_autocast else ""))
    for precision, r in results.items():
        print(f"{precision}: epoch {r['epoch_seconds']:.2f} s ({base['epoch_seconds'] / r['epoch_seconds']:.2f}x fp32), "
              f"ZSL mAP {r['unseen']['mAP']:.2f} ({r['unseen']['mAP'] - base['unseen']['mAP']:+.2f}), "
              f"GZSL mAP {r['all']['mAP']:.2f} ({r['all']['mAP'] - base['all']['mAP']:+.2f})"
              + "".join(f"; {note}" for note in r["notes"]))
    run = {"device": "cuda:0" if args.gpu else "cpu", "train_images": args.train_images, "epochs": args.epochs,
           "small": args.small, "world_seconds": made, "emulated_autocast": args.emulate_autocast}
    write_figures(args.json, {"planted_amp": run | results})


if __name__ == "__main__":
    main()
