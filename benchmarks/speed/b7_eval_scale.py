"""B7: `ovml eval --split all` at Open Images GZSL size, in bounded memory.

Writes a planted cache of 125,436 test images x 7,586 labels (7,186 seen + 400 unseen, Open
Images v4 GZSL's shape; C = 32, D = 16, a 3 x 3 grid so that the head is cheap; a small train
split), trains one epoch (`train-head --epochs 1 --negatives 64`), then runs `eval --split all`
with the default `--alpha` (0,auto) in a subprocess and measures that subprocess's peak RSS.
The ratio is one float32 score matrix (4 bytes x images x labels, 3.8 GB) over that peak;
the target is >= 0.67 (peak <= 5.7 GB). The temporary score store needs about 17 GB of disk
(4 rows x 4 bytes + 2 bytes per annotated entry; every test entry is annotated here).

    python -m benchmarks.speed.b7_eval_scale [--test-images 125436] [--scratch DIR] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.common import REPOSITORY
from ovml.synthetic.planted import PlantedWorld, write_planted_world

SEEN, UNSEEN = 7186, 400


def run_measured(arguments: list[str], log: str) -> tuple[float, int]:
    """Run `python -m ovml.cli ARGS` with its output in `log`; (seconds, peak RSS in bytes)."""
    env = dict(os.environ, PYTHONPATH=REPOSITORY + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    with open(log, "w") as handle:
        child = subprocess.Popen([sys.executable, "-m", "ovml.cli"] + arguments, stdout=handle,
                                 stderr=subprocess.STDOUT, env=env, cwd=REPOSITORY)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log) as handle:
            sys.exit(f"ovml {arguments[0]} failed (exit {os.waitstatus_to_exitcode(status)}):\n"
                     + "".join(handle.readlines()[-20:]))
    return seconds, usage.ru_maxrss * 1024  # Linux reports kilobytes


def write_openimages_shaped(cache: str, train_images: int, test_images: int) -> float:
    """Write the planted cache of Open Images GZSL's vocabulary (unless it exists); seconds taken."""
    world = PlantedWorld(seen=SEEN, unseen=UNSEEN, rank=16, embed_dim=16, channels=32, grid=3, num_heads=4,
                         train_images=train_images, test_images=test_images,
                         big_cells=(3, 5), small_objects=(1, 2), small_cells=(1, 2))
    started = time.perf_counter()
    if not os.path.exists(cache):
        write_planted_world(cache, world, progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-images", type=int, default=125_436)
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--scratch", default=None, help="folder for eval's temporary score store")
    parser.add_argument("--keep", default=None, help="write the cache and runs here and keep them")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="bench-eval-scale-")
    os.makedirs(folder, exist_ok=True)
    try:
        cache = os.path.join(folder, "openimages-shape.zarr")
        write_s = write_openimages_shaped(cache, args.train_images, args.test_images)
        run = os.path.join(folder, "run")
        train_s, train_rss = run_measured(["train-head", "--cache", cache, "--out", run, "--epochs", "1",
                                           "--negatives", "64", "--overwrite"], os.path.join(folder, "train.log"))
        eval_arguments = ["eval", "--cache", cache, "--head", run, "--split", "all",
                          "--out", os.path.join(folder, "eval")]
        eval_s, eval_rss = run_measured(eval_arguments + (["--scratch", args.scratch] if args.scratch else []),
                                        os.path.join(folder, "eval.log"))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    images, labels = args.test_images, SEEN + UNSEEN
    matrix = 4 * images * labels
    print(f"planted cache: {images} test x {labels} labels ({SEEN} seen), {args.train_images} train images, "
          f"C 32, D 16, 3 x 3 grid; written in {write_s:.0f} s")
    print(f"train-head --epochs 1 --negatives 64: {train_s:.0f} s, peak RSS {train_rss / 1e9:.2f} GB")
    print(f"eval --split all (rows clip-ml, dense, ovml at alpha 0 and auto): {eval_s:.0f} s, "
          f"peak RSS {eval_rss / 1e9:.2f} GB; one float32 score matrix {matrix / 1e9:.2f} GB")
    print(f"RATIO B7 {matrix / eval_rss:.3f} float32-score-matrix-bytes / eval-peak-RSS "
          f"({images} x {labels}, eval {eval_s:.0f} s; target >= 0.67)")


if __name__ == "__main__":
    main()
