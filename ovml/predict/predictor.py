"""Top-K labels of new images for any vocabulary, with CLIP-ML or a trained head.

One code path for every face: `ovml predict`, `ovml.load_tagger(...).predict` and the page of
`ovml serve` all call `Predictor.predict`. The model is loaded once; images (files, encoded bytes
or PIL images) are decoded like the extractor does; the attention map of every predicted label
comes from the same forward pass as the scores (`--explain` draws them, the page shows them).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from PIL import Image

from ..config import DEFAULT_MODEL, PredictConfig
from ..errors import UsageError
from ..extract.backbone import Backbone, load_backbone
from ..extract.backbone.weights import resolve_weights
from ..extract.images import open_rgb, read_image_file, to_rgb
from ..extract.text import embed_labels, load_prompts
from ..train.run_folder import RunFolder
from ..cache.batches import pool_tensors
from ..evaluation.scoring import clip_ml_scores, head_parts
from ..train.saved_head import TrainedHead, load_trained_head

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEXT_CACHE = 16  # label lists whose text embeddings are kept (a page re-scoring one image reuses them)

ImageInput = Union[str, "os.PathLike[str]", bytes, Image.Image]


@dataclass
class Prediction:
    image: str                        # the file, or a name given to an in-memory image
    labels: list[tuple[str, float]]   # (name, score), best first
    error: str = ""                   # why the image could not be read
    explanation: str = ""             # the attention-map PNG, with --explain
    attention: np.ndarray | None = None   # (k, H, W): the head's attention map of each predicted label
    picture: Image.Image | None = None    # the decoded RGB image, kept with the attention maps
    probabilities: list[float] | None = None  # each label's calibrated probability (a calibrated threshold)

    def as_json(self) -> dict:
        labels = [{"name": n, "score": round(s, 6)} for n, s in self.labels]
        for label, probability in zip(labels, self.probabilities or []):
            label["probability"] = round(probability, 6)
        entry = {"image": self.image, "labels": labels}
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


def parse_label_names(labels: str | list[str] | tuple[str, ...]) -> list[str]:
    """'a, b,,a' or ['a', 'b'] -> ['a', 'b']: stripped, empty ones dropped, duplicates once."""
    parts = labels.split(",") if isinstance(labels, str) else list(labels)
    names = list(dict.fromkeys(n.strip() for n in parts if isinstance(n, str) and n.strip()))
    if not names:
        raise UsageError("the label list is empty")
    return names


def read_label_names(labels: str | None, labels_file: str | None) -> list[str]:
    """Labels from `--labels "a,b"` or `--labels-file` (one per line)."""
    if bool(labels) == bool(labels_file):
        raise UsageError("give exactly one of --labels or --labels-file")
    if labels:
        return parse_label_names(labels)
    with open(labels_file, encoding="utf-8-sig") as handle:
        return parse_label_names([line for line in handle if not line.startswith("#")])


def check_head_backbone(trained_on: dict, model: str, download_root: str | None) -> None:
    """A head reads the X' of the CLIP it was trained on: refuse other weights."""
    expected = trained_on.get("backbone", {}).get("weights_sha256")
    if expected and resolve_weights(model, download_root)[1] != expected:
        raise UsageError(f"{model}: the head was trained on features of other CLIP weights "
                         f"({trained_on['backbone'].get('name')}, sha256 {expected[:12]}...); pass that --model")


def load_picture(item: ImageInput, index: int) -> tuple[Image.Image | None, str, str]:
    """(RGB image or None, why not, a name for it) for a path, encoded bytes or a PIL image."""
    if isinstance(item, Image.Image):
        return to_rgb(item), "", getattr(item, "filename", "") or f"image {index}"
    if isinstance(item, (bytes, bytearray)):
        picture, reason = open_rgb(bytes(item)) if item else (None, "empty file (0 bytes)")
        return picture, reason, f"image {index}"
    path = os.fspath(item)
    data, reason = read_image_file(path)
    if data is None:
        return None, reason, path
    return (*open_rgb(data), path)


class Predictor:
    """CLIP (and optionally a trained head) loaded once, scoring images against any label list."""

    def __init__(self, config: PredictConfig = PredictConfig()):
        self.config = config
        self.run = config.head
        trained_on = RunFolder(config.head).read_config()["cache"] if config.head else {}
        self.cache_path: str | None = trained_on.get("path")
        model = config.model or trained_on.get("backbone", {}).get("name") or DEFAULT_MODEL
        check_head_backbone(trained_on, model, config.download_root)
        self.templates = (load_prompts(config.prompts) if config.prompts or not trained_on.get("prompts")
                          else trained_on["prompts"])
        self.backbone: Backbone = load_backbone(model, config.device, config.download_root, config.engine,
                                                config.tower_precision)
        self.head: TrainedHead | None = None
        if config.head:
            pool = pool_tensors(self.backbone.pool_weights(), self.backbone.device)
            self.head = load_trained_head(config.head, pool, self.backbone.num_heads, self.backbone.device)
        self._text: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._maps: dict = {}                      # (names, alpha) -> calibrate.record.LabelMaps
        self._text_lock = threading.Lock()         # `predict` may be called from several threads at once
        self.encode_images = self.backbone.encode  # the tower; `ovml serve` puts its batcher here

    @property
    def has_attention(self) -> bool:
        """True when the head draws per-label attention maps (the ovml, biam and lesa heads do)."""
        return self.head is not None and hasattr(self.head.module, "attention_maps")

    def vocabulary(self) -> list[str]:
        """The label names of the cache the head was trained on ([] when it cannot be read)."""
        if not self.cache_path:
            return []
        from ..cache.reader import CacheReader
        from ..cache.schema import CacheError
        try:
            with CacheReader(self.cache_path, allow_partial=True) as reader:
                return list(dict.fromkeys(reader.names))
        except (CacheError, OSError):
            return []

    def label_text(self, names: list[str]) -> torch.Tensor:
        """(L, D) prompt-ensembled text embeddings of `names`, embedded as one list (so the same
        list always gets the same numbers) and kept for the next call with that list."""
        key = tuple(names)
        with self._text_lock:
            if key not in self._text:
                text = embed_labels(self.backbone.model, names, self.templates, self.backbone.device, progress=False)
                self._text[key] = torch.from_numpy(text).to(self.backbone.device)
                while len(self._text) > TEXT_CACHE:
                    self._text.popitem(last=False)
            self._text.move_to_end(key)
            return self._text[key]

    def features(self, pictures: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial (n, HW, C) and global (n, D) float32 features of decoded images (a ViT's
        spatial is [cls; X'] (n, 1+HW, W), the tokens its heads read)."""
        spatial, global_embedding = self.encode_images(torch.stack([self.backbone.preprocess(p) for p in pictures]))
        return spatial.float(), global_embedding.float()

    @torch.no_grad()
    def scores(self, spatial: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor,
               alpha: float) -> np.ndarray:
        if self.head is None:
            return clip_ml_scores(global_embedding, text)
        return head_parts(self.head.module, spatial, global_embedding, text).scores(alpha)

    @torch.no_grad()
    def attention_maps(self, spatial: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor,
                       columns: np.ndarray) -> np.ndarray:
        """(k, H, W) attention of one image's features (batch of 1) for the label `columns`."""
        maps = self.head.module.attention_maps(spatial, global_embedding, text[columns])  # (1, k, HW)
        grid = self.backbone.grid
        return maps[0].reshape(len(columns), grid[0], grid[1]).float().cpu().numpy()      # (k, H, W)

    def predict(self, images: ImageInput | list[ImageInput], labels: str | list[str] | None = None,
                top_k: int | None = None, alpha: float | None = None, batch_size: int | None = None,
                attention: bool = False, explain: str | None = None,
                threshold: float | str | None = None) -> list[Prediction]:
        """Top-K of `labels` per image, best first; with `threshold` (a score, 'mcut', 'auto' or
        'auto-f1') only the labels at or above it, at most `top_k` of them (with their calibrated
        probabilities for 'auto' and 'auto-f1'). `labels`, `top_k`, `alpha`, `batch_size`,
        `explain` and `threshold` left None are the config's. `attention` keeps each predicted
        label's attention map and the decoded image; `explain` also writes them as PNGs there."""
        from ..tag.rules import threshold_rule
        config = self.config
        labels = config.labels if labels is None else labels
        top_k = config.top_k if top_k is None else top_k
        alpha = config.alpha if alpha is None else alpha
        batch_size = config.batch_size if batch_size is None else batch_size
        explain = config.explain if explain is None else explain
        threshold = config.threshold if threshold is None else threshold
        rule = threshold_rule(threshold) if threshold is not None else None
        if isinstance(images, (str, bytes, os.PathLike, Image.Image)):
            images = [images]
        if not 0 <= alpha <= 1:
            raise UsageError(f"alpha must lie in [0, 1], got {alpha}")
        if (attention or explain) and not self.has_attention:
            raise UsageError("attention maps need --head with an attention head (ovml, biam, lesa)")
        if explain:
            os.makedirs(explain, exist_ok=True)
        names = parse_label_names(labels)
        text = self.label_text(names)
        if hasattr(rule, "maps"):                                      # a calibrated rule (tag/rules.py)
            rule.maps = self.label_maps(names, text, alpha)
        predictions = []
        for start in range(0, len(images), batch_size):
            batch = [load_picture(item, start + i) for i, item in enumerate(images[start:start + batch_size])]
            decoded = [picture for picture, _, _ in batch if picture is not None]
            spatial, global_embedding = self.features(decoded) if decoded else (None, None)
            scores = self.scores(spatial, global_embedding, text, alpha) if decoded else None
            present, probabilities = rule.decisions(scores) if rule is not None and decoded else (None, None)
            row = 0
            for picture, reason, name in batch:
                if picture is None:
                    predictions.append(Prediction(name, [], reason))
                    continue
                order = np.argsort(-scores[row], kind="stable")
                if present is not None:
                    order = order[present[row][order]]
                order = order[:top_k]
                prediction = Prediction(name, [(names[j], float(scores[row][j])) for j in order])
                if probabilities is not None:
                    prediction.probabilities = [float(p) for p in probabilities[row][order]]
                if attention or explain:
                    prediction.attention = self.attention_maps(spatial[row:row + 1], global_embedding[row:row + 1],
                                                               text, order)
                    prediction.picture = picture
                if explain:
                    self.explain(prediction, explain, keep=attention)
                predictions.append(prediction)
                row += 1
        return predictions

    def label_maps(self, names: list[str], text: torch.Tensor, alpha: float):
        """The calibration of `names` for `threshold='auto'`: the run's (and the calibration file's),
        new labels standardised over its validation images (a single image has no others); kept for
        the next call with these names. CLIP-ML alone decides only with a calibration file."""
        if self.run is None and self.config.calibration is None:
            raise UsageError("threshold 'auto' needs a head (--head RUN) or a calibration file (--calibration "
                             "FILE from `ovml calibrate --out`): CLIP-ML alone is calibrated on a cache's labels "
                             "(`ovml tag --cache`)")
        from ..calibrate.attach import label_maps
        key = (tuple(names), alpha)
        if key not in self._maps:
            self._maps[key] = label_maps(names, text.cpu().numpy(), self.run, alpha, None, self.config.device,
                                         self.config.calibration)
        return self._maps[key]

    def explain(self, prediction: Prediction, out: str, keep: bool) -> None:
        """Write the image with each predicted label's attention map over it (the paper's Figure 3)."""
        from .explain import draw_attention
        stem = os.path.splitext(os.path.basename(prediction.image))[0].replace(" ", "-")
        prediction.explanation = os.path.join(out, stem + ".png")
        draw_attention(prediction.picture, self.backbone.input_resolution, prediction.labels, prediction.attention,
                       prediction.explanation)
        if not keep:
            prediction.attention, prediction.picture = None, None
