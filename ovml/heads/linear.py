"""The linear baseline head (Fast0Tag-style): one learned map of CLIP's global embedding."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..cache.pooling import pool_output_dim
from .base import Head
from .registry import register


@register
class LinearHead(Head):
    """o_ij = W g_i + b for every label j: a D -> D map starting as the identity, so the
    untrained head scores exactly like CLIP-ML. It ignores the spatial tokens."""

    name = "linear"
    backbones = ("resnet", "vit")

    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(embed_dim, embed_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(embed_dim))
            self.proj.bias.zero_()

    @property
    def options(self) -> dict:
        """The constructor arguments: `LinearHead(**head.options)` has this head's shapes."""
        return {"embed_dim": self.proj.in_features}

    @classmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int) -> LinearHead:
        """The pool (either kind) only fixes D (and the device); nothing is copied from it."""
        embed_dim = pool_output_dim(pool)
        if text_dim != embed_dim:
            raise ValueError(f"text dimension {text_dim} differs from the pool's output dimension {embed_dim}")
        return cls(embed_dim).to(next(iter(pool.values())).device)

    def forward(self, tokens: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """(N, L, D): the mapped global vector of each image, expanded over the L labels (a view)."""
        mapped = self.proj(global_embedding)                                   # (N, D)
        return mapped[:, None, :].expand(-1, text.shape[0], -1)                # (N, L, D)
