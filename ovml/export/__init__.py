"""`ovml export`: a trained run as a portable tagger, two ONNX graphs and a side file, which
onnxruntime, numpy and Pillow run without torch or ovml (docs/onnx_tag.py does).

    tower.onnx   image (N, 3, S, S), normalised as CLIP's transform -> tokens (N, T, C), global (N, D)
    head.onnx    tokens, global, text (L, D), alpha () -> scores (N, L) [, attention (N, L, HW)]
    text.npy     (L, D) float32: the labels' prompt-ensembled text embeddings, in label order
    tagger.json  label names, prompts, alpha, the preprocessing, shapes and the graphs' names; each
                 label's probability map at that alpha (p = sigmoid(slope (s - mean) / spread +
                 intercept), `ovml predict --threshold auto`'s) where the run can be calibrated;
                 the run's calibration.json, where it has one, is copied beside it and named here
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch

from ..calibrate.record import CALIBRATION_FILE
from ..config import ExportConfig, PredictConfig
from ..errors import UsageError
from ..extract.backbone.onnx_tower import export_tower
from ..extract.images import CLIP_MEAN, CLIP_STD
from ..files import replace_atomically, write_json
from ..lock import folder_lock
from ..predict.predictor import Predictor, parse_label_names
from .graphs import export_head

FORMAT = "ovml-onnx-tagger"
VERSION = 1


@dataclass
class ExportSummary:
    """What `export_run` wrote."""

    out: str
    files: list[str]          # file names inside `out`
    labels: int
    attention: bool           # whether head.onnx gives attention maps


def export_run(config: ExportConfig) -> ExportSummary:
    """Export `config.head` (its head and the CLIP it was trained on) to the folder `config.out`,
    holding the folder's writer lock: the labels are `config.labels`, else the vocabulary of the
    run's cache. Each file is written atomically and tagger.json last, so a folder with
    tagger.json holds a whole tagger."""
    if not 0 <= config.alpha <= 1:
        raise UsageError(f"alpha must lie in [0, 1], got {config.alpha}")
    with folder_lock(config.out, config.lock):
        return write_tagger(config)


def write_tagger(config: ExportConfig) -> ExportSummary:
    """`export_run`'s work, once the lock is held."""
    tagger = Predictor(PredictConfig(head=config.head, model=config.model, prompts=config.prompts,
                                     download_root=config.download_root, engine="torch", tower_precision="fp32"))
    names = parse_label_names(config.labels) if config.labels else tagger.vocabulary()
    if not names:
        raise UsageError(f"{config.head}: the run's cache cannot be read for its label names; pass --labels")
    os.makedirs(config.out, exist_ok=True)
    text = tagger.label_text(names)                                                  # (L, D)
    backbone = tagger.backbone
    replace_atomically(os.path.join(config.out, "tower.onnx"), lambda path: export_tower(backbone, path))
    size = backbone.input_resolution
    tokens, global_embedding = backbone.encode(torch.zeros(2, 3, size, size))       # (2, T, C), (2, D)
    outputs: list[str] = []
    replace_atomically(os.path.join(config.out, "head.onnx"), lambda path: outputs.extend(
        export_head(tagger.head.module, tagger.has_attention, tokens, global_embedding, text, path)))
    replace_atomically(os.path.join(config.out, "text.npy"), lambda path: save_array(path, text))
    files = ["tower.onnx", "head.onnx", "text.npy", "tagger.json"]
    calibration = os.path.join(config.head, CALIBRATION_FILE)
    if os.path.isfile(calibration):
        replace_atomically(os.path.join(config.out, CALIBRATION_FILE), lambda path: shutil.copyfile(calibration, path))
        files.append(CALIBRATION_FILE)
    write_json(os.path.join(config.out, "tagger.json"), side_file(config, tagger, names, text, outputs, files))
    return ExportSummary(config.out, files, len(names), "attention" in outputs)


def probability_maps(tagger: Predictor, names: list[str], text: torch.Tensor, alpha: float) -> dict | None:
    """The labels' maps from scores to calibrated probabilities at `alpha`, as lists in label
    order; None when the run has neither validation images nor a stored calibration."""
    try:
        maps = tagger.label_maps(names, text, alpha)
    except UsageError:
        return None
    return {"alpha": alpha, "mean": maps.mean.tolist(), "spread": maps.spread.tolist(),
            "slope": maps.slope.tolist(), "intercept": maps.intercept.tolist()}


def save_array(path: str, text: torch.Tensor) -> None:
    """(L, D) float32 as .npy at `path` exactly (np.save given a name would append '.npy')."""
    with open(path, "wb") as handle:
        np.save(handle, text.cpu().numpy().astype(np.float32))


def side_file(config: ExportConfig, tagger: Predictor, names: list[str], text: torch.Tensor, outputs: list[str],
              files: list[str]) -> dict:
    """tagger.json: what a runtime without ovml needs to prepare images and read the graphs."""
    described = tagger.backbone.describe()
    return {"format": FORMAT, "version": VERSION, "labels": names, "prompts": list(tagger.templates),
            "alpha": config.alpha, "head": {"run": os.path.abspath(config.head), "name": tagger.head.name},
            "backbone": {key: described[key] for key in ("name", "kind", "weights_sha256", "grid",
                                                         "channels", "embed_dim")},
            "preprocess": {"size": tagger.backbone.input_resolution,
                           "resize": "shorter side to size, bicubic; centre crop size x size",
                           "mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
            "graphs": {"tower": {"file": "tower.onnx", "inputs": ["image"], "outputs": ["tokens", "global"]},
                       "head": {"file": "head.onnx", "inputs": ["tokens", "global", "text", "alpha"],
                                "outputs": outputs}},
            "text": "text.npy",
            "calibration": CALIBRATION_FILE if CALIBRATION_FILE in files else None,
            "probability": probability_maps(tagger, names, text, config.alpha)}


__all__ = ["ExportSummary", "export_run"]
