"""What every head shares: cosine scoring and interpolation with CLIP's global feature."""
from __future__ import annotations

import torch


def normalise(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension (zero vectors stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cosine_scores(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """s_ij = cos(o_ij, t_j): features (N, L, D), text (L, D) -> (N, L)."""
    return (normalise(features) * normalise(text)[None]).sum(-1)


def interpolate(features: torch.Tensor, global_embedding: torch.Tensor, alpha: float) -> torch.Tensor:
    """f_ij = (1 - alpha) o_ij/|o_ij| + alpha g_i/|g_i| (METHOD.md): alpha 0 is the head, 1 is CLIP-ML."""
    return (1 - alpha) * normalise(features) + alpha * normalise(global_embedding)[:, None]
