"""The frozen CLIP ResNet (RN50, RN101, RN50x4, ...): X' is the feature map entering the
attention pool, and the pool gives CLIP's global embedding in the same pass.

On the CPU the pass runs through a copy of the convolutional trunk whose BatchNorms are folded
into the convolutions (exact up to float rounding: a frozen BatchNorm is an affine map per
channel), in channels_last layout, the layout oneDNN's convolutions are fastest in; the loaded
CLIP itself stays as its weights file made it.
"""
from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .base import Backbone


def conv_bn_pairs(trunk: torch.nn.Module) -> list[tuple[torch.nn.Module, str, str]]:
    """(parent, convolution's name, its BatchNorm's name) for every convolution of a CLIP
    ModifiedResNet that a BatchNorm follows: the stem's three, each bottleneck's three and its
    downsample's."""
    pairs = [(trunk, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
    for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        for block in layer:
            pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    return pairs


def folded_trunk(visual: torch.nn.Module) -> torch.nn.Module:
    """A copy of `visual` (sharing its attention pool, which is not copied) with every BatchNorm
    folded into the convolution before it and replaced by an identity, in channels_last."""
    trunk = copy.deepcopy(visual, memo={id(visual.attnpool): visual.attnpool})
    for parent, conv, norm in conv_bn_pairs(trunk):
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, norm)))
        setattr(parent, norm, torch.nn.Identity())
    return trunk.to(memory_format=torch.channels_last)


class ResnetBackbone(Backbone):
    """A loaded CLIP ResNet. `encode` returns X' (N, HW, C): the tokens a head reads."""

    kind: ClassVar[str] = "resnet"
    trunk: torch.nn.Module | None = None   # the folded channels_last trunk (CPU), else None: the model's own

    def fold_for_cpu(self) -> None:
        """Run the trunk folded and channels_last from now on (a float32 CPU backbone)."""
        self.trunk = folded_trunk(self.visual)

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

    def tokens_and_global(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X' tokens (N, HW, C) and CLIP's global embedding (N, D) from one forward pass."""
        trunk = self.trunk if self.trunk is not None else self.visual
        if self.device.type == "cuda" or self.trunk is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        x = trunk.relu1(trunk.bn1(trunk.conv1(x)))
        x = trunk.relu2(trunk.bn2(trunk.conv2(x)))
        x = trunk.relu3(trunk.bn3(trunk.conv3(x)))
        x = trunk.avgpool(x)
        x = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))      # (N, C, H, W)
        with self.pool_precision():
            global_embedding = self.visual.attnpool(x.to(self.dtype))       # (N, D)
        spatial = x.flatten(2).permute(0, 2, 1)                              # (N, HW, C)
        return spatial, global_embedding
