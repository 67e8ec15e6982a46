"""What every frozen CLIP image tower answers, whichever family it is: X' (the tokens entering
CLIP's pool) and CLIP's global embedding from one pass (`encode`), the pool's weights as the cache
stores them (`pool_weights`), and the shapes the cache records (`describe`).

The families differ in where X' is taken and what the "pool" is: a ResNet's attention pool
(`resnet.ResnetBackbone`), a Vision Transformer's last residual block (`vit.VitBackbone`). Each
family writes the pass itself (`tokens_and_global`); `encode` runs it on the path chosen at load
(`engine.py`: eager torch, under bf16 autocast on CPUs with native bf16, or ONNX Runtime).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch


@dataclass
class Backbone(ABC):
    """A loaded CLIP with what the cache needs to know about its image tower."""

    kind: ClassVar[str]       # the cache's `backbone.kind`: "resnet" or "vit"

    model: torch.nn.Module    # the whole CLIP (image and text towers), eval mode
    name: str                 # the model name or the file it came from
    sha256: str               # sha256 of the weights file
    device: torch.device
    preprocess: object        # CLIP's image transform (PIL image -> normalised tensor)
    engine: str = "torch"     # torch or onnxruntime (engine.py)
    precision: str | None = None  # what the tower computes in: fp32, bf16 (CPU autocast) or fp16;
                              # None: the weights' own dtype, without autocast
    runner: Callable | None = None  # runs the pass instead of torch (the onnxruntime engine's session)
    note: str | None = None   # why the path differs from what was asked, for the user

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def input_resolution(self) -> int:
        return int(self.visual.input_resolution)

    @property
    @abstractmethod
    def grid(self) -> tuple[int, int]:
        """X's spatial grid (rows, columns)."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """Width C of each X' token."""

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Width D of CLIP's global (joint image-text) embedding."""

    @property
    @abstractmethod
    def num_heads(self) -> int:
        """Attention heads of CLIP's pool."""

    @property
    def computes_in(self) -> str:
        """fp32, bf16 or fp16: the precision the tower computes in."""
        return self.precision or {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")

    def describe(self) -> dict:
        """The cache's `backbone` root attribute, with the path that made the features."""
        return {"name": self.name, "kind": self.kind, "weights_sha256": self.sha256,
                "input_resolution": self.input_resolution, "grid": list(self.grid),
                "channels": self.channels, "embed_dim": self.embed_dim, "feature_dtype": "float16",
                "engine": self.engine, "precision": self.computes_in}

    @abstractmethod
    def pool_weights(self) -> dict[str, np.ndarray]:
        """CLIP's pool as float32 arrays, named as in the cache's `pool/*`."""

    @abstractmethod
    def tokens_and_global(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens a head reads (N, T, C) and CLIP's global embedding (N, D), from one forward
        pass over normalised images (N, 3, S, S) already on the device in the weights' dtype."""

    @staticmethod
    def pool_precision():
        """The context the pool runs in: outside bf16 autocast, so that on every path the global
        feature is CLIP's pool applied to the tokens (as the cache's invariant says), and at the
        weights' precision; the pool is a small part of the pass."""
        return torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens a head reads (N, T, C) and CLIP's global embedding (N, D), from one forward
        pass over normalised images (N, 3, S, S), on the path chosen at load: float32 on the
        CPU (also after bf16 autocast), the weights' dtype elsewhere."""
        if self.runner is not None:
            return self.runner(images)
        x = images.to(self.device, non_blocking=True).type(self.dtype)
        autocast = self.precision == "bf16" and self.device.type == "cpu"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            tokens, global_embedding = self.tokens_and_global(x)
        if autocast:
            return tokens.float(), global_embedding.float()
        return tokens, global_embedding
