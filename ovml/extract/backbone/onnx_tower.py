"""The image tower as an ONNX graph: images (N, 3, S, S) -> the tokens a head reads and CLIP's
global embedding, with a dynamic batch axis. `--engine onnxruntime` runs it in ONNX Runtime
(`OnnxTower`); `ovml export` writes it beside the head's graph.

ONNX Runtime and onnx are an optional extra (`pip install 'ovml[onnx]'`); the graph is traced
with torch's TorchScript-based exporter, which needs onnx but not onnxscript.
"""
from __future__ import annotations

import inspect
import os
import tempfile
import warnings

import numpy as np
import torch

from .weights import BackboneError

OPSET = 17
INSTALL_HINT = "pip install 'ovml[onnx]' (onnxruntime and onnx)"


def import_onnxruntime():
    """onnxruntime, or a one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise BackboneError(f"onnxruntime is not installed: {INSTALL_HINT}") from None
    return onnxruntime


class TowerGraph(torch.nn.Module):
    """`Backbone.tokens_and_global` as a module, so that it can be traced."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.visual = backbone.visual    # registered, so that the exporter sees its weights

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone.tokens_and_global(images)


def export_graph(module: torch.nn.Module, inputs: tuple, path: str, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict) -> None:
    """Trace `module` on `inputs` into an ONNX file at `path` (float32, on the CPU)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise BackboneError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from None
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, inputs, path, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, **options)


def export_tower(backbone, path: str) -> None:
    """Write the tower of a float32 CPU `backbone` as ONNX: input `image` (N, 3, S, S) normalised
    as CLIP's transform does, outputs `tokens` (N, T, C) and `global` (N, D)."""
    if backbone.device.type != "cpu" or backbone.computes_in != "fp32":
        raise BackboneError("the ONNX tower is exported from an fp32 backbone on the CPU (--precision fp32)")
    side = backbone.input_resolution
    example = torch.zeros(1, 3, side, side)
    export_graph(TowerGraph(backbone).eval(), (example,), path, ["image"], ["tokens", "global"],
                 {"image": {0: "images"}, "tokens": {0: "images"}, "global": {0: "images"}})


def session_options(onnxruntime, threads: int):
    """ONNX Runtime's CPU settings: `threads` intra-op threads, one inter-op, every graph optimisation."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxTower:
    """The tower running in ONNX Runtime on the CPU: called like `Backbone.encode`'s pass,
    normalised images in, float32 (tokens, global) tensors out."""

    def __init__(self, path: str, threads: int | None = None):
        onnxruntime = import_onnxruntime()
        self.session = onnxruntime.InferenceSession(
            path, session_options(onnxruntime, threads or torch.get_num_threads()),
            providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        tokens, global_embedding = self.session.run(["tokens", "global"], {"image": pixels})
        return torch.from_numpy(tokens), torch.from_numpy(global_embedding)


def onnx_tower(backbone) -> OnnxTower:
    """Export `backbone`'s tower to a temporary file and open it in ONNX Runtime (the session
    keeps the graph; the file is removed)."""
    import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="ovml-tower-") as folder:
        path = os.path.join(folder, "tower.onnx")
        export_tower(backbone, path)
        return OnnxTower(path)
