"""The frozen CLIP ResNet (RN50, RN101, RN50x4, ...): X' is the feature map entering the
attention pool, and the pool gives CLIP's global embedding in the same pass."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from .base import Backbone


class ResnetBackbone(Backbone):
    """A loaded CLIP ResNet. `encode` returns X' (N, HW, C): the tokens a head reads."""

    kind: ClassVar[str] = "resnet"

    @property
    def grid(self) -> tuple[int, int]:
        side = round((self.visual.attnpool.positional_embedding.shape[0] - 1) ** 0.5)
        return side, side

    @property
    def channels(self) -> int:
        return int(self.visual.attnpool.positional_embedding.shape[1])

    @property
    def embed_dim(self) -> int:
        return int(self.visual.attnpool.c_proj.weight.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.visual.attnpool.num_heads)

    def pool_weights(self) -> dict[str, np.ndarray]:
        """CLIP's attention-pool weights as float32 arrays, named as in `pool/*`."""
        pool = self.visual.attnpool
        arrays = {"positional_embedding": pool.positional_embedding}
        for short, layer in (("q", pool.q_proj), ("k", pool.k_proj), ("v", pool.v_proj), ("c", pool.c_proj)):
            arrays[f"{short}_weight"] = layer.weight
            arrays[f"{short}_bias"] = layer.bias
        return {key: value.detach().float().cpu().numpy() for key, value in arrays.items()}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X' tokens (N, HW, C) and CLIP's global embedding (N, D) from one forward pass."""
        visual = self.visual
        x = images.to(self.device, non_blocking=True).type(self.dtype)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        x = visual.relu1(visual.bn1(visual.conv1(x)))
        x = visual.relu2(visual.bn2(visual.conv2(x)))
        x = visual.relu3(visual.bn3(visual.conv3(x)))
        x = visual.avgpool(x)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))  # (N, C, H, W)
        global_embedding = visual.attnpool(x)                               # (N, D)
        spatial = x.flatten(2).permute(0, 2, 1)                              # (N, HW, C)
        return spatial, global_embedding
