"""Training losses (docs/method.md, "Losses"), vectorised over images, labels and anchors.

Labels are +1 positive, -1 annotated negative, 0 not annotated; a 0 entry never enters a loss,
so its score gets a gradient of exactly 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _positive_scores(logits: Tensor, positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each image's positive scores packed to the left: scores (N, P_max), valid (N, P_max) and
    the count of positives per image (N,). P_max is the largest count in the batch."""
    count = positive.sum(dim=1)                                                       # (N,)
    width = int(count.max()) if len(count) else 0
    order = positive.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :width]  # (N, P_max)
    valid = torch.arange(width, device=logits.device) < count[:, None]                # (N, P_max)
    return logits.gather(1, order), valid, count


def pair_differences(logits: Tensor, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """s_k - s_j for every (positive j, any column k): (N, P_max, L); the (N, P_max, L) mask of
    real (positive, negative) pairs; the positive count per image (N,). `positive` and `negative`
    are (N, L) bool masks, so a loss decides what counts as a negative.

    Memory is N x P_max x L, not N x L x L: at N = 64, L = 925 and ten positives, 2.4 M floats.
    """
    positive_scores, valid, count = _positive_scores(logits, positive)
    differences = logits[:, None, :] - positive_scores[:, :, None]                  # (N, P_max, L)
    pairs = valid[:, :, None] & negative[:, None, :]                                # (N, P_max, L)
    return differences, pairs, count


def _pairs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`pair_differences` with +1 positives and -1 negatives (0 entries take no part)."""
    return pair_differences(logits, labels == 1, labels == -1)


def ranking_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Fast0Tag's ranking loss: L_i = (1/|P_i|) sum_{j in P_i} sum_{k in N_i} log(1 + exp(s_k - s_j)),
    averaged over the images that have at least one positive (an image with positives but no
    negatives counts as 0). (N, L) scores (already times the logit scale), (N, L) labels -> scalar."""
    differences, pairs, count = _pairs(logits, labels)
    per_image = torch.where(pairs, F.softplus(differences), 0.0).sum(dim=(1, 2)) / count.clamp_min(1)
    has_positive = count > 0
    return (per_image * has_positive).sum() / has_positive.sum().clamp_min(1)


def hinge_ranking_loss(logits: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """LESA/BiAM's ranking loss (docs/protocol.md): sum over (+1, -1) pairs of
    max(0, margin + s_neg - s_pos), divided by the number of violating pairs + 1e-8, averaged over
    all N images (those without pairs count as 0)."""
    differences, pairs, _ = _pairs(logits, labels)
    hinge = torch.where(pairs, (margin + differences).clamp_min(0), 0.0)            # (N, P_max, L)
    violating = (hinge > 0).sum(dim=(1, 2))
    return (hinge.sum(dim=(1, 2)) / (violating + 1e-8)).mean()


class LogitScale(nn.Module):
    """The factor between cosine scores and the losses' logits, log-parametrised as CLIP's: the
    scale is exp(log_scale), clamped to [MIN, MAX]; learnable or fixed (`learnable=False`)."""

    MIN, MAX = 1.0, 100.0

    def __init__(self, initial: float, learnable: bool = True):
        super().__init__()
        if not self.MIN <= initial <= self.MAX:
            raise ValueError(f"logit scale must lie in [{self.MIN:g}, {self.MAX:g}], not {initial}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(initial)), requires_grad=learnable)

    @property
    def value(self) -> float:
        return float(self.log_scale.detach().clamp(math.log(self.MIN), math.log(self.MAX)).exp())

    def factor(self) -> Tensor:
        """The clamped scale as a 0-d tensor (gradients reach `log_scale` when learnable)."""
        return self.log_scale.clamp(math.log(self.MIN), math.log(self.MAX)).exp()

    def forward(self, scores: Tensor) -> Tensor:
        return scores * self.factor()


class ProjectionHead(nn.Module):
    """The contrastive projector: Linear-ReLU-Linear, D -> hidden (default D) -> out_dim,
    L2-normalised. Used for training only; evaluation never needs it."""

    def __init__(self, in_dim: int, hidden: int | None = None, out_dim: int = 128):
        super().__init__()
        hidden = hidden or in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


def supervised_contrastive_loss(features: Tensor, labels: Tensor, projector: nn.Module, tau: float = 0.2) -> Tensor:
    """Supervised contrastive loss over the class-specific features of positive pairs.

    Anchors are all (image i, class j) with label +1: z = normalise(projector(o_ij)). For an
    anchor, positives are the other anchors of the same class and the denominator runs over all
    other anchors: loss_a = -1/|P(a)| sum_{p in P(a)} log(exp(z_a.z_p/tau) / sum_{a' != a} exp(z_a.z_a'/tau)).
    Averaged over anchors with at least one positive (docs/method.md: ovml averages where the paper
    sums); 0, still attached to the graph, when there is none. Memory: A x A for A anchors.
    """
    positive = labels == 1
    classes = positive.nonzero()[:, 1]                                   # (A,) row-major, as features[positive]
    z = F.normalize(projector(features[positive]), dim=-1)               # (A, d)
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)     # (A, A)
    similarity = z @ z.T / tau                                           # (A, A)
    # the finite minimum (not -inf) keeps a lone anchor's row, and its gradient, free of NaN; it is
    # the similarity's own dtype's: under CUDA autocast z is float32 (a norm) but z @ z.T half precision
    similarity = similarity.masked_fill(self_pair, torch.finfo(similarity.dtype).min)
    log_prob = similarity - similarity.logsumexp(dim=1, keepdim=True)   # (A, A)
    same_class = (classes[:, None] == classes[None, :]) & ~self_pair     # (A, A)
    count = same_class.sum(dim=1)
    per_anchor = -torch.where(same_class, log_prob, 0.0).sum(dim=1) / count.clamp_min(1)
    has_positive = count > 0
    return (per_anchor * has_positive).sum() / has_positive.sum().clamp_min(1)


def sample_label_columns(labels: Tensor, num_negatives: int, generator: torch.Generator | None = None) -> Tensor:
    """Label columns to score in one batch when the vocabulary is too large (Open Images):
    every column with a positive in the batch, plus num_negatives drawn without replacement
    among the other columns with at least one -1 (all of them if fewer). Sorted LongTensor.

    The step then needs features (N, P + K, D), attention (N, P + K, h, HW) and ranking pairs
    (N, P_max, P + K), P the batch's positive columns, K = num_negatives: memory follows the
    batch's positives and K, not the vocabulary size. `generator` is a CPU generator.
    """
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, not {num_negatives}")
    has_positive = (labels == 1).any(dim=0)                                           # (L,)
    candidates = ((labels == -1).any(dim=0) & ~has_positive).nonzero().squeeze(1)    # (M,)
    picked = torch.randperm(len(candidates), generator=generator)[:num_negatives].to(candidates.device)
    positives = has_positive.nonzero().squeeze(1)                                     # (P,)
    return torch.cat([positives, candidates[picked]]).sort().values                   # (P + min(K, M),)
