"""ZS-SDL over CLIP features: the "CLIP-ZSSDL" row of the OVML paper's Table II.

Ben-Cohen, Zamir, Ben-Baruch, Friedman, Zelnik-Manor, "Semantic Diversity Learning for Zero-Shot
Multi-label Classification", ICCV 2021 (arXiv 2105.05926); code: Alibaba-MIIL/ZS_SDL @ 769fe4f.

The method. A network maps image i to an embedding matrix A_i of K principal vectors a_ik (ZS_SDL:
TResNet, global average pool, a bias-free Linear to K x 300, `src/models/utils/factory.py`); label
j scores s_ij = max_k a_ik . w_j. The SDL loss (`src/loss_functions/SDL_loss.py`), per image:
    rank_i = w_i (1/|P_i|) sum_{p in P_i} sum_{n not in P_i} log(1 + exp(s_in - s_ip))
    w_i    = 1 + sum_d var_{p in P_i}(w_pd)        the semantic-diversity weight of its positives
    reg_i  = || var_k(A_i) ||_1                    the spread of the principal vectors, per dimension
    L_i    = 2 ((1 - lambda) rank_i + lambda reg_i), averaged over the batch,
with every label that is not +1 a negative (0 "unknown" included, as ZS_SDL does), unbiased
variances (torch.var), w_i = 1 for a single positive, K = 7 (`infer.py`, the released NUS-WIDE
model) and lambda = 0.01 (`train.py --var_weight`).

Adaptations (what "CLIP-" means in the paper's table):
- input: CLIP's X' (N, HW, C) in place of TResNet's last map; its global average pool feeds the
  bias-free Linear C -> K x D (nn.Linear's init). The backbone is frozen; ZS-SDL trains end to end.
- labels: CLIP text embeddings t_j (D-dim, unit norm) in place of the 300-d GloVe vectors (unit
  norm in ZS_SDL too), both for the scores and for w_i.
- scores are cosines, s_ij = max_k cos(a_ik, t_j), times the trainer's logit scale in the loss,
  where ZS_SDL takes raw dot products: every ovml head is scored by cosine (CLIP's rule), and a
  label's feature is its best-matching principal vector (`base.best_matching`), so evaluation
  and interpolation treat this head like any other.
- reg_i is taken over the L2-normalised principal vectors: with cosine scores their norms are
  free, and on raw vectors the regulariser would be met by shrinking them.
- the mean runs over images with at least one positive (ZS_SDL divides by |P_i| = 0 otherwise);
  optimiser, schedule and batch are the trainer's, not ZS_SDL's Adam at 2.5e-5 with batch 32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Head, best_matching, pool_dimensions, vector_cosines
from .losses import pair_differences
from .registry import register


def semantic_diversity_weight(text: Tensor, positive: Tensor) -> Tensor:
    """w_i = 1 + sum_d var_{p in P_i}(t_pd) (unbiased), 1 with fewer than two positives: (L, D),
    (N, L) bool -> (N,)."""
    count = positive.sum(dim=1).to(text.dtype)                                     # (N,)
    mask = positive.to(text.dtype)
    mean = (mask @ text) / count.clamp_min(1)[:, None]                             # (N, D)
    squares = mask @ text.square()                                                 # (N, D)
    variance = (squares - count[:, None] * mean.square()) / (count - 1).clamp_min(1)[:, None]
    return 1 + torch.where(count > 1, variance.sum(dim=1), 0.0)


def principal_variance(vectors: Tensor) -> Tensor:
    """reg_i = sum_d var_k(a_ikd / |a_ik|) (unbiased), 0 for a single vector: (N, K, D) -> (N,)."""
    if vectors.shape[1] < 2:
        return vectors.new_zeros(vectors.shape[0])
    return F.normalize(vectors, dim=-1).var(dim=1).sum(dim=-1)


def sdl_loss(logits: Tensor, labels: Tensor, text: Tensor, vectors: Tensor,
             variance_weight: float) -> tuple[Tensor, dict]:
    """The SDL loss (module docstring): logits (N, L) = scale x max_k cos, labels (N, L) in
    {-1, 0, 1}, text (L, D), principal vectors (N, K, D) -> scalar, and its parts for the log."""
    positive = labels == 1
    differences, pairs, count = pair_differences(logits, positive, ~positive)      # (N, P_max, L)
    pair_sums = torch.where(pairs, F.softplus(differences), 0.0).sum(dim=(1, 2))
    rank = semantic_diversity_weight(text, positive) * pair_sums / count.clamp_min(1)   # (N,)
    variance = principal_variance(vectors)                                          # (N,)
    per_image = 2 * ((1 - variance_weight) * rank + variance_weight * variance)
    has_positive = count > 0
    images = has_positive.sum().clamp_min(1)
    mean = lambda values: (values * has_positive).sum() / images
    return mean(per_image), {"rank": mean(rank).detach(), "variance": mean(variance).detach()}


@register
class ZSSDLHead(Head):
    """K principal vectors per image from the mean of X'; a label's feature is its best match."""

    name = "zssdl"

    def __init__(self, channels: int, embed_dim: int, principal_vectors: int = 7, variance_weight: float = 0.01):
        super().__init__()
        if principal_vectors < 1:
            raise ValueError(f"principal_vectors must be at least 1, not {principal_vectors}")
        if not 0 <= variance_weight < 1:
            raise ValueError(f"variance_weight must lie in [0, 1), not {variance_weight}")
        self.num_vectors, self.embed_dim = principal_vectors, embed_dim
        self.variance_weight = variance_weight
        self.embedding = nn.Linear(channels, principal_vectors * embed_dim, bias=False)

    @property
    def options(self) -> dict:
        """The constructor arguments: `ZSSDLHead(**head.options)` has this head's shapes."""
        return {"channels": self.embedding.in_features, "embed_dim": self.embed_dim,
                "principal_vectors": self.num_vectors, "variance_weight": self.variance_weight}

    @classmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int, principal_vectors: int = 7,
                  variance_weight: float = 0.01) -> ZSSDLHead:
        """The pool fixes C and D only: ZS-SDL's embedding starts random."""
        channels, embed_dim = pool_dimensions(pool, text_dim)
        device = next(iter(pool.values())).device
        return cls(channels, embed_dim, principal_vectors, variance_weight).to(device)

    def principal_vectors(self, spatial: Tensor) -> Tensor:
        """A_i: (N, HW, C) -> (N, K, D), from the global average pool of X'."""
        return self.embedding(spatial.mean(dim=1)).unflatten(-1, (self.num_vectors, self.embed_dim))

    def forward(self, tokens: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """(N, L, D): each label's best-matching principal vector (global_embedding unused)."""
        vectors = self.principal_vectors(tokens)
        return best_matching(vectors, vector_cosines(vectors, text))

    def training_loss(self, tokens: Tensor, global_embedding: Tensor, text: Tensor, labels: Tensor,
                      logit_scale: float | Tensor, need_features: bool = True) -> tuple[Tensor | None, Tensor, dict]:
        """(features or None, the SDL loss, its parts): the trainer's hook (heads/base.py)."""
        vectors = self.principal_vectors(tokens)                                   # (N, K, D)
        cosines = vector_cosines(vectors, text)                                     # (N, K, L)
        logits = logit_scale * cosines.max(dim=1).values                            # (N, L)
        loss, parts = sdl_loss(logits, labels, text, vectors, self.variance_weight)
        return best_matching(vectors, cosines) if need_features else None, loss, parts
