"""What every head shares: the scoring rule and the test-time interpolation (METHOD.md).

A head maps (spatial (N, HW, C), global (N, D), text (L, D)) to class-specific features o_ij
(N, L, D); a score is always the cosine of a feature with its label's text embedding. Scores are
plain cosines: the logit scale of the losses belongs to the trainer, not to the head.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

EPS = 1e-12  # as F.normalize: norms are clamped to at least this


def cosine_scores(features: Tensor, text: Tensor) -> Tensor:
    """s_ij = cos(features[i, j], text[j]): (N, L, D), (L, D) -> (N, L).

    Features that are one vector per image broadcast along L (stride 0, as the linear head
    returns them) are scored with one matrix product instead of an (N, L, D) product.
    """
    text = F.normalize(text, dim=-1, eps=EPS)
    if features.shape[1] > 0 and features.stride(1) == 0:
        return F.normalize(features[:, 0], dim=-1, eps=EPS) @ text.T  # (N, L)
    return (features * text).sum(-1) / features.norm(dim=-1).clamp_min(EPS)


def interpolate(features: Tensor, global_embedding: Tensor, alpha: float) -> Tensor:
    """f_ij = (1 - alpha) o_ij/|o_ij| + alpha g_i/|g_i|: (N, L, D), (N, D) -> (N, L, D).

    alpha = 0 is the head alone, alpha = 1 is CLIP-ML (scores equal to float rounding).
    """
    head = F.normalize(features, dim=-1, eps=EPS)
    image = F.normalize(global_embedding, dim=-1, eps=EPS)[:, None, :]  # (N, 1, D)
    return (1 - alpha) * head + alpha * image
