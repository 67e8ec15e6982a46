"""The linear baseline head (Fast0Tag-style): one learned map of CLIP's global feature,
shared by every label, so the trainer is not tied to the attention head."""
from __future__ import annotations

import torch
from torch import nn

from .registry import register


@register
class LinearHead(nn.Module):
    """o_ij = W g_i + b for every label j; W starts as the identity (the head starts as CLIP-ML)."""

    name = "linear"

    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(embed_dim, embed_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(embed_dim))
            self.proj.bias.zero_()

    @classmethod
    def from_pool(cls, pool: dict[str, torch.Tensor], num_heads: int) -> "LinearHead":
        return cls(pool["c_weight"].shape[0])

    def forward(self, spatial: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        mapped = self.proj(global_embedding)                                  # (N, D)
        return mapped[:, None].expand(-1, text.shape[0], -1)                  # (N, L, D), a view
