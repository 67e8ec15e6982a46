"""What every frozen CLIP image tower answers, whichever family it is: X' (the tokens entering
CLIP's pool) and CLIP's global embedding from one pass (`encode`), the pool's weights as the cache
stores them (`pool_weights`), and the shapes the cache records (`describe`).

The families differ in where X' is taken and what the "pool" is: a ResNet's attention pool
(`resnet.ResnetBackbone`), a Vision Transformer's last residual block (`vit.VitBackbone`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

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

    def describe(self) -> dict:
        """The cache's `backbone` root attribute."""
        return {"name": self.name, "kind": self.kind, "weights_sha256": self.sha256,
                "input_resolution": self.input_resolution, "grid": list(self.grid),
                "channels": self.channels, "embed_dim": self.embed_dim, "feature_dtype": "float16"}

    @abstractmethod
    def pool_weights(self) -> dict[str, np.ndarray]:
        """CLIP's pool as float32 arrays, named as in the cache's `pool/*`."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens a head reads (N, T, C) and CLIP's global embedding (N, D), from one forward
        pass over normalised images (N, 3, S, S)."""
