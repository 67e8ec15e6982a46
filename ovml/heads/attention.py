"""The OVML Image-Text attention head: each label's text embedding becomes a query over X'.

Its keys, values, output projection and positional embedding start as copies of CLIP's own
attention pool, so with CLIP's mean-token query it *is* CLIP's pooling; training moves the
query map F_q (and the rest) so that each label attends to its own evidence.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .registry import register

FORMULATIONS = ("fused", "literal")


@register
class AttentionHead(nn.Module):
    """o_j = F_o(concat_h sum_i softmax_i(q_j.k_i / sqrt(C/h)) v_i), q_j = F_q(t_j) (METHOD.md)."""

    name = "ovml"

    def __init__(self, channels: int, embed_dim: int, positions: int, num_heads: int,
                 include_mean_token: bool = False, formulation: str = "fused"):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}")
        self.positional_embedding = nn.Parameter(torch.zeros(positions + 1, channels))  # row 0: mean token
        self.q_proj = nn.Linear(embed_dim, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.c_proj = nn.Linear(channels, embed_dim)
        self.num_heads = num_heads
        self.include_mean_token = include_mean_token  # attend over [mean; tokens] as CLIP's pool does
        self.formulation = formulation

    @classmethod
    def from_pool(cls, pool: dict[str, torch.Tensor], num_heads: int, q_init: str = "random",
                  include_mean_token: bool = False, formulation: str = "fused") -> "AttentionHead":
        """Copy K, V, O and p from CLIP's pool; F_q random or `pinv` (see `pinv_query`)."""
        channels, embed_dim = pool["c_weight"].shape[1], pool["c_weight"].shape[0]
        head = cls(channels, embed_dim, pool["positional_embedding"].shape[0] - 1, num_heads,
                   include_mean_token, formulation)
        with torch.no_grad():
            head.positional_embedding.copy_(pool["positional_embedding"])
            for short in ("k", "v", "c"):
                getattr(head, f"{short}_proj").weight.copy_(pool[f"{short}_weight"])
                getattr(head, f"{short}_proj").bias.copy_(pool[f"{short}_bias"])
            if q_init == "pinv":
                weight, bias = pinv_query(pool)
                head.q_proj.weight.copy_(weight)
                head.q_proj.bias.copy_(bias)
            elif q_init != "random":
                raise ValueError(f"q_init must be random or pinv, not {q_init!r}")
        return head

    # --- pieces -------------------------------------------------------------------------
    def tokens(self, spatial: torch.Tensor) -> torch.Tensor:
        """z = x + p: (N, HW, C), or (N, HW+1, C) with CLIP's mean token first."""
        tokens = spatial + self.positional_embedding[1:]
        if not self.include_mean_token:
            return tokens
        mean = spatial.mean(1, keepdim=True) + self.positional_embedding[:1]
        return torch.cat([mean, tokens], 1)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., h, C/h)."""
        return x.reshape(*x.shape[:-1], self.num_heads, x.shape[-1] // self.num_heads)

    def attention(self, tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Softmax weights (N, h, L, T) of queries (L, C) or (N, L, C) over tokens (N, T, C)."""
        keys = self.split_heads(self.k_proj(tokens))                          # (N, T, h, w)
        queries = self.split_heads(queries)                                   # ([N,] L, h, w)
        pattern = "lhw,nthw->nhlt" if queries.dim() == 3 else "nlhw,nthw->nhlt"
        logits = torch.einsum(pattern, queries, keys) / math.sqrt(keys.shape[-1])
        return logits.softmax(-1)

    def attend(self, spatial: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Class-specific features (N, L, D) for raw queries (L, C) or per-image (N, L, C)."""
        tokens = self.tokens(spatial)                                         # (N, T, C)
        weights = self.attention(tokens, queries)                             # (N, h, L, T)
        values = self.split_heads(self.v_proj(tokens))                        # (N, T, h, w)
        if self.formulation == "literal":
            mixed = torch.einsum("nhlt,nthw->nlhw", weights, values)          # (N, L, h, w)
            return self.c_proj(mixed.flatten(2))                              # (N, L, D)
        # F_o applied to the values once per head: (N, T, h, w) x (D, h, w) -> (N, h, T, D),
        # then one contraction over (head, token) per label instead of F_o per (image, label).
        out_weight = self.c_proj.weight.reshape(-1, self.num_heads, values.shape[-1])  # (D, h, w)
        projected = torch.einsum("nthw,dhw->nhtd", values, out_weight)        # (N, h, T, D)
        n, h, t, d = projected.shape
        flat_weights = weights.permute(0, 2, 1, 3).reshape(n, -1, h * t)      # (N, L, h*T)
        return torch.bmm(flat_weights, projected.reshape(n, h * t, d)) + self.c_proj.bias  # (N, L, D)

    def forward(self, spatial: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """o_ij for every image i and label j: spatial (N, HW, C), text (L, D) -> (N, L, D)."""
        return self.attend(spatial, self.q_proj(text))

    def attention_maps(self, spatial: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Where each label looks: attention over the HW positions, mean over heads, (N, L, HW)."""
        weights = self.attention(self.tokens(spatial), self.q_proj(text)).mean(1)  # (N, L, T)
        return weights[..., 1:] if self.include_mean_token else weights


def pinv_query(pool: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """F_q = q_proj after the pseudo-inverse of c_proj: a training-free query for text t.

    x(t) = pinv(W_c) (t - b_c) is the token whose pooled projection is closest to t, and
    q(t) = W_q x(t) + b_q = W_q pinv(W_c) t + (b_q - W_q pinv(W_c) b_c).
    """
    inverse = torch.linalg.pinv(pool["c_weight"].double())                    # (C, D)
    weight = pool["q_weight"].double() @ inverse                              # (C, D)
    bias = pool["q_bias"].double() - weight @ pool["c_bias"].double()
    return weight.float(), bias.float()
