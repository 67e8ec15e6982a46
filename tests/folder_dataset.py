"""Writes folder datasets for the tests: coloured images, classes.csv and labels.csv."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

CLASSES = [("red_square", 1), ("green_disc", 1), ("blue_bar", 1), ("yellow_dot", 0), ("white_ring", 0)]


def write_image(path: str, rng: np.random.Generator, size: int = 80, mode: str = "RGB") -> None:
    pixels = rng.integers(0, 256, size=(size, size + 16, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").convert(mode).save(path)


def write_folder_dataset(root: str, images: int = 24, broken: bool = False, seed: int = 0) -> dict:
    """Write a dataset; with `broken`, add the R2 cases (docs/benchmarks.md). Returns {path: reason} of the broken ones."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    with open(os.path.join(root, "classes.csv"), "w") as handle:
        handle.write("name,seen\n" + "".join(f"{name},{seen}\n" for name, seen in CLASSES))
    rows = []
    for i in range(images):
        path = f"img/{i:03d}.png"
        write_image(os.path.join(root, path), rng)
        positives = [name for name, _ in CLASSES if rng.random() < 0.4]
        rows.append((path, "train" if i % 3 else "test", ";".join(positives)))
    bad = {}
    if broken:
        bad = write_broken_images(root, rng)
        rows += [(path, "train", CLASSES[0][0]) for path in bad]
    with open(os.path.join(root, "labels.csv"), "w") as handle:
        handle.write("path,split,labels\n" + "".join(f"{p},{s},{l}\n" for p, s, l in rows))
    return bad


def write_broken_images(root: str, rng: np.random.Generator) -> dict:
    """The R2 cases: missing, zero-byte, truncated, non-image (bad); greyscale, CMYK, palette,
    16-bit (good, must decode)."""
    folder = os.path.join(root, "odd")
    os.makedirs(folder, exist_ok=True)
    write_image(os.path.join(folder, "grey.png"), rng, mode="L")
    write_image(os.path.join(folder, "cmyk.jpg"), rng, mode="CMYK")
    write_image(os.path.join(folder, "palette.png"), rng, mode="P")
    Image.fromarray(rng.integers(0, 65535, size=(70, 90), dtype=np.uint16)).save(os.path.join(folder, "deep16.png"))
    open(os.path.join(folder, "empty.jpg"), "wb").close()
    write_image(os.path.join(folder, "whole.jpg"), rng)
    with open(os.path.join(folder, "whole.jpg"), "rb") as handle:
        data = handle.read()
    with open(os.path.join(folder, "truncated.jpg"), "wb") as handle:
        handle.write(data[: len(data) // 3])
    with open(os.path.join(folder, "notes.jpg"), "w") as handle:
        handle.write("this is not an image\n")
    bad = {"odd/missing.jpg": "missing", "odd/empty.jpg": "empty", "odd/truncated.jpg": "image",
           "odd/notes.jpg": "image"}
    good = {f"odd/{name}": "" for name in ("grey.png", "cmyk.jpg", "palette.png", "deep16.png")}
    return {**bad, **good}
