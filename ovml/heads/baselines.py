"""Dense CLIP: the parameter-free scorer of cached local features (docs/method.md)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cache.pooling import layer_norm, pool_kind, vit_project
from .base import EPS

CHUNK = 256  # images per step, bounding the (chunk, HW, L) intermediates


def resnet_local_features(spatial: Tensor, pool: dict[str, Tensor]) -> Tensor:
    """u_i = c_proj(v_proj(x_i + p_i)) per location: (n, HW, C) -> (n, HW, D)."""
    tokens = spatial + pool["positional_embedding"][1:]                                 # (n, HW, C)
    return F.linear(F.linear(tokens, pool["v_weight"], pool["v_bias"]), pool["c_weight"], pool["c_bias"])


def vit_local_features(tokens: Tensor, pool: dict[str, Tensor]) -> Tensor:
    """MaskCLIP's reading of a ViT's last block, u_i = ln_post(out_proj(v_i)) @ proj with
    v_i = v(ln_1(x_i)), per patch: [cls; X'] (n, 1+HW, W) -> (n, HW, D)."""
    _, _, v_weight = pool["in_proj_weight"].chunk(3)
    _, _, v_bias = pool["in_proj_bias"].chunk(3)
    values = F.linear(layer_norm(tokens[:, 1:], pool, "ln_1"), v_weight, v_bias)        # (n, HW, W)
    return vit_project(F.linear(values, pool["out_proj_weight"], pool["out_proj_bias"]), pool)


def dense_clip_scores(spatial: Tensor, pool: dict[str, Tensor], text: Tensor, top_k: int = 3) -> Tensor:
    """Dense CLIP: local features u_i per location (`resnet_local_features`, or for a ViT pool
    `vit_local_features` over the patches of [cls; X']); s_j = mean of the top_k largest
    cos(u_i, t_j) over the HW locations. (N, HW, C) or (N, 1+HW, W), (L, D) -> (N, L), float32."""
    vit = pool_kind(pool) == "vit"
    local_features = vit_local_features if vit else resnet_local_features
    locations = spatial.shape[1] - 1 if vit else spatial.shape[1]     # a ViT's token 0 is its class token
    if not 1 <= top_k <= locations:
        raise ValueError(f"top_k must be between 1 and HW = {locations}, not {top_k}")
    text = F.normalize(text.float(), dim=-1, eps=EPS)
    scores = []
    for chunk in spatial.split(CHUNK):
        local = local_features(chunk.float(), pool)                                     # (n, HW, D)
        cosines = F.normalize(local, dim=-1, eps=EPS) @ text.T                          # (n, HW, L)
        scores.append(cosines.topk(top_k, dim=1).values.mean(dim=1))                    # (n, L)
    return torch.cat(scores) if scores else spatial.new_zeros((0, len(text)), dtype=torch.float32)
