"""CLIP's image-embedding tail as the cache stores it (`pool/*`), applied to cached tokens.

The cache's invariant (docs/cache.md) is that these reproduce `splits/<s>/global` from
`splits/<s>/spatial` (and `cls` for a ViT): `ovml check` tests it, the planted world writes
`global` with it. Computed in float32 by default; `dtype=torch.float64` for checking.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 256  # images per step, bounding the (chunk, T, C) intermediates
LAYER_NORM_EPS = 1e-5


def pool_kind(pool: dict) -> str:
    """Which CLIP tail a `pool/*` dict holds: "vit" (the last residual block, ln_post, proj) or
    "resnet" (the attention pool)."""
    return "vit" if "proj" in pool else "resnet"


def pool_output_dim(pool: dict) -> int:
    """D, the joint embedding dimension a pool projects to."""
    return int(pool["proj"].shape[1] if pool_kind(pool) == "vit" else pool["c_weight"].shape[0])


def _chunked(function, tensors: tuple[Tensor, ...], out_dim: int, dtype: torch.dtype) -> Tensor:
    """`function` over CHUNK images at a time of every tensor in `tensors`, concatenated."""
    outputs = [function(*(t.to(dtype) for t in parts)) for parts in zip(*(t.split(CHUNK) for t in tensors))]
    return torch.cat(outputs) if outputs else tensors[0].new_zeros((0, out_dim), dtype=dtype)


def _heads_attention(query: Tensor, keys: Tensor, values: Tensor, num_heads: int) -> Tensor:
    """Multi-head softmax attention of one query token per image: (n, 1, C), (n, T, C) x2 -> (n, C)."""
    n, t, c = keys.shape
    width = c // num_heads
    query = query.view(n, 1, num_heads, width).transpose(1, 2)      # (n, h, 1, C/h)
    keys = keys.view(n, t, num_heads, width).permute(0, 2, 3, 1)    # (n, h, C/h, T)
    values = values.view(n, t, num_heads, width).transpose(1, 2)    # (n, h, T, C/h)
    weights = (query @ keys / math.sqrt(width)).softmax(dim=-1)     # (n, h, 1, T)
    return (weights @ values).reshape(n, c)                         # (n, h, 1, C/h) -> (n, C)


def resnet_pool_global(spatial: Tensor, pool: dict[str, Tensor], num_heads: int,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """CLIP's AttentionPool2d on cached X' (N, HW, C) -> (N, D).

    The mean token plus positional row 0 queries [mean token; tokens] + positional embedding,
    per head of C/h channels, then c_proj.
    """
    weights = {key: value.to(dtype) for key, value in pool.items()}

    def pooled(x: Tensor) -> Tensor:
        tokens = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + weights["positional_embedding"]  # (n, T, C)
        query = F.linear(tokens[:, :1], weights["q_weight"], weights["q_bias"])                      # (n, 1, C)
        keys = F.linear(tokens, weights["k_weight"], weights["k_bias"])                               # (n, T, C)
        values = F.linear(tokens, weights["v_weight"], weights["v_bias"])
        return F.linear(_heads_attention(query, keys, values, num_heads), weights["c_weight"], weights["c_bias"])

    return _chunked(pooled, (spatial,), pool["c_weight"].shape[0], dtype)


def layer_norm(x: Tensor, pool: dict[str, Tensor], name: str) -> Tensor:
    """The LayerNorm `pool/<name>_weight`, `pool/<name>_bias` (eps 1e-5, as CLIP's)."""
    weight, bias = pool[f"{name}_weight"], pool[f"{name}_bias"]
    return F.layer_norm(x, weight.shape, weight.to(x.dtype), bias.to(x.dtype), LAYER_NORM_EPS)


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's QuickGELU: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


def vit_mlp(y: Tensor, pool: dict[str, Tensor]) -> Tensor:
    """The last block's MLP branch on its residual stream: mlp(ln_2(y)), (..., W) -> (..., W)."""
    hidden = quick_gelu(F.linear(layer_norm(y, pool, "ln_2"), pool["mlp_fc_weight"], pool["mlp_fc_bias"]))
    return F.linear(hidden, pool["mlp_proj_weight"], pool["mlp_proj_bias"])


def vit_project(z: Tensor, pool: dict[str, Tensor]) -> Tensor:
    """ln_post then the visual projection: (..., W) -> (..., D)."""
    return layer_norm(z, pool, "ln_post") @ pool["proj"]


def vit_pool_global(cls: Tensor, spatial: Tensor, pool: dict[str, Tensor], num_heads: int,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """CLIP ViT's last residual block for the class token, then ln_post and proj: (N, W), (N, HW, W) -> (N, D).

    With x = [cls; spatial]: y = cls + out_proj(MHA(ln_1(cls), ln_1(x), ln_1(x))),
    z = y + mlp(ln_2(y)), global = ln_post(z) @ proj (docs/cache.md, the ViT invariant).
    """
    weights = {key: value.to(dtype) for key, value in pool.items()}

    def pooled(cls_token: Tensor, x: Tensor) -> Tensor:
        tokens = layer_norm(torch.cat([cls_token[:, None], x], dim=1), weights, "ln_1")   # (n, 1+HW, W)
        q_weight, k_weight, v_weight = weights["in_proj_weight"].chunk(3)
        q_bias, k_bias, v_bias = weights["in_proj_bias"].chunk(3)
        query = F.linear(tokens[:, :1], q_weight, q_bias)                                 # (n, 1, W)
        keys, values = F.linear(tokens, k_weight, k_bias), F.linear(tokens, v_weight, v_bias)
        attended = _heads_attention(query, keys, values, num_heads)                       # (n, W)
        y = cls_token + F.linear(attended, weights["out_proj_weight"], weights["out_proj_bias"])
        return vit_project(y + vit_mlp(y, weights), weights)                              # (n, D)

    return _chunked(pooled, (cls, spatial), pool["proj"].shape[1], dtype)
