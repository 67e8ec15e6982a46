"""Parameter-free scorers and CLIP's own attention pool, all from cached features (METHOD.md)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import EPS

CHUNK = 256  # images per step, bounding the (chunk, HW, L) and (chunk, HW+1, C) intermediates


def clip_ml_scores(global_embedding: Tensor, text: Tensor) -> Tensor:
    """CLIP-ML, the naive baseline: s_ij = cos(g_i, t_j), (N, D), (L, D) -> (N, L)."""
    return F.normalize(global_embedding, dim=-1, eps=EPS) @ F.normalize(text, dim=-1, eps=EPS).T


def dense_clip_scores(spatial: Tensor, pool: dict[str, Tensor], text: Tensor, top_k: int = 3) -> Tensor:
    """Dense CLIP: u_i = c_proj(v_proj(x_i + p_i)) per location; s_j = mean of the top_k largest
    cos(u_i, t_j) over the HW locations. (N, HW, C), (L, D) -> (N, L), float32."""
    if not 1 <= top_k <= spatial.shape[1]:
        raise ValueError(f"top_k must be between 1 and HW = {spatial.shape[1]}, not {top_k}")
    text = F.normalize(text.float(), dim=-1, eps=EPS)
    scores = []
    for chunk in spatial.split(CHUNK):
        tokens = chunk.float() + pool["positional_embedding"][1:]                       # (n, HW, C)
        local = F.linear(F.linear(tokens, pool["v_weight"], pool["v_bias"]), pool["c_weight"], pool["c_bias"])
        cosines = F.normalize(local, dim=-1, eps=EPS) @ text.T                          # (n, HW, L)
        scores.append(cosines.topk(top_k, dim=1).values.mean(dim=1))                    # (n, L)
    return torch.cat(scores) if scores else spatial.new_zeros((0, len(text)), dtype=torch.float32)


def clip_pool_global(spatial: Tensor, pool: dict[str, Tensor], num_heads: int) -> Tensor:
    """CLIP's AttentionPool2d on cached tokens, in float32: (N, HW, C) -> (N, D).

    The mean token plus positional row 0 queries [mean token; tokens] + positional embedding,
    per head of C/h channels, then c_proj: what `splits/<s>/global` holds (CACHE.md invariant).
    """
    outputs = []
    for chunk in spatial.split(CHUNK):
        x = chunk.float()
        n, _, c = x.shape
        width = c // num_heads
        tokens = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + pool["positional_embedding"]  # (n, T, C)
        t = tokens.shape[1]
        query = F.linear(tokens[:, :1], pool["q_weight"], pool["q_bias"]) / math.sqrt(width)        # (n, 1, C)
        keys = F.linear(tokens, pool["k_weight"], pool["k_bias"])                                   # (n, T, C)
        values = F.linear(tokens, pool["v_weight"], pool["v_bias"])
        query = query.view(n, 1, num_heads, width).transpose(1, 2)       # (n, h, 1, C/h)
        keys = keys.view(n, t, num_heads, width).permute(0, 2, 3, 1)     # (n, h, C/h, T)
        values = values.view(n, t, num_heads, width).transpose(1, 2)     # (n, h, T, C/h)
        pooled = (query @ keys).softmax(dim=-1) @ values                 # (n, h, 1, C/h)
        pooled = pooled.reshape(n, c)                                    # (n, C)
        outputs.append(F.linear(pooled, pool["c_weight"], pool["c_bias"]))
    return torch.cat(outputs) if outputs else spatial.new_zeros((0, pool["c_weight"].shape[0]), dtype=torch.float32)
