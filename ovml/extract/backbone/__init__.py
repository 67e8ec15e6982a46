"""The frozen CLIP image tower, either family: `load_backbone` builds CLIP from a name or file
(`weights.load_clip`), wraps it in the family its weights define, a `ResnetBackbone` or a
`VitBackbone`, both answering `base.Backbone`, and sets the path its tower runs on (`engine.py`)."""
from __future__ import annotations

import torch

from .base import Backbone
from .engine import ENGINES, PRECISIONS, resolve_path
from .resnet import ResnetBackbone
from .vit import VitBackbone
from .weights import BackboneError, import_clip, load_clip

__all__ = ["Backbone", "BackboneError", "ENGINES", "PRECISIONS", "ResnetBackbone", "VitBackbone", "load_backbone"]


def load_backbone(model: str = "RN50", device: torch.device | str = "cpu", download_root: str | None = None,
                  engine: str = "torch", precision: str = "auto") -> Backbone:
    """Load a CLIP ResNet or ViT by name or file onto `device`, frozen (fp16 weights on CUDA as
    clip does, float32 elsewhere), its tower set to run on `engine` in `precision` (`engine.py`:
    on the CPU "auto" is bf16 where the CPU has native bf16, else fp32)."""
    clip = import_clip()
    device = torch.device(device)
    network, sha256 = load_clip(model, device, download_root)
    if device.type == "cuda":
        network.visual.to(memory_format=torch.channels_last)
    else:
        network.float()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    path = resolve_path(engine, precision, device)
    preprocess = clip.clip._transform(network.visual.input_resolution)
    family = VitBackbone if isinstance(network.visual, clip.model.VisionTransformer) else ResnetBackbone
    backbone = family(network, model, sha256, device, preprocess, path.engine, path.precision, note=path.note)
    if path.engine == "onnxruntime":
        from .onnx_tower import onnx_tower
        backbone.runner = onnx_tower(backbone)
    elif device.type == "cpu" and isinstance(backbone, ResnetBackbone):
        backbone.fold_for_cpu()
    return backbone
