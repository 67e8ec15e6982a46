"""The OVML Image-Text attention head (METHOD.md "OVML head").

Each label's text embedding t_j becomes a query that attends over the image's tokens with CLIP's
own attention-pool weights: z_i = x_i + p_i, q_j = F_q(t_j), k_i = F_k(z_i), v_i = F_v(z_i),
a_ji = softmax_i(q_j . k_i / sqrt(C/h)) per head, o_j = F_o(concat_heads sum_i a_ji v_i).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .registry import register

FORMULATIONS = ("auto", "fused", "literal")


def pinv_query(pool: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """F_q's training-free init, q_proj composed with the pseudo-inverse of c_proj: (C, D), (C,).

    CLIP's pool ends with g = W_c y + b_c, y the C-wide attention output. The least-squares,
    minimum-norm y whose projection is the text t is y = W_c^+ (t - b_c); its query is
    W_q y + b_q = (W_q W_c^+) t + (b_q - W_q W_c^+ b_c). So when W_c is invertible, the query
    of a pooled output W_c y + b_c is exactly CLIP's q_proj(y). Texts are unit-norm while CLIP's
    g is not, so the attention starts as sharp as CLIP's for an image whose |g| is 1.
    Computed in float64, returned in the pool's dtype.
    """
    q_weight, q_bias = pool["q_weight"].double(), pool["q_bias"].double()
    composed = q_weight @ torch.linalg.pinv(pool["c_weight"].double())  # (C, D)
    bias = q_bias - composed @ pool["c_bias"].double()                   # (C,)
    dtype = pool["q_weight"].dtype
    return composed.to(dtype), bias.to(dtype)


def literal_output(attn: Tensor, values: Tensor, out_proj: nn.Linear) -> Tensor:
    """o = F_o(concat_heads sum_i a_i v_i), F_o applied to every (image, label) pair.

    attn (N, L, h, T), values (N, T, C) -> (N, L, D). Costs N L C D multiply-adds in F_o.
    """
    n, t, c = values.shape
    heads = attn.shape[2]
    per_head = values.view(n, t, heads, c // heads)              # (N, T, h, C/h)
    mixed = torch.einsum("nlht,nthc->nlhc", attn, per_head)      # (N, L, h, C/h)
    return out_proj(mixed.flatten(2))                            # (N, L, C) -> (N, L, D)


def fused_output(attn: Tensor, values: Tensor, out_proj: nn.Linear) -> Tensor:
    """The same o with F_o moved inside the sums (exact, by linearity).

    Each head's values are projected by its slice of F_o once per image, v'_hi = W_o[:, h] v_hi
    (N T C D multiply-adds), then o_j = sum_{h,i} a_hji v'_hi + b_o is one contraction over
    (head, token) pairs (N L h T D). At RN50 shapes h T = 32 x 49 = 1568 < C = 2048, and the
    (N, L, C) intermediate of the literal form is never made.
    """
    n, t, c = values.shape
    labels, heads = attn.shape[1], attn.shape[2]
    per_head = values.view(n, t, heads, c // heads)                               # (N, T, h, C/h)
    weight = out_proj.weight.view(-1, heads, c // heads)                          # (D, h, C/h)
    projected = torch.einsum("nthc,dhc->nhtd", per_head, weight)                  # (N, h, T, D)
    projected = projected.reshape(n, heads * t, -1)                               # (N, h*T, D)
    pairs = attn.reshape(n, labels, heads * t)                                    # (N, L, h*T), a view
    return torch.baddbmm(out_proj.bias, pairs, projected)                         # (N, L, D)


@register
class OVMLHead(nn.Module):
    """Every label's text embedding queries the image tokens through (a copy of) CLIP's pool.

    Constructor arguments are shapes and switches only (JSON-able, `self.options`), so a saved
    state_dict loads into `OVMLHead(**options)` without the pool. `include_mean_token` adds CLIP's
    mean token (mean_i x_i + p_0) as a key/value, as CLIP's own pool does; METHOD.md's head
    attends over the HW tokens only (default False). `formulation` picks how the head is
    computed: "literal" as METHOD.md writes it (z = x + p projected per image, F_o applied per
    image-label pair), "fused" with two exact rewrites (F_o moved inside the attention sums,
    `fused_output`; the positional term projected once, `keys_and_values`), equal to float
    rounding; "auto" the one with fewer multiply-adds for the call's shapes (fused at RN50
    shapes). The head has no logit scale: it returns features, the trainer multiplies cosine
    scores by its scale.
    """

    name = "ovml"

    def __init__(self, channels: int, embed_dim: int, num_tokens: int, num_heads: int,
                 include_mean_token: bool = False, formulation: str = "auto"):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, not {formulation!r}")
        self.num_heads = num_heads
        self.include_mean_token = include_mean_token
        self.formulation = formulation
        self.positional_embedding = nn.Parameter(torch.randn(num_tokens + 1, channels) / channels ** 0.5)
        self.q_proj = nn.Linear(embed_dim, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.c_proj = nn.Linear(channels, embed_dim)

    @property
    def options(self) -> dict:
        """The constructor arguments: `OVMLHead(**head.options)` has this head's shapes."""
        return {"channels": self.k_proj.in_features, "embed_dim": self.c_proj.out_features,
                "num_tokens": self.positional_embedding.shape[0] - 1, "num_heads": self.num_heads,
                "include_mean_token": self.include_mean_token, "formulation": self.formulation}

    @classmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int, q_init: str = "random",
                  include_mean_token: bool = False, formulation: str = "auto") -> OVMLHead:
        """F_k, F_v, F_o and p copied from CLIP's pool; F_q "random" (nn.Linear's init, from
        torch's global RNG) or "pinv" (`pinv_query`)."""
        embed_dim, channels = pool["c_weight"].shape
        if text_dim != embed_dim:
            raise ValueError(f"text dimension {text_dim} differs from the pool's output dimension {embed_dim}")
        if q_init not in ("random", "pinv"):
            raise ValueError(f"q_init must be 'random' or 'pinv', not {q_init!r}")
        head = cls(channels, embed_dim, pool["positional_embedding"].shape[0] - 1, num_heads,
                   include_mean_token, formulation).to(pool["c_weight"].device)
        with torch.no_grad():
            head.positional_embedding.copy_(pool["positional_embedding"])
            for key in ("k", "v", "c"):
                getattr(head, f"{key}_proj").weight.copy_(pool[f"{key}_weight"])
                getattr(head, f"{key}_proj").bias.copy_(pool[f"{key}_bias"])
            if q_init == "pinv":
                weight, bias = pinv_query(pool)
                head.q_proj.weight.copy_(weight)
                head.q_proj.bias.copy_(bias)
        return head

    def tokens(self, spatial: Tensor) -> Tensor:
        """z_i = x_i + p_i (N, HW, C), preceded by CLIP's mean token when include_mean_token."""
        tokens = spatial + self.positional_embedding[1:]
        if self.include_mean_token:
            mean = spatial.mean(dim=1, keepdim=True) + self.positional_embedding[:1]  # (N, 1, C)
            tokens = torch.cat([mean, tokens], dim=1)                                # (N, HW+1, C)
        return tokens

    def attention(self, tokens: Tensor, query: Tensor) -> Tensor:
        """Per-head softmax over tokens of q . k / sqrt(C/h): (N, L, h, T).

        query: already in C-space, (L, C) shared by all images or (N, L, C) per image.
        """
        return self.attention_from_keys(self.k_proj(tokens), query)

    def attention_from_keys(self, keys: Tensor, query: Tensor) -> Tensor:
        """`attention` given the projected keys k_i = F_k(z_i) (N, T, C)."""
        n, t, c = keys.shape
        width = c // self.num_heads
        keys = keys.view(n, t, self.num_heads, width)                           # (N, T, h, C/h)
        query = (query / math.sqrt(width)).unflatten(-1, (self.num_heads, width))  # ([N,] L, h, C/h)
        pattern = "nlhc,nthc->nlht" if query.dim() == 4 else "lhc,nthc->nlht"
        return torch.einsum(pattern, query, keys).softmax(dim=-1)              # (N, L, h, T)

    def keys_and_values(self, spatial: Tensor) -> tuple[Tensor, Tensor]:
        """F_k(z) and F_v(z) (N, T, C) computed as F(x') + W p, with x' the image part of the
        tokens (x, after CLIP's mean of x when include_mean_token) and p their positional part.

        Exact by linearity. The positional term is projected once for all images, so the gradient
        reaching p costs T C^2 multiply-adds instead of N T C^2, and none is computed for x.
        """
        content = spatial
        position = self.positional_embedding[1:]                                 # (HW, C)
        if self.include_mean_token:
            content = torch.cat([spatial.mean(dim=1, keepdim=True), spatial], dim=1)  # (N, HW+1, C)
            position = self.positional_embedding                                 # (HW+1, C)
        return tuple(layer(content) + nn.functional.linear(position, layer.weight)  # (N, T, C)
                     for layer in (self.k_proj, self.v_proj))

    def attend(self, spatial: Tensor, query: Tensor) -> Tensor:
        """Class-specific features for raw C-space queries ((L, C) or (N, L, C)): (N, L, D).

        `forward` is attend(spatial, F_q(text)); with CLIP's own mean-token query q_proj(z_0)
        and include_mean_token, this is exactly CLIP's attention pool.
        """
        if self._fused(query.shape[-2], spatial.shape[1] + self.include_mean_token):
            keys, values = self.keys_and_values(spatial)
            return fused_output(self.attention_from_keys(keys, query), values, self.c_proj)
        tokens = self.tokens(spatial)
        attn = self.attention(tokens, query)
        values = self.v_proj(tokens)                                            # (N, T, C)
        return literal_output(attn, values, self.c_proj)

    def _fused(self, labels: int, tokens: int) -> bool:
        """Whether a call over `labels` labels and `tokens` tokens takes the fused form."""
        if self.formulation != "auto":
            return self.formulation == "fused"
        channels, embed_dim = self.k_proj.in_features, self.c_proj.out_features
        fused = tokens * channels * embed_dim + labels * self.num_heads * tokens * embed_dim
        literal = labels * tokens * channels + labels * channels * embed_dim
        return fused < literal

    def forward(self, spatial: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """o_ij for images (N, HW, C) and labels (L, D): (N, L, D), not normalised.

        global_embedding is part of the head interface and unused here.
        """
        return self.attend(spatial, self.q_proj(text))

    def attention_maps(self, spatial: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """Where each label looks: attention over the HW locations, mean over heads (N, L, HW).

        With include_mean_token the mean token's share is left out, so rows sum to at most 1.
        """
        attn = self.attention(self.tokens(spatial), self.q_proj(text)).mean(dim=2)  # (N, L, T)
        return attn[..., 1:] if self.include_mean_token else attn
