"""LESA over CLIP features: shared multi-attention with its three attention regularisers.

Huynh and Elhamifar, "A Shared Multi-Attention Framework for Multi-Label Zero-Shot Learning",
CVPR 2020; code: hbdat/cvpr20_LESA @ e40a7f2, `core/model_share_attention.py` (cited by line).

The method. The region map is convolved, x_r = ReLU(BN(conv2x2(x))) ('SAME' padding, no bias:
`_conv`, lines 263-283), and T shared attentions read it (`_attention_layer_MLP`, lines 116-143):
    e_tr = w_2,t . [tanh(W_1 [x_r; 1]); 1],   a_tr = softmax_r(e_tr),   f_t = sum_r a_tr x_r
Label j scores s_j = max_t f_t . W v_j (`_predict_frac`, lines 250-261), v_j its word vector.
Training (NUS-WIDE zero-shot script: T = 10, lambdas 0.1, 0.001, 0.01, margin 0, `build_model_rank`):
    L = L_rank + 0.1 L_att_dist + 0.001 L_att_global + 0.01 L_att_span
- L_rank: the margin-1 hinge over (+1, -1) pairs divided by the violating pairs (lines 221-248;
  docs/protocol.md; `losses.hinge_ranking_loss`).
- L_att_dist (soft cardinality, lines 188-207): P_tj = softmax_t(s_tj); for each image the mass of
  its positive labels on attention t, n_t = sum_{j in P} P_tj; L = mean_images mean_t n_t^2, which
  is smallest when the positives spread over the attentions.
- L_att_global (lines 209-219): with s^g_j = f_g . W v_j the score of the mean feature f_g,
  L = sum_{images, labels} max(0, margin - y_j (s_j - s^g_j)), y in {+1, -1, 0}: attending must
  beat global pooling on positives and not on negatives. Summed, not averaged.
- L_att_span (lines 174-186): the attention logits e_t (over regions) L2-normalised, their Gram
  matrix per image with a zero diagonal, and its Frobenius norm over the whole batch: the
  attentions should look at different regions.

Adaptations (what "CLIP-" means in the paper's table):
- x is CLIP's X' (N, HW, C = 2048, 7 x 7) in place of VGG-19's conv5_4 (512, 14 x 14); the
  convolution keeps C channels as LESA keeps 512.
- v_j are CLIP text embeddings t_j (D) in place of GloVe (fixed, as LESA's zero-shot run keeps
  them); W (D_x -> 300) moves to the image side by linearity, u_t = W^T f_t in R^D, u_g = W^T f_g.
- every score is a cosine times the trainer's logit scale: s_tj = scale cos(u_t, t_j), s_j =
  max_t s_tj, s^g_j = scale cos(u_g, t_j), where LESA takes raw dot products. Label j's feature is
  its best-matching attention feature (`base.best_matching`), so evaluation and interpolation
  treat this head like any other.
- W_1 and w_2's appended ones are the Linear layers' biases (the same thing); weights start with
  He-normal inits (LESA: TF variance scaling, fan-in, factor 2), biases at 0.
- BatchNorm eps 1e-3 as TF's; momentum PyTorch's default 0.1 (TF's 0.99 is PyTorch's 0.01, too
  slow for ovml's short runs). LESA's RMSProp at 1e-3 with its plateau schedule is replaced by
  the trainer's optimiser.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import EPS, Head, best_matching, pool_dimensions, to_grid, vector_cosines
from .losses import hinge_ranking_loss
from .registry import register

WEIGHTS = {"dist": 0.1, "global": 0.001, "span": 0.01}  # LESA's NUS-WIDE zero-shot lambdas


def attention_distribution(logits: Tensor, labels: Tensor) -> Tensor:
    """L_att_dist: logits (N, T, L) per attention and label, labels (N, L) -> scalar."""
    mass = (logits.softmax(dim=1) * (labels == 1)[:, None, :]).sum(dim=2)          # (N, T)
    return mass.square().mean()


def attention_global(logits: Tensor, global_logits: Tensor, labels: Tensor, margin: float = 0.0) -> Tensor:
    """L_att_global: best-attention logits (N, L), mean-feature logits (N, L), labels -> scalar."""
    return (margin - (logits - global_logits) * labels.to(logits.dtype)).clamp_min(0).sum()


def attention_span(attention_logits: Tensor) -> Tensor:
    """L_att_span: attention logits (N, T, HW) -> Frobenius norm of the off-diagonal Gram entries."""
    unit = F.normalize(attention_logits, dim=2, eps=EPS)
    gram = unit @ unit.transpose(1, 2)                                              # (N, T, T)
    off_diagonal = gram - torch.diag_embed(gram.diagonal(dim1=1, dim2=2))
    return off_diagonal.square().sum().sqrt()


class SharedAttention(nn.Module):
    """LESA's T shared attentions: an MLP scores every region for every attention."""

    def __init__(self, channels: int, attentions: int):
        super().__init__()
        self.hidden = nn.Linear(channels, channels)
        self.logits = nn.Linear(channels, attentions)
        for layer in (self.hidden, self.logits):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, regions: Tensor) -> tuple[Tensor, Tensor]:
        """(N, HW, C) -> attended features f_t (N, T, C) and attention logits e (N, T, HW)."""
        logits = self.logits(torch.tanh(self.hidden(regions))).transpose(1, 2)     # (N, T, HW)
        return logits.softmax(dim=2) @ regions, logits


@register
class LESAHead(Head):
    """Shared multi-attention over X' (after LESA's 2x2 convolution); best attention per label."""

    name = "lesa"

    def __init__(self, channels: int, embed_dim: int, attentions: int = 10, global_margin: float = 0.0):
        super().__init__()
        self.num_attentions, self.global_margin = attentions, global_margin
        self.conv = nn.Conv2d(channels, channels, 2, bias=False)
        self.norm = nn.BatchNorm2d(channels, eps=1e-3)
        self.attention = SharedAttention(channels, attentions)
        self.classifier = nn.Linear(channels, embed_dim, bias=False)
        nn.init.kaiming_normal_(self.classifier.weight, nonlinearity="relu")

    @property
    def options(self) -> dict:
        """The constructor arguments: `LESAHead(**head.options)` has this head's shapes."""
        return {"channels": self.conv.in_channels, "embed_dim": self.classifier.out_features,
                "attentions": self.num_attentions, "global_margin": self.global_margin}

    @classmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int, attentions: int = 10,
                  global_margin: float = 0.0) -> LESAHead:
        """The pool fixes C and D only; LESA's layers start random."""
        channels, embed_dim = pool_dimensions(pool, text_dim)
        return cls(channels, embed_dim, attentions, global_margin).to(next(iter(pool.values())).device)

    def regions(self, spatial: Tensor) -> Tensor:
        """x_r = ReLU(BN(conv2x2(X'))), TF 'SAME' padding (one row and column after): (N, HW, C)."""
        grid = F.pad(to_grid(spatial), (0, 1, 0, 1))                                # (N, C, H+1, W+1)
        out = F.relu(self.norm(self.conv(grid)))                                    # (N, C, H, W)
        return out.flatten(2).transpose(1, 2)                                       # (N, HW, C)

    def attend(self, spatial: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u_t (N, T, D), u_g (N, D) and the attention logits (N, T, HW)."""
        regions = self.regions(spatial)
        attended, logits = self.attention(regions)
        return self.classifier(attended), self.classifier(regions.mean(dim=1)), logits

    def forward(self, tokens: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """(N, L, D): each label's best-matching attention feature (global_embedding unused)."""
        attended = self.attend(tokens)[0]
        return best_matching(attended, vector_cosines(attended, text))

    def attention_maps(self, spatial: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """Where each label looks: the attention map of its best-matching attention (N, L, HW), for
        `predict --explain`."""
        attended, _, logits = self.attend(spatial)
        best = vector_cosines(attended, text).argmax(dim=1)                         # (N, L)
        return logits.softmax(dim=2).gather(1, best[..., None].expand(-1, -1, logits.shape[2]))  # (N, L, HW)

    def training_loss(self, tokens: Tensor, global_embedding: Tensor, text: Tensor, labels: Tensor,
                      logit_scale: float | Tensor, need_features: bool = True) -> tuple[Tensor | None, Tensor, dict]:
        """(features or None, L_rank + LESA's three regularisers, the parts): the trainer's hook
        (heads/base.py)."""
        attended, pooled, attention_logits = self.attend(tokens)
        cosines = vector_cosines(attended, text)                                    # (N, T, L)
        per_attention = logit_scale * cosines                                       # (N, T, L)
        logits = per_attention.max(dim=1).values                                    # (N, L)
        global_logits = logit_scale * vector_cosines(pooled[:, None], text)[:, 0]    # (N, L)
        parts = {"rank": hinge_ranking_loss(logits, labels),
                 "dist": attention_distribution(per_attention, labels),
                 "global": attention_global(logits, global_logits, labels, self.global_margin),
                 "span": attention_span(attention_logits)}
        total = parts["rank"] + sum(WEIGHTS[key] * parts[key] for key in WEIGHTS)
        features = best_matching(attended, cosines) if need_features else None
        return features, total, {key: value.detach() for key, value in parts.items()}
