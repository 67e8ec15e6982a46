"""Training-free scorers that read only the cache: CLIP's own pool, and dense CLIP."""
from __future__ import annotations

import math

import torch

from .base import normalise


def clip_pool_global(spatial: torch.Tensor, pool: dict[str, torch.Tensor], num_heads: int) -> torch.Tensor:
    """CLIP's AttentionPool2d on X' (N, HW, C) -> (N, D): the mean token queries [mean; tokens] + p."""
    x = torch.cat([spatial.mean(1, keepdim=True), spatial], 1) + pool["positional_embedding"]  # (N, T, C)
    query = x[:, :1] @ pool["q_weight"].T + pool["q_bias"]                    # (N, 1, C)
    keys = x @ pool["k_weight"].T + pool["k_bias"]                            # (N, T, C)
    values = x @ pool["v_weight"].T + pool["v_bias"]
    n, t, c = keys.shape
    width = c // num_heads
    query = query.reshape(n, 1, num_heads, width).transpose(1, 2)            # (N, h, 1, w)
    keys = keys.reshape(n, t, num_heads, width).transpose(1, 2)              # (N, h, T, w)
    values = values.reshape(n, t, num_heads, width).transpose(1, 2)
    weights = (query @ keys.transpose(-1, -2) / math.sqrt(width)).softmax(-1)  # (N, h, 1, T)
    pooled = (weights @ values).transpose(1, 2).reshape(n, c)                 # (N, C)
    return pooled @ pool["c_weight"].T + pool["c_bias"]


def dense_clip_scores(spatial: torch.Tensor, pool: dict[str, torch.Tensor], text: torch.Tensor,
                      top_k: int = 3) -> torch.Tensor:
    """Dense CLIP: u_i = c_proj(v_proj(x_i + p_i)); s_j = mean of the top-k cos(u_i, t_j) over i. (N, L)."""
    tokens = spatial + pool["positional_embedding"][1:]                       # (N, HW, C)
    local = (tokens @ pool["v_weight"].T + pool["v_bias"]) @ pool["c_weight"].T + pool["c_bias"]  # (N, HW, D)
    similarity = normalise(local) @ normalise(text).T                         # (N, HW, L)
    k = min(top_k, similarity.shape[1])
    return similarity.topk(k, dim=1).values.mean(1)                           # (N, L)
