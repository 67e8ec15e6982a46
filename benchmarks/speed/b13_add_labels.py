"""B13: `ovml add-labels` at Open Images GZSL size: thousands of new names on a cache of 125,436 test
images x 7,586 labels, with annotations for every test image.

Uses B7's planted cache (`benchmarks/speed/b7_eval_scale.py`; written here unless `--cache` names one, which is
copied, never changed). A planted cache was made by no CLIP, so the copy's backbone attrs are
pointed at a random-weight CLIP of the same D (16) whose text tower embeds the new names. Runs
`add-labels --names F --annotations CSV` in a subprocess and reports its time and peak RSS
against the new label entries it writes (1 byte each). Last line:
`RATE add-labels <names/s> names/s (<K> names x <N> rows, peak RSS <M> GB, new entries <E> GB)`.

    python -m benchmarks.speed.b13_add_labels [--names 2000] [--test-images 125436] [--cache PATH]
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile

import numpy as np

from benchmarks.speed.b7_eval_scale import SEEN, UNSEEN, run_measured, write_openimages_shaped
from benchmarks.common import random_clip_file

from ovml.cache import store as backends
from ovml.cache.reader import CacheReader
from ovml.extract.backbone.weights import file_sha256

POSITIVES_PER_IMAGE = 3  # new labels present in each annotated image (the rest are -1)


def text_tower_for(cache: str, folder: str) -> str:
    """Save a random CLIP whose D matches the cache and make the cache name it; its path."""
    with CacheReader(cache) as reader:
        path = random_clip_file(folder, "tiny", embed_dim=reader.embed_dim)
    store = backends.open_store(cache, "a")
    try:
        store.set_attr("backbone", dict(store.get_attr("backbone"), name=path, weights_sha256=file_sha256(path)))
    finally:
        store.close()
    return path


def write_inputs(cache: str, folder: str, count: int) -> tuple[str, str]:
    """The names file and an `id,labels` CSV naming a few new labels for every test image."""
    names = [f"new label {i:05d}" for i in range(count)]
    names_file = os.path.join(folder, "names.txt")
    with open(names_file, "w") as handle:
        handle.write("\n".join(names) + "\n")
    with CacheReader(cache) as reader:
        ids = reader.image_ids("test")
    rng = np.random.default_rng(0)
    annotations = os.path.join(folder, "annotations.csv")
    with open(annotations, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "labels"])
        for image in ids:
            picked = rng.choice(count, size=POSITIVES_PER_IMAGE, replace=False)
            writer.writerow([image, ";".join(names[j] for j in picked)])
    return names_file, annotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=2000, help="how many new labels")
    parser.add_argument("--test-images", type=int, default=125_436)
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--cache", default=None, help="an existing B7 cache to copy instead of writing one")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-add-labels-")
    try:
        cache = os.path.join(folder, "openimages-shape.zarr")
        if args.cache:
            shutil.copytree(args.cache, cache)
        else:
            write_openimages_shaped(cache, args.train_images, args.test_images)
        model = text_tower_for(cache, folder)
        names_file, annotations = write_inputs(cache, folder, args.names)
        with CacheReader(cache) as reader:
            rows = sum(reader.num_rows(split) for split in reader.splits)
        seconds, peak = run_measured(["add-labels", "--cache", cache, "--names", names_file,
                                      "--annotations", annotations, "--model", model],
                                     os.path.join(folder, "add-labels.log"))
        with CacheReader(cache) as reader:
            assert reader.num_labels == SEEN + UNSEEN + args.names, reader.num_labels
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    entries = rows * args.names
    print(f"add-labels: {args.names} names on {rows} rows (every test image annotated, "
          f"{POSITIVES_PER_IMAGE} positives each): {seconds:.0f} s, peak RSS {peak / 1e9:.2f} GB; "
          f"new label entries {entries / 1e9:.2f} GB as int8")
    print(f"RATE add-labels {args.names / seconds:.1f} names/s ({args.names} names x {rows} rows, "
          f"peak RSS {peak / 1e9:.2f} GB, new entries {entries / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
