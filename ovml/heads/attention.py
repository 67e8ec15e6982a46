"""The OVML Image-Text attention head (docs/method.md, "Scorers").

Each label's text embedding t_j becomes a query that attends over the image's tokens with CLIP's
own attention-pool weights: z_i = x_i + p_i, q_j = F_q(t_j), k_i = F_k(z_i), v_i = F_v(z_i),
a_ji = softmax_i(q_j . k_i / sqrt(C/h)) per head, o_j = F_o(concat_heads sum_i a_ji v_i).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Head
from .registry import register

FORMULATIONS = ("auto", "fused", "literal")
Q_INITS = ("random", "pinv", "dense")
MIXTURE_GAIN = 30.0  # the scale mixture's logits are this times W_m t + b_m: its few weights must move
                    # far while F_q's many move little, under one learning rate
QUERY_LOGIT_STD = 0.5  # calibrated spread of attention logits over locations: a broad look, as a scene needs


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


def dense_query(pool: dict[str, Tensor], num_heads: int) -> Tensor:
    """F_q's weight (C, D) under which every head's attention starts as dense CLIP's similarity.

    Dense CLIP scores location i for label j by t_j . u_i with u_i = W_c (W_v z_i + b_v) + b_c,
    i.e. t_j^T W_c W_v z_i plus a constant (constants drop out of a softmax over i). Head h's logit
    is q_jh . (W_kh z_i + b_kh), W_kh its C/h rows of W_k; the query whose key-space functional
    W_kh^T q_jh best matches W_v^T W_c^T t_j (least squares, float64) is
    q_jh = (W_kh^T)^+ W_v^T W_c^T t_j. With one head and an invertible W_k the match is exact.
    The scale is set from data afterwards (`OVMLHead.calibrate_query`); the bias is zero.
    """
    target = pool["v_weight"].double().T @ pool["c_weight"].double().T            # (C, D)
    key_rows = pool["k_weight"].double().chunk(num_heads)                          # h x (C/h, C)
    weight = torch.cat([torch.linalg.pinv(rows.T) @ target for rows in key_rows])  # (C, D)
    return weight.to(pool["q_weight"].dtype)


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
class OVMLHead(Head):
    """Every label's text embedding queries the image tokens through (a copy of) CLIP's pool.

    Constructor arguments are shapes and switches only (JSON-able, `self.options`), so a saved
    state_dict loads into `OVMLHead(**options)` without the pool. `include_mean_token` adds CLIP's
    mean token (mean_i x_i + p_0) as a key/value, as CLIP's own pool does; docs/method.md's head
    attends over the HW tokens only (default False). `formulation` picks how the head is
    computed: "literal" as docs/method.md writes it (z = x + p projected per image, F_o applied per
    image-label pair), "fused" with two exact rewrites (F_o moved inside the attention sums,
    `fused_output`; the positional term projected once, `keys_and_values`), equal to float
    rounding; "auto" the one with fewer multiply-adds for the call's shapes (fused at RN50
    shapes). The head has no logit scale: it returns features, the trainer multiplies cosine
    scores by its scale.

    `attention_scales` (beyond the paper; empty: the paper's single softmax) attends at several
    sharpness levels at once, softmax_i(b_k l_ji) for each b_k, and mixes the resulting attention
    distributions with per-label weights read from the label's text, softmax_k(W_m t_j + b_m)
    (zero-initialised: an even mix). A small object is found by a sharp attention and a scene,
    spread over the image, by a broad one; the quality of a single softmax is not monotonic in its
    sharpness between those two, so a per-label temperature learnt by gradient descent stays where
    it starts, while a mixture over fixed scales is a smooth choice.
    """

    name = "ovml"

    def __init__(self, channels: int, embed_dim: int, num_tokens: int, num_heads: int,
                 include_mean_token: bool = False, formulation: str = "auto",
                 attention_scales: tuple[float, ...] | list[float] = (), attention_top_k: int = 0):
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
        self.attention_scales = tuple(float(b) for b in attention_scales)
        self.attention_top_k = int(attention_top_k)
        modes = len(self.attention_scales) + (1 if self.attention_top_k else 0)
        self.scale_mixture = nn.Linear(embed_dim, modes) if modes else None
        if self.scale_mixture is not None:
            nn.init.zeros_(self.scale_mixture.weight)
            nn.init.zeros_(self.scale_mixture.bias)

    @property
    def options(self) -> dict:
        """The constructor arguments: `OVMLHead(**head.options)` has this head's shapes."""
        return {"channels": self.k_proj.in_features, "embed_dim": self.c_proj.out_features,
                "num_tokens": self.positional_embedding.shape[0] - 1, "num_heads": self.num_heads,
                "include_mean_token": self.include_mean_token, "formulation": self.formulation,
                "attention_scales": list(self.attention_scales), "attention_top_k": self.attention_top_k}

    @classmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int, q_init: str = "random",
                  include_mean_token: bool = False, formulation: str = "auto",
                  attention_scales: tuple[float, ...] | list[float] = (), attention_top_k: int = 0,
                  attention_heads: int | None = None) -> OVMLHead:
        """F_k, F_v, F_o and p copied from CLIP's pool; F_q "random" (nn.Linear's init, from
        torch's global RNG), "pinv" (`pinv_query`) or "dense" (`dense_query`, then scaled on data
        with `calibrate_query`). `attention_heads` splits the channels into that many attention
        heads instead of the pool's `num_heads` (the paper's choice): with one, every label's
        attention reads its full similarity to each location, not C/h-channel fragments of it."""
        num_heads = attention_heads or num_heads
        embed_dim, channels = pool["c_weight"].shape
        if text_dim != embed_dim:
            raise ValueError(f"text dimension {text_dim} differs from the pool's output dimension {embed_dim}")
        if q_init not in Q_INITS:
            raise ValueError(f"q_init must be one of {', '.join(Q_INITS)}, not {q_init!r}")
        head = cls(channels, embed_dim, pool["positional_embedding"].shape[0] - 1, num_heads,
                   include_mean_token, formulation, attention_scales, attention_top_k).to(pool["c_weight"].device)
        with torch.no_grad():
            head.positional_embedding.copy_(pool["positional_embedding"])
            for key in ("k", "v", "c"):
                getattr(head, f"{key}_proj").weight.copy_(pool[f"{key}_weight"])
                getattr(head, f"{key}_proj").bias.copy_(pool[f"{key}_bias"])
            if q_init == "pinv":
                weight, bias = pinv_query(pool)
                head.q_proj.weight.copy_(weight)
                head.q_proj.bias.copy_(bias)
            if q_init == "dense":
                head.q_proj.weight.copy_(dense_query(pool, num_heads))
                head.q_proj.bias.zero_()
        return head

    @torch.no_grad()
    def calibrate_query(self, spatial: Tensor, text: Tensor, logit_std: float = QUERY_LOGIT_STD) -> float:
        """Scale F_q so that the attention logits of these images and labels spread over the
        locations with standard deviation `logit_std` (mean over images, labels and heads).

        A query's direction says where to look, its length how sharply; the right length depends
        on the backbone's feature scale, so it is measured, not assumed. Returns the factor.
        """
        tokens = self.tokens(spatial)
        n, t, c = tokens.shape
        width = c // self.num_heads
        keys = self.k_proj(tokens).view(n, t, self.num_heads, width)                    # (N, T, h, C/h)
        query = (self.q_proj(text) / math.sqrt(width)).unflatten(-1, (self.num_heads, width))  # (L, h, C/h)
        logits = torch.einsum("lhc,nthc->nlht", query, keys)                            # (N, L, h, T)
        spread = float(logits.std(dim=-1).mean())
        factor = logit_std / spread if spread > 0 else 1.0
        self.q_proj.weight.mul_(factor)
        self.q_proj.bias.mul_(factor)
        return factor

    def tokens(self, spatial: Tensor) -> Tensor:
        """z_i = x_i + p_i (N, HW, C), preceded by CLIP's mean token when include_mean_token."""
        tokens = spatial + self.positional_embedding[1:]
        if self.include_mean_token:
            mean = spatial.mean(dim=1, keepdim=True) + self.positional_embedding[:1]  # (N, 1, C)
            tokens = torch.cat([mean, tokens], dim=1)                                # (N, HW+1, C)
        return tokens

    def attention(self, tokens: Tensor, query: Tensor, mixture: Tensor | None = None) -> Tensor:
        """Per-head softmax over tokens of q . k / sqrt(C/h): (N, L, h, T).

        query: already in C-space, (L, C) shared by all images or (N, L, C) per image. mixture:
        (L, K) weights over `attention_scales` (None: the paper's single softmax).
        """
        return self.attention_from_keys(self.k_proj(tokens), query, mixture)

    def attention_from_keys(self, keys: Tensor, query: Tensor, mixture: Tensor | None = None) -> Tensor:
        """`attention` given the projected keys k_i = F_k(z_i) (N, T, C)."""
        n, t, c = keys.shape
        width = c // self.num_heads
        keys = keys.view(n, t, self.num_heads, width)                           # (N, T, h, C/h)
        query = (query / math.sqrt(width)).unflatten(-1, (self.num_heads, width))  # ([N,] L, h, C/h)
        pattern = "nlhc,nthc->nlht" if query.dim() == 4 else "lhc,nthc->nlht"
        logits = torch.einsum(pattern, query, keys)                            # (N, L, h, T)
        if mixture is None:
            return logits.softmax(dim=-1)
        modes = [(scale * logits).softmax(dim=-1) for scale in self.attention_scales]
        if self.attention_top_k:
            k = min(self.attention_top_k, int(t))        # plain ints, also where the head is traced (ovml export)
            top = logits.topk(k, dim=-1).indices                                           # (N, L, h, k)
            modes.append(torch.zeros_like(logits).scatter_(-1, top, 1.0 / k))              # (N, L, h, T)
        return sum(weight[:, None, None] * attended for weight, attended in zip(mixture.unbind(-1), modes))

    def scale_weights(self, text: Tensor) -> Tensor | None:
        """Each label's weights over `attention_scales`, (L, K), or None without scales."""
        return None if self.scale_mixture is None else (MIXTURE_GAIN * self.scale_mixture(text)).softmax(dim=-1)

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

    def attend(self, spatial: Tensor, query: Tensor, mixture: Tensor | None = None) -> Tensor:
        """Class-specific features for raw C-space queries ((L, C) or (N, L, C)): (N, L, D).

        `forward` is attend(spatial, F_q(text), scale weights); with CLIP's own mean-token query
        q_proj(z_0), include_mean_token and no scales, this is exactly CLIP's attention pool.
        """
        if self._fused(query.shape[-2], spatial.shape[1] + self.include_mean_token):
            keys, values = self.keys_and_values(spatial)
            return fused_output(self.attention_from_keys(keys, query, mixture), values, self.c_proj)
        tokens = self.tokens(spatial)
        attn = self.attention(tokens, query, mixture)
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

    def forward(self, tokens: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """o_ij for images (N, HW, C) and labels (L, D): (N, L, D), not normalised.

        global_embedding is part of the head interface and unused here.
        """
        return self.attend(tokens, self.q_proj(text), self.scale_weights(text))

    def attention_maps(self, spatial: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """Where each label looks: attention over the HW locations, mean over heads (N, L, HW).

        With include_mean_token the mean token's share is left out, so rows sum to at most 1.
        """
        attn = self.attention(self.tokens(spatial), self.q_proj(text), self.scale_weights(text)).mean(dim=2)
        return attn[..., 1:] if self.include_mean_token else attn                   # (N, L, T)
