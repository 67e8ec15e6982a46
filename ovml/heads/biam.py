"""BiAM over CLIP features: the "CLIP-BiAM" row of the OVML paper's Table II.

Narayan, Gupta, Khan, Khan, Shao, Shah, "Discriminative Region-based Multi-Label Zero-Shot
Learning", ICCV 2021 (arXiv 2108.09301); code: akshitac8/BiAM @ 4e391f1, `model.py`.

The method (`model.py` BiAM.forward, lines 169-180). The region map x_r is reduced,
h = BN(ReLU(conv3x3(x_r))) (CONV3_3, BN after the ReLU), then enriched twice:
- region context (RCB, lines 62-106), multi-head self-attention over the regions with 1x1-conv
  projections, dropout 0.1 on the attention and on its output, then a residual feed-forward block:
      o = h + W_o(concat_heads softmax(Q K^T / sqrt(d_k)) V),   e_r = o + W_2 ReLU(W_1 o)
- scene context (SCB, lines 117-149), a channel gate from the image's global feature x_g:
      v = LeakyReLU_0.2(W_c h)   (BiAM's q_g and v_g are this same tensor)
      r = sigmoid(mean_regions(v) * W_g dropout_0.2(x_g)),   c = r * v,   e_g = c + CONV3_3(c)
- fusion, e_f = LeakyReLU_0.2(W_f [e_r; e_g]) (512 channels), and per-region class scores
  m_rj = e_f,r . (W w_j + b); a label's score is the mean of its top 6 region scores (line 166).
- training: the margin-1 hinge ranking loss over (+1, -1) pairs divided by the violating pairs
  (`ranking_lossT`, lines 182-200; docs/protocol.md; `losses.hinge_ranking_loss`).
Settings kept: 256 channels, 8 region heads (`scripts/train_nus.sh`), feed-forward width 512,
fusion width 512, top 6, both dropouts, BN eps 1e-3, nn.Module default inits.

Adaptations (what "CLIP-" means in the paper's table):
- x_r is CLIP's X' (N, HW, C = 2048, 7 x 7) in place of VGG-19's conv5_4 (512, 14 x 14); x_g is
  CLIP's global embedding g (D, as cached, not normalised) in place of VGG's fc7 (4096).
- label embeddings are CLIP text embeddings t_j (D) in place of GloVe; BiAM's classifier W (300 ->
  512) moves to the region side by linearity, u_r = W^T e_f,r in R^D, so that m_rj = u_r . t_j;
  W's bias term e_f,r . b, the same for every label, is dropped (a bias-free Linear 512 -> D).
- the score is a cosine: label j's feature is the mean of u over its top 6 regions by m_rj, and
  its score cos(o_j, t_j), where BiAM takes the mean of the six dot products (= o_j . t_j).
  So the head fits the one-feature-per-label interface (evaluation, interpolation) unchanged.
- 6 of 49 regions is an eighth of CLIP's grid where BiAM took 6 of 196; kept as BiAM set it.
- BatchNorm momentum is PyTorch's default 0.1: BiAM passes 0.99 (a TensorFlow value, which in
  PyTorch keeps only 1 % of the running average).
- BiAM's masking of attention scores that are exactly 0 (a no-op in practice) is left out; its
  optimiser (Adam 1e-3, weight decay 5e-4, warm-up + cosine, 40 epochs, batch 32) is replaced by
  the trainer's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Head, cosine_scores, pool_dimensions, to_grid
from .losses import hinge_ranking_loss
from .registry import register


class ConvBlock(nn.Module):
    """BiAM's CONV3_3 over a token grid: 3x3 convolution (same size), ReLU, then BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, tokens: Tensor) -> Tensor:
        out = self.norm(F.relu(self.conv(to_grid(tokens))))                  # (N, C', H, W)
        return out.flatten(2).transpose(1, 2)                                 # (N, HW, C')


class RegionContextBlock(nn.Module):
    """BiAM's RCB: multi-head self-attention over regions, then a residual feed-forward block."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by the region heads ({heads})")
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))
        self.attention_dropout, self.output_dropout = nn.Dropout(dropout), nn.Dropout(dropout)
        self.feed_forward = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))

    def forward(self, h: Tensor) -> Tensor:
        n, t, w = h.shape
        split = lambda x: x.view(n, t, self.heads, w // self.heads).transpose(1, 2)  # (N, heads, HW, w/heads)
        query, key, value = split(self.query(h)), split(self.key(h)), split(self.value(h))
        attention = (query @ key.transpose(-1, -2) / math.sqrt(w // self.heads)).softmax(dim=-1)  # (N, heads, HW, HW)
        mixed = (self.attention_dropout(attention) @ value).transpose(1, 2).reshape(n, t, w)     # (N, HW, w)
        o = h + self.output_dropout(self.out(mixed))
        return o + self.feed_forward(o)


class SceneContextBlock(nn.Module):
    """BiAM's SCB: a per-channel gate from the image's global feature, refined by a CONV3_3."""

    def __init__(self, width: int, global_dim: int, dropout: float):
        super().__init__()
        self.channel = nn.Linear(width, width)
        self.global_key = nn.Linear(global_dim, width)
        self.global_dropout = nn.Dropout(dropout)
        self.refine = ConvBlock(width, width)

    def forward(self, h: Tensor, global_embedding: Tensor) -> Tensor:
        values = F.leaky_relu(self.channel(h), 0.2)                                   # (N, HW, w)
        key = self.global_key(self.global_dropout(global_embedding))                  # (N, w)
        gated = torch.sigmoid(values.mean(dim=1) * key)[:, None, :] * values          # (N, HW, w)
        return gated + self.refine(gated)


def top_region_weights(regions: Tensor, text: Tensor, top_k: int) -> Tensor:
    """1/top_k on label j's top_k regions by u_r . t_j, 0 elsewhere: (N, HW, D), (L, D) -> (N, L, HW).

    A sparse selection matrix, so the features are one batched product, never an
    (N, L, top_k, D) gather.
    """
    top_k = min(top_k, regions.shape[1])
    chosen = (regions @ text.T).topk(top_k, dim=1).indices.transpose(1, 2)         # (N, L, top_k)
    weights = regions.new_zeros(regions.shape[0], text.shape[0], regions.shape[1])  # (N, L, HW)
    return weights.scatter_(2, chosen, 1.0 / top_k)


def top_region_features(regions: Tensor, text: Tensor, top_k: int) -> Tensor:
    """o_j = mean of u_r over label j's top_k regions: (N, HW, D), (L, D) -> (N, L, D)."""
    return top_region_weights(regions, text, top_k) @ regions                      # (N, L, D)


@register
class BiAMHead(Head):
    """Region and scene contextualised regions of X', scored per label by its top regions."""

    name = "biam"

    def __init__(self, channels: int, embed_dim: int, width: int = 256, region_heads: int = 8,
                 fused_dim: int = 512, top_k: int = 6, dropout: float = 0.1, scene_dropout: float = 0.2):
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        self.settings = {"width": width, "region_heads": region_heads, "fused_dim": fused_dim, "top_k": top_k,
                         "dropout": dropout, "scene_dropout": scene_dropout}
        self.stem = ConvBlock(channels, width)
        self.region = RegionContextBlock(width, region_heads, dropout)
        self.scene = SceneContextBlock(width, embed_dim, scene_dropout)
        self.fuse = nn.Linear(2 * width, fused_dim)
        self.classifier = nn.Linear(fused_dim, embed_dim, bias=False)

    @property
    def options(self) -> dict:
        """The constructor arguments: `BiAMHead(**head.options)` has this head's shapes."""
        return {"channels": self.stem.conv.in_channels, "embed_dim": self.classifier.out_features,
                **self.settings}

    @classmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int, **settings) -> BiAMHead:
        """The pool fixes C and D only; BiAM's layers start with PyTorch's default inits."""
        channels, embed_dim = pool_dimensions(pool, text_dim)
        return cls(channels, embed_dim, **settings).to(next(iter(pool.values())).device)

    def regions(self, spatial: Tensor, global_embedding: Tensor) -> Tensor:
        """u_r, the enriched regions in the text space: (N, HW, C), (N, D) -> (N, HW, D)."""
        h = self.stem(spatial)                                                        # (N, HW, w)
        fused = torch.cat([self.region(h), self.scene(h, global_embedding)], dim=-1)  # (N, HW, 2w)
        return self.classifier(F.leaky_relu(self.fuse(fused), 0.2))                   # (N, HW, D)

    def forward(self, tokens: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """(N, L, D): each label's mean region feature over its top_k regions."""
        return top_region_features(self.regions(tokens, global_embedding), text, self.settings["top_k"])

    def attention_maps(self, spatial: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """Where each label looks: its top_k regions, 1/top_k each (N, L, HW), for `predict --explain`."""
        return top_region_weights(self.regions(spatial, global_embedding), text, self.settings["top_k"])

    def training_loss(self, tokens: Tensor, global_embedding: Tensor, text: Tensor, labels: Tensor,
                      logit_scale: float | Tensor, need_features: bool = True) -> tuple[Tensor, Tensor, dict]:
        """(features, BiAM's hinge ranking loss, its parts): the trainer's hook (heads/base.py);
        the scores are the features' cosines, so they are always made."""
        features = self(tokens, global_embedding, text)
        loss = hinge_ranking_loss(logit_scale * cosine_scores(features, text), labels)
        return features, loss, {"rank": loss.detach()}
