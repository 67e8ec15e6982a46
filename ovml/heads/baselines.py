"""Parameter-free scorers from cached features (METHOD.md): CLIP-ML and dense CLIP."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import EPS

CHUNK = 256  # images per step, bounding the (chunk, HW, L) intermediates


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
