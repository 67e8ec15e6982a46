"""B12: Open Images label CSV parsing speed and memory at train-file scale.

Writes an `*-annotations-human-imagelabels.csv` of --rows rows (default 5,000,000; about
8 rows per image, so ~600k images; 90% of the rows name one of the 7,186 seen + 400 unseen
MIDs, 10% one of 12,000 other MIDs that the reader must ignore; an image's rows contiguous as
in the release, except 1% moved to the end of the file, which the reader must merge back), then
parses it with ovml's reader and prints rows/s, peak RSS and the file size. The file is written by a child process, so the peak RSS
is the reader's (plus Python and numpy). Last line:
`RATE openimages-labels <rows/s> rows/s (<N> rows, peak RSS <M> MB)`.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile

import numpy as np

from ovml.extract.datasets.openimages_labels import HEADER, read_image_labels

SEEN, UNSEEN, OTHER = 7186, 400, 12000
SOURCES = np.array(["verification", "crowdsource-verification", "machine"])
ALPHABET = np.array(list("0123456789abcdefghijklmnopqrstuvwxyz_"))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_mids(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct MID-like strings: `/m/0` plus 3 to 7 characters."""
    mids: set[str] = set()
    while len(mids) < count:
        length = int(rng.integers(3, 8))
        mids.add("/m/0" + "".join(rng.choice(ALPHABET, size=length)))
    return sorted(mids)


def write_csv(path: str, rows: int, seed: int = 0, chunk: int = 500_000) -> tuple[list[str], int]:
    """Write the CSV; returns (the 7,586 label MIDs, number of images)."""
    rng = np.random.default_rng(seed)
    mids = np.array(random_mids(rng, SEEN + UNSEEN + OTHER))
    per_image = rng.integers(1, 16, size=rows // 8 + 16)                # mean 8 rows per image
    per_image = per_image[: int(np.searchsorted(np.cumsum(per_image), rows)) + 1]
    per_image[-1] -= per_image.sum() - rows
    image_ids = np.array([f"{value:016x}" for value in rng.integers(0, 2**63, size=per_image.size)])
    row_image = np.repeat(np.arange(per_image.size), per_image)
    moved = rng.random(rows) < 0.01
    row_image = np.concatenate([row_image[~moved], row_image[moved]])   # rows split far apart
    with open(path, "w") as handle:
        handle.write(HEADER.decode() + "\n")
        for start in range(0, rows, chunk):
            images = image_ids[row_image[start:start + chunk]].tolist()
            size = len(images)
            other = rng.random(size) < 0.1
            picks = np.where(other, rng.integers(SEEN + UNSEEN, mids.size, size=size),
                             rng.integers(0, SEEN + UNSEEN, size=size))
            labels = mids[picks].tolist()
            sources = SOURCES[rng.integers(0, SOURCES.size, size=size)].tolist()
            confidence = rng.integers(0, 2, size=size).tolist()
            handle.write("".join(f"{i},{s},{m},{c}\n" for i, s, m, c in zip(images, sources, labels, confidence)))
    return mids[: SEEN + UNSEEN].tolist(), per_image.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="data rows in the CSV")
    parser.add_argument("--dir", default=None, help="folder for the CSV [a temporary one]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = os.path.join(folder, "train-annotations-human-imagelabels.csv")
        with multiprocessing.get_context("fork").Pool(1) as pool:  # generation's memory stays in the child
            label_mids, images = pool.apply(write_csv, (path, args.rows))
        size_mb = os.path.getsize(path) / 1e6
        before = peak_rss_mb()
        labels = read_image_labels(path, {mid: column for column, mid in enumerate(label_mids)})
        peak = peak_rss_mb()
    assert len(labels.ids) == images and labels.rows == args.rows
    rate = labels.rows / labels.seconds
    print(f"file: {size_mb:.0f} MB, {labels.rows:,} rows, {images:,} images, "
          f"{labels.rows_ignored:,} rows ignored, {labels.rows_repeated:,} repeated, "
          f"{labels.values.size:,} labels kept")
    print(f"parse: {labels.seconds:.2f} s, {rate:,.0f} rows/s, "
          f"{size_mb / labels.seconds:.0f} MB/s")
    print(f"memory: peak RSS {peak:.0f} MB (before parsing {before:.0f} MB)")
    print(f"RATE openimages-labels {rate:.0f} rows/s ({labels.rows} rows, peak RSS {peak:.0f} MB)")


if __name__ == "__main__":
    main()
