"""`ovml calibrate --images DIR`: the annotated images scored straight from their files, the image
tower run on them as `ovml predict` runs it, for labels calibrated where no cache holds them.

The annotations file names each image by `path` (or `id`), relative to DIR or absolute. The new
labels' scores are standardised over the first rows of the run's own cache (the images a tagged
label meets later are of that kind); where that cache cannot be read, over the annotated images
themselves, and the stored source says so.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..cache.reader import CacheReader
from ..config import CalibrateConfig, PredictConfig
from ..errors import UsageError
from ..predict.predictor import Predictor, load_picture
from .annotated import Annotated, check_both_kinds, labelled_lines, signs
from .fit import first_rows, head_scorer, run_calibration, score_rows

BATCH = 32   # images per tower pass


def annotated_files(path: str, folder: str) -> tuple[list[str], list[str], np.ndarray]:
    """(label names in first-seen order, image files, ±1 labels (n, L)) of a `path,labels` file."""
    names, lines = labelled_lines(path, keys=("path", "id"))
    files = [image if os.path.isabs(image) else os.path.join(folder, image) for _, image, _ in lines]
    missing = [(line, image) for (line, image, _), file in zip(lines, files) if not os.path.isfile(file)]
    if missing:
        raise UsageError(f"{path}:{missing[0][0]}: {missing[0][1]} is not a file under {folder} "
                         f"({len(missing)} listed image(s) missing)")
    labels = np.array([signs(names, set(given)) for _, _, given in lines], dtype=np.int8)
    return names, files, labels


@torch.no_grad()
def score_files(predictor: Predictor, files: list[str], text: torch.Tensor, alpha: float) -> np.ndarray:
    """(n, L) scores of the image files, as `ovml predict` scores them; an unreadable file is refused."""
    scores = []
    for start in range(0, len(files), BATCH):
        pictures = []
        for index, file in enumerate(files[start:start + BATCH]):
            picture, reason, _ = load_picture(file, start + index)
            if picture is None:
                raise UsageError(f"{file}: cannot be read ({reason})")
            pictures.append(picture)
        spatial, global_embedding = predictor.features(pictures)
        scores.append(np.asarray(predictor.scores(spatial, global_embedding, text, alpha), dtype=np.float64))
    return np.concatenate(scores)


def reference_scores(predictor: Predictor, text: torch.Tensor, alpha: float) -> np.ndarray | None:
    """(m, L) scores of the first rows of the run's cache, or None when it cannot be read."""
    if not predictor.cache_path or not os.path.exists(predictor.cache_path):
        return None
    device = predictor.backbone.device
    with CacheReader(predictor.cache_path) as reader:
        score = head_scorer(predictor.head, alpha, text.cpu().numpy(), device)
        return score_rows(reader, first_rows(reader, reader.splits[0]), score, None, device)[0]


def annotated_images(config: CalibrateConfig) -> Annotated:
    """The annotated image files scored by the run's head through the image tower."""
    if config.head is None:
        raise UsageError("--images scores the files with a run's head: give --head RUN (CLIP-ML is calibrated "
                         "from a cache: --cache PATH)")
    names, files, labels = annotated_files(config.annotations, config.images)
    check_both_kinds(config.annotations, names, labels)
    base = run_calibration(config.head, config.alpha, config.device)
    predictor = Predictor(PredictConfig(head=config.head, device=config.device))
    text = predictor.label_text(names)                                                    # (L, D)
    scores = score_files(predictor, files, text, config.alpha)
    reference = reference_scores(predictor, text, config.alpha)
    if reference is None:
        return Annotated(names, scores, labels, scores, base, note=" (standardised over themselves: the run's "
                                                                   "cache could not be read)")
    return Annotated(names, scores, labels, reference, base)
