"""What every head shares: the `Head` interface and the scoring rule (docs/method.md).

A head maps (tokens (N, T, C), global (N, D), text (L, D)) to class-specific features o_ij
(N, L, D); a score is always the cosine of a feature with its label's text embedding. Scores are
plain cosines: the logit scale of the losses belongs to the trainer, not to the head.
"""
from __future__ import annotations

import abc
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12  # as F.normalize: norms are clamped to at least this


class Head(nn.Module, metaclass=abc.ABCMeta):
    """A head the registry builds by `name` (registry.py): initialised from CLIP's pool weights by
    `from_pool`, rebuilt for a saved state_dict by its constructor from `options`.

    `tokens` is what the cache holds for a head to read (cache/batches.py): X' (N, HW, C) for a
    ResNet, [cls; X'] (N, 1+HW, W) for a ViT. `backbones` lists the kinds a class reads; one
    `name` may have one class per kind.

    A head trained with its own paper's objective (ZS-SDL, BiAM, LESA) says so with a method
    `training_loss(tokens, global_embedding, text, labels, logit_scale, need_features) ->
    (features, loss, parts)`: the scalar loss (its ranking loss and regularisers, logits =
    logit_scale x cosines), a dict of detached 0-d tensors for the log (read once per epoch, so
    a step never waits for the device), and features (N, L, D) as `forward`
    returns them when need_features (the trainer's contrastive loss reads them), else None when
    the loss can do without. The trainer calls it in place of its own ranking loss; heads without
    it (ovml, linear) leave it None and get the trainer's losses.
    """

    name: str                                  # the registry's name for the head
    backbones: tuple[str, ...] = ("resnet",)   # backbone kinds the class reads
    training_loss: Callable | None = None      # the head's own objective, if it brings one

    @classmethod
    @abc.abstractmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int, **options) -> Head:
        """The head initialised from CLIP's pool weights (docs/cache.md `pool/*`); `options` are the
        head's settings (JSON-able, recorded in a run's config.json)."""

    @property
    @abc.abstractmethod
    def options(self) -> dict:
        """The constructor arguments (JSON-able shapes and switches): `type(head)(**head.options)`
        is an untrained head with this one's shapes, ready for its state_dict."""

    @abc.abstractmethod
    def forward(self, tokens: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """o_ij for images (tokens (N, T, C), global (N, D)) and labels (L, D): (N, L, D), not normalised."""


def cosine_scores(features: Tensor, text: Tensor) -> Tensor:
    """s_ij = cos(features[i, j], text[j]): (N, L, D), (L, D) -> (N, L).

    Features that are one vector per image broadcast along L (stride 0, as the linear head
    returns them) are scored with one matrix product instead of an (N, L, D) product.
    """
    text = F.normalize(text, dim=-1, eps=EPS)
    if features.shape[1] > 0 and features.stride(1) == 0:
        return F.normalize(features[:, 0], dim=-1, eps=EPS) @ text.T  # (N, L)
    return (features * text).sum(-1) / features.norm(dim=-1).clamp_min(EPS)


def vector_cosines(vectors: Tensor, text: Tensor) -> Tensor:
    """cos(v_ik, t_j) for images described by K vectors: (N, K, D), (L, D) -> (N, K, L)."""
    return F.normalize(vectors, dim=-1, eps=EPS) @ F.normalize(text, dim=-1, eps=EPS).T


def best_matching(vectors: Tensor, cosines: Tensor) -> Tensor:
    """Per label, the image's vector that matches it best: (N, K, D), cosines (N, K, L) from
    `vector_cosines` -> features (N, L, D).

    For heads that describe an image by K vectors (ZS-SDL's principal vectors, LESA's shared
    attention features) and score a label by its best match, max_k cos(v_k, t_j): the label's
    feature is that vector, so `cosine_scores(features, text)` is the same score and the head
    fits the one-feature-per-label interface (evaluation, interpolation) unchanged. The selection
    is a row index, not an (N, L, D) index tensor, so it costs no more memory than the features.
    """
    n, k, d = vectors.shape
    best = cosines.argmax(dim=1) + k * torch.arange(n, device=vectors.device)[:, None]   # (N, L)
    return vectors.reshape(n * k, d)[best]                                               # (N, L, D)


def pool_dimensions(pool: dict[str, Tensor], text_dim: int | None = None) -> tuple[int, int]:
    """(C, D): X' channels and the joint embedding dimension of a cache's pool weights, for heads
    that copy nothing from the pool (a ResNet attention pool's c_weight is D x C); a `text_dim`
    other than D is refused."""
    if "c_weight" not in pool:
        raise ValueError(f"pool weights without c_weight (keys: {', '.join(sorted(pool))})")
    embed_dim, channels = pool["c_weight"].shape
    if text_dim is not None and text_dim != embed_dim:
        raise ValueError(f"text dimension {text_dim} differs from the pool's output dimension {embed_dim}")
    return int(channels), int(embed_dim)


def to_grid(tokens: Tensor) -> Tensor:
    """(N, HW, C) tokens, row-major over a square grid (as X' is cached) -> (N, C, H, W), for
    heads that convolve the map."""
    n, hw, c = tokens.shape
    side = math.isqrt(hw)
    if side * side != hw:
        raise ValueError(f"{hw} tokens do not form a square grid")
    return tokens.transpose(1, 2).reshape(n, c, side, side)                   # (N, C, H, W)
