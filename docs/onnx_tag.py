"""Tag images with a folder written by `ovml export`, using onnxruntime, numpy and Pillow alone
(no torch, no ovml):

    pip install onnxruntime numpy pillow
    python onnx_tag.py TAGGER_DIR photo.jpg [more.jpg ...] [--top-k 5] [--alpha 0.3] [--auto]

It prints each image's top labels with the scores `ovml predict --head RUN --json` gives for the
same labels (the labels are those exported, in tagger.json; their text embeddings are text.npy).
With --auto it keeps only the labels whose calibrated probability reaches 0.5 and prints it beside
the score, as `ovml predict --threshold auto` does (at the alpha the export was made for).
The preprocessing is CLIP's: shorter side resized to the input size (bicubic), centre crop,
RGB scaled to [0, 1] and normalised per channel.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import onnxruntime
from PIL import Image


def rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB (palette and alpha images through RGBA, as ovml does)."""
    if image.mode in ("P", "LA", "RGBA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def preprocess(path: str, size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """CLIP's input for one image file: (3, size, size) float32."""
    image = rgb(Image.open(path))
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)                       # as torchvision's Resize rounds
    image = image.resize((size, new_long) if width <= height else (new_long, size), Image.BICUBIC)
    width, height = image.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255)                   # (size, size, 3)
    pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return pixels.transpose(2, 0, 1)                                                 # (3, size, size)


class Tagger:
    """The exported tower and head, the labels and their text embeddings."""

    def __init__(self, folder: str):
        with open(os.path.join(folder, "tagger.json"), encoding="utf-8") as handle:
            self.meta = json.load(handle)
        graphs = self.meta["graphs"]
        self.tower = onnxruntime.InferenceSession(os.path.join(folder, graphs["tower"]["file"]),
                                                  providers=["CPUExecutionProvider"])
        self.head = onnxruntime.InferenceSession(os.path.join(folder, graphs["head"]["file"]),
                                                 providers=["CPUExecutionProvider"])
        self.text = np.load(os.path.join(folder, self.meta["text"]))                 # (L, D)
        self.labels = self.meta["labels"]

    def scores(self, paths: list[str], alpha: float) -> np.ndarray:
        """(N, L) scores of the images against every exported label."""
        settings = self.meta["preprocess"]
        images = np.stack([preprocess(p, settings["size"], settings["mean"], settings["std"]) for p in paths])
        tokens, global_feature = self.tower.run(["tokens", "global"], {"image": images})
        (scores,) = self.head.run(["scores"], {"tokens": tokens, "global": global_feature, "text": self.text,
                                               "alpha": np.asarray(alpha, dtype=np.float32)})
        return scores

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(N, L) calibrated probabilities of (N, L) scores made at the export's alpha."""
        maps = self.meta.get("probability")
        if not maps:
            raise SystemExit("this export has no probability maps (the run could not be calibrated)")
        mean, spread, slope, intercept = (np.asarray(maps[key]) for key in ("mean", "spread", "slope", "intercept"))
        return 1 / (1 + np.exp(-(slope * (scores - mean) / spread + intercept)))

    def tag(self, paths: list[str], top_k: int = 5, alpha: float | None = None,
            auto: bool = False) -> list[list[tuple]]:
        """Each image's top-k (label, score), best first; with `auto` only the labels whose
        probability reaches 0.5, as (label, score, probability)."""
        if auto and alpha is not None and alpha != self.meta["alpha"]:
            raise SystemExit(f"--auto: the probability maps are for alpha {self.meta['alpha']}, not {alpha}")
        scores = self.scores(paths, self.meta["alpha"] if alpha is None else alpha)
        order = np.argsort(-scores, axis=1, kind="stable")
        if not auto:
            return [[(self.labels[j], float(row[j])) for j in best[:top_k]] for row, best in zip(scores, order)]
        probability = self.probabilities(scores)
        return [[(self.labels[j], float(row[j]), float(p[j])) for j in best if p[j] >= 0.5][:top_k]
                for row, p, best in zip(scores, probability, order)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Tag images with an `ovml export` folder (onnxruntime only).")
    parser.add_argument("folder")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=None, help="default: the one tagger.json names")
    parser.add_argument("--auto", action="store_true", help="only the labels judged present (probability >= 0.5)")
    args = parser.parse_args()
    tagger = Tagger(args.folder)
    for path, labels in zip(args.images, tagger.tag(args.images, args.top_k, args.alpha, args.auto)):
        print(f"{path}: " + ", ".join(f"{name} {score:.3f}" + (f" (p {rest[0]:.2f})" if rest else "")
                                      for name, score, *rest in labels))


if __name__ == "__main__":
    main()
