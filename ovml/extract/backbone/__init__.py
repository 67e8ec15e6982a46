"""The frozen CLIP image tower, either family: `load_backbone` builds CLIP from a name or file
(`weights.load_clip`) and wraps it in the family its weights define, a `ResnetBackbone` or a
`VitBackbone`, both answering `base.Backbone`."""
from __future__ import annotations

import torch

from .base import Backbone
from .resnet import ResnetBackbone
from .vit import VitBackbone
from .weights import BackboneError, import_clip, load_clip

__all__ = ["Backbone", "BackboneError", "ResnetBackbone", "VitBackbone", "load_backbone"]


def load_backbone(model: str = "RN50", device: torch.device | str = "cpu",
                  download_root: str | None = None) -> Backbone:
    """Load a CLIP ResNet or ViT by name or file onto `device`, frozen (fp16 on CUDA as clip
    does, float32 elsewhere)."""
    clip = import_clip()
    device = torch.device(device)
    network, sha256 = load_clip(model, device, download_root)
    if device.type == "cuda":
        network.visual.to(memory_format=torch.channels_last)
    else:
        network.float()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    preprocess = clip.clip._transform(network.visual.input_resolution)
    family = VitBackbone if isinstance(network.visual, clip.model.VisionTransformer) else ResnetBackbone
    return family(network, model, sha256, device, preprocess)
