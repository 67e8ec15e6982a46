"""`ovml export`: a trained run as a portable tagger, two ONNX graphs and a side file, which
onnxruntime, numpy and Pillow run without torch or ovml (docs/onnx_tag.py does).

    tower.onnx   image (N, 3, S, S), normalised as CLIP's transform -> tokens (N, T, C), global (N, D)
    head.onnx    tokens, global, text (L, D), alpha () -> scores (N, L) [, attention (N, L, HW)]
    text.npy     (L, D) float32: the labels' prompt-ensembled text embeddings, in label order
    tagger.json  label names, prompts, alpha, the preprocessing, shapes and the graphs' names;
                 the run's calibration.json, where it has one, is copied beside it and named here
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from ..extract.backbone.onnx_tower import export_tower
from ..extract.images import CLIP_MEAN, CLIP_STD
from ..predict.predictor import Predictor, parse_label_names
from .graphs import export_head

FORMAT = "ovml-onnx-tagger"
VERSION = 1
CALIBRATION_FILE = "calibration.json"


@dataclass
class ExportSummary:
    """What `export_run` wrote."""

    out: str
    files: list[str]          # file names inside `out`
    labels: int
    attention: bool           # whether head.onnx gives attention maps


def export_run(run: str, out: str, labels: str | list[str] | None = None, alpha: float = 0.0,
               model: str | None = None, prompts: str | None = None,
               download_root: str | None = None) -> ExportSummary:
    """Export `run` (its head and the CLIP it was trained on) to the folder `out`: the labels are
    `labels`, else the vocabulary of the run's cache; `alpha` is the default the side file names."""
    if not 0 <= alpha <= 1:
        raise UsageError(f"alpha must lie in [0, 1], got {alpha}")
    tagger = Predictor(model, run, "cpu", download_root, prompts, engine="torch", precision="fp32")
    names = parse_label_names(labels) if labels else tagger.vocabulary()
    if not names:
        raise UsageError(f"{run}: the run's cache cannot be read for its label names; pass --labels")
    os.makedirs(out, exist_ok=True)
    text = tagger.label_text(names)                                                  # (L, D)
    backbone = tagger.backbone
    export_tower(backbone, os.path.join(out, "tower.onnx"))
    side = backbone.input_resolution
    tokens, global_embedding = backbone.encode(torch.zeros(2, 3, side, side))       # (2, T, C), (2, D)
    outputs = export_head(tagger.head.module, tagger.has_attention, tokens, global_embedding, text,
                          os.path.join(out, "head.onnx"))
    np.save(os.path.join(out, "text.npy"), text.cpu().numpy().astype(np.float32))
    files = ["tower.onnx", "head.onnx", "text.npy", "tagger.json"]
    calibration = os.path.join(run, CALIBRATION_FILE)
    if os.path.isfile(calibration):
        shutil.copyfile(calibration, os.path.join(out, CALIBRATION_FILE))
        files.append(CALIBRATION_FILE)
    described = backbone.describe()
    side_file = {"format": FORMAT, "version": VERSION, "labels": names, "prompts": list(tagger.templates),
                 "alpha": alpha, "head": {"run": os.path.abspath(run), "name": tagger.head.name},
                 "backbone": {key: described[key] for key in ("name", "kind", "weights_sha256", "grid",
                                                              "channels", "embed_dim")},
                 "preprocess": {"size": side, "resize": "shorter side to size, bicubic; centre crop size x size",
                                "mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
                 "graphs": {"tower": {"file": "tower.onnx", "inputs": ["image"], "outputs": ["tokens", "global"]},
                            "head": {"file": "head.onnx", "inputs": ["tokens", "global", "text", "alpha"],
                                     "outputs": outputs}},
                 "text": "text.npy",
                 "calibration": CALIBRATION_FILE if CALIBRATION_FILE in files else None}
    with open(os.path.join(out, "tagger.json"), "w", encoding="utf-8") as handle:
        json.dump(side_file, handle, indent=2)
    return ExportSummary(out, files, len(names), "attention" in outputs)


__all__ = ["ExportSummary", "export_run"]
