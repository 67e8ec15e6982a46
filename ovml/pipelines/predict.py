"""`ovml predict`: top-K labels of new images for any vocabulary, with CLIP-ML or a trained head.

The model is loaded once; images are decoded like the extractor does; `--explain` writes each
image with the head's attention map of every predicted label overlaid (the paper's Figure 3).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from ..extract.backbone import Backbone, load_backbone, resolve_weights
from ..extract.images import decode
from ..extract.text import embed_labels, load_prompts
from .runs import RunFolder
from .scoring import TrainedHead, clip_ml_scores, head_parts, load_trained_head, pool_tensors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Prediction:
    image: str
    labels: list[tuple[str, float]]   # (name, score), best first
    error: str = ""                   # why the image could not be read
    explanation: str = ""             # the attention-map PNG, with --explain

    def as_json(self) -> dict:
        entry = {"image": self.image, "labels": [{"name": n, "score": round(s, 6)} for n, s in self.labels]}
        extras = {"error": self.error, "explanation": self.explanation}
        return entry | {key: value for key, value in extras.items() if value}


def expand_images(inputs: list[str]) -> list[str]:
    """Files as given; folders expanded to their image files (sorted, recursive)."""
    images = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(item) for f in files
                           if f.lower().endswith(IMAGE_SUFFIXES))
            images.extend(found)
        else:
            images.append(item)
    if not images:
        raise UsageError("no images given (files or folders of .jpg/.png/...)")
    return images


def read_label_names(labels: str | None, labels_file: str | None) -> list[str]:
    """Labels from `--labels "a,b"` or `--labels-file` (one per line)."""
    if bool(labels) == bool(labels_file):
        raise UsageError("give exactly one of --labels or --labels-file")
    if labels:
        names = [n.strip() for n in labels.split(",") if n.strip()]
    else:
        with open(labels_file, encoding="utf-8-sig") as handle:
            names = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    if not names:
        raise UsageError("the label list is empty")
    return list(dict.fromkeys(names))


def check_head_backbone(trained_on: dict, model: str, download_root: str | None) -> None:
    """A head reads the X' of the CLIP it was trained on: refuse other weights."""
    expected = trained_on.get("backbone", {}).get("weights_sha256")
    if expected and resolve_weights(model, download_root)[1] != expected:
        raise UsageError(f"{model}: the head was trained on features of other CLIP weights "
                         f"({trained_on['backbone'].get('name')}, sha256 {expected[:12]}...); pass that --model")


class Predictor:
    """CLIP (and optionally a trained head) loaded once, scoring images against a vocabulary."""

    def __init__(self, names: list[str], model: str | None = None, head: str | None = None, alpha: float = 0.0,
                 device: str = "cpu", download_root: str | None = None, prompts: str | None = None):
        self.names = names
        self.alpha = alpha
        trained_on = RunFolder(head).read_config()["cache"] if head else {}
        model = model or trained_on.get("backbone", {}).get("name") or "RN50"
        check_head_backbone(trained_on, model, download_root)
        templates = load_prompts(prompts) if prompts or not trained_on.get("prompts") else trained_on["prompts"]
        self.backbone: Backbone = load_backbone(model, device, download_root)
        text = embed_labels(self.backbone.model, names, templates, self.backbone.device, progress=False)
        self.text = torch.from_numpy(text).to(self.backbone.device)
        self.head: TrainedHead | None = None
        if head:
            pool = pool_tensors(self.backbone.pool_weights(), self.backbone.device)
            self.head = load_trained_head(head, pool, self.backbone.num_heads, self.backbone.device)

    def features(self, images: list[str]) -> tuple[list[int], list[str], torch.Tensor, torch.Tensor]:
        """(indices decoded, errors per image, spatial (n, HW, C) float32, global (n, D) float32)."""
        tensors, kept, errors = [], [], []
        for index, path in enumerate(images):
            tensor, reason = decode(path, self.backbone.preprocess)
            errors.append(reason)
            if tensor is not None:
                tensors.append(tensor)
                kept.append(index)
        if not tensors:
            return kept, errors, torch.empty(0), torch.empty(0)
        spatial, global_embedding = self.backbone.encode(torch.stack(tensors))
        return kept, errors, spatial.float(), global_embedding.float()

    @torch.no_grad()
    def scores(self, spatial: torch.Tensor, global_embedding: torch.Tensor) -> np.ndarray:
        if self.head is None:
            return clip_ml_scores(global_embedding, self.text)
        return head_parts(self.head.module, spatial, global_embedding, self.text).scores(self.alpha)

    def predict(self, images: list[str], top_k: int = 5, batch_size: int = 32,
                explain: str | None = None) -> list[Prediction]:
        """Top-K labels per image; with `explain`, also the attention-map PNG of each image,
        drawn from the same forward pass."""
        if explain:
            if self.head is None or not hasattr(self.head.module, "attention_maps"):
                raise UsageError("--explain needs --head with attention maps (ovml, biam, lesa)")
            os.makedirs(explain, exist_ok=True)
        predictions = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            kept, errors, spatial, global_embedding = self.features(batch)
            scores = self.scores(spatial, global_embedding) if kept else np.zeros((0, len(self.names)))
            row_of = {index: row for row, index in enumerate(kept)}
            for index, path in enumerate(batch):
                if index not in row_of:
                    predictions.append(Prediction(path, [], errors[index]))
                    continue
                row = row_of[index]
                order = np.argsort(-scores[row], kind="stable")[:top_k]
                prediction = Prediction(path, [(self.names[j], float(scores[row][j])) for j in order])
                if explain:
                    prediction.explanation = self.explain(prediction, spatial[row:row + 1],
                                                          global_embedding[row:row + 1], order, explain)
                predictions.append(prediction)
        return predictions

    @torch.no_grad()
    def explain(self, prediction: Prediction, spatial: torch.Tensor, global_embedding: torch.Tensor,
                columns: np.ndarray, out: str) -> str:
        """Write the image with each predicted label's attention map over it; returns the PNG path."""
        from .explain import draw_attention
        maps = self.head.module.attention_maps(spatial, global_embedding, self.text[columns])  # (1, k, HW)
        grid = self.backbone.grid
        maps = maps[0].reshape(len(columns), grid[0], grid[1]).cpu().numpy()                  # (k, H, W)
        path = os.path.join(out, os.path.splitext(os.path.basename(prediction.image))[0] + ".png")
        draw_attention(prediction.image, self.backbone.input_resolution, prediction.labels, maps, path)
        return path
