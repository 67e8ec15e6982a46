"""The frozen CLIP ResNet (RN50, RN101, RN50x4, ...): X' is the feature map entering the
attention pool, and the pool gives CLIP's global embedding in the same pass.

On the CPU the pass runs through a copy of the convolutional trunk whose BatchNorms are folded
into the convolutions (exact up to float rounding: a frozen BatchNorm is an affine map per
channel), in channels_last layout, the layout oneDNN's convolutions are fastest in, each
convolution fused with the ReLU after it (and a bottleneck's last one with the residual add
too) through oneDNN's fused convolutions, the ops torch's own compiler emits on the CPU (where
a torch build lacks them, the modules run one by one); the loaded CLIP itself stays as its
weights file made it.
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


def fused_convolutions() -> tuple | None:
    """oneDNN's (convolution + ReLU, convolution + add + ReLU) ops, or None where this torch has none."""
    try:
        return torch.ops.mkldnn._convolution_pointwise.default, torch.ops.mkldnn._convolution_pointwise.binary
    except (AttributeError, RuntimeError):
        return None


def fused_pass(trunk: torch.nn.Module, x: torch.Tensor, ops: tuple) -> torch.Tensor:
    """A folded trunk's pass with every convolution fused with its ReLU (and residual add):
    (N, 3, S, S) channels_last -> X' (N, C, H, W), in the trunk's weights' dtype."""
    unary, binary = ops

    def conv_relu(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return unary(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups, "relu", [], "")

    x = x.to(trunk.conv1.weight.dtype)
    x = trunk.avgpool(conv_relu(trunk.conv3, conv_relu(trunk.conv2, conv_relu(trunk.conv1, x))))
    for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        for block in layer:
            identity = x if block.downsample is None else block.downsample(x)
            out = block.avgpool(conv_relu(block.conv2, conv_relu(block.conv1, x)))
            conv = block.conv3
            x = binary(out, identity, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                       conv.groups, "add", None, "relu", [], "")                      # relu(conv3(out) + identity)
    return x


class ResnetBackbone(Backbone):
    """A loaded CLIP ResNet. `encode` returns X' (N, HW, C): the tokens a head reads."""

    kind: ClassVar[str] = "resnet"
    trunk: torch.nn.Module | None = None   # the folded channels_last trunk (CPU), else None: the model's own
    fused: tuple | None = None             # oneDNN's fused convolutions the folded trunk runs through

    def fold_for_cpu(self) -> None:
        """Run the trunk folded, channels_last and fused from now on (a float32 CPU backbone); on
        the bf16 path its weights are cast once here rather than by autocast in every pass."""
        self.trunk, self.fused = folded_trunk(self.visual), fused_convolutions()
        if self.precision == "bf16":
            attnpool, self.trunk.attnpool = self.trunk.attnpool, None   # the shared pool stays float32
            self.trunk.to(torch.bfloat16)
            self.trunk.attnpool = attnpool

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
        if self.trunk is not None and self.fused is not None and not torch.jit.is_tracing():
            x = fused_pass(trunk, x, self.fused)                              # (N, C, H, W)
        else:                                                                 # (ONNX export traces this one)
            x = trunk.relu1(trunk.bn1(trunk.conv1(x)))
            x = trunk.relu2(trunk.bn2(trunk.conv2(x)))
            x = trunk.relu3(trunk.bn3(trunk.conv3(x)))
            x = trunk.avgpool(x)
            x = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))  # (N, C, H, W)
        with self.pool_precision():
            global_embedding = self.visual.attnpool(x.to(self.dtype))       # (N, D)
        spatial = x.flatten(2).permute(0, 2, 1)                              # (N, HW, C)
        return spatial, global_embedding
