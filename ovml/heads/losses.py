"""Training losses (METHOD.md), vectorised: no Python loop over images or anchors.

Labels are 1 (positive), -1 (annotated negative) and 0 (not annotated); 0 never contributes.
Pairwise terms are built only for label columns that have a positive in the batch, in blocks,
so memory is N x (positive columns in a block) x L rather than N x L x L.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAIR_BUDGET = 1 << 24  # (image, positive column, label) triples built at once


def _pair_blocks(logits: torch.Tensor, labels: torch.Tensor):
    """Yield (positive logits (N, b), positive mask (N, b), negative mask (N, L)) per block of the
    columns that hold at least one positive in the batch."""
    positive, negative = labels == 1, labels == -1
    columns = positive.any(0).nonzero().flatten()
    block = max(1, PAIR_BUDGET // max(1, logits.shape[0] * logits.shape[1]))
    for start in range(0, len(columns), block):
        chosen = columns[start:start + block]
        yield logits[:, chosen], positive[:, chosen], negative


def ranking_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_i = 1/|P_i| sum_{j in P_i} sum_{k in N_i} log(1 + exp(s_k - s_j)); mean over images with a positive."""
    positive_count = (labels == 1).sum(1)                                     # (N,)
    per_image = logits.new_zeros(logits.shape[0])
    for scores, is_positive, is_negative in _pair_blocks(logits, labels):
        pairs = F.softplus(logits[:, None, :] - scores[:, :, None])          # (N, b, L): s_k - s_j
        mask = is_positive[:, :, None] & is_negative[:, None, :]
        per_image = per_image + (pairs * mask).sum((1, 2))
    has_positive = positive_count > 0
    if not has_positive.any():
        return logits.sum() * 0
    return (per_image[has_positive] / positive_count[has_positive]).mean()


def hinge_ranking_loss(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """LESA/BiAM's: sum over (+1, -1) pairs of max(0, margin + s_n - s_p), divided by the number of
    violating pairs (+1e-8), averaged over all images of the batch (PROTOCOL.md C.2)."""
    total = logits.new_zeros(logits.shape[0])
    violating = logits.new_zeros(logits.shape[0])
    for scores, is_positive, is_negative in _pair_blocks(logits, labels):
        hinge = (margin + logits[:, None, :] - scores[:, :, None]).clamp_min(0)  # (N, b, L)
        mask = is_positive[:, :, None] & is_negative[:, None, :]
        total = total + (hinge * mask).sum((1, 2))
        violating = violating + ((hinge > 0) & mask).sum((1, 2))
    return (total / (violating + 1e-8)).mean()


class ProjectionHead(nn.Module):
    """The small MLP of the contrastive loss: D -> D -> 128, output L2-normalised."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features), dim=-1)


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, projector: nn.Module,
                                tau: float = 0.2) -> torch.Tensor:
    """SupCon over the positive class-specific features of the batch (METHOD.md).

    Anchors are all positive (image, class) pairs; an anchor's positives are the other anchors of
    the same class, its denominator all other anchors. Anchors without a positive are skipped;
    the loss is the mean over the remaining anchors (0 when there are none).
    """
    image, column = (labels == 1).nonzero(as_tuple=True)
    if len(image) < 2:
        return features.sum() * 0
    z = projector(features[image, column])                                    # (A, 128)
    similarity = z @ z.T / tau                                                # (A, A)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_probability = similarity - torch.logsumexp(similarity.masked_fill(self_mask, float("-inf")), 1, keepdim=True)
    same_class = (column[:, None] == column[None, :]) & ~self_mask
    counts = same_class.sum(1)
    anchors = counts > 0
    if not anchors.any():
        return features.sum() * 0
    per_anchor = -(log_probability * same_class).sum(1)[anchors] / counts[anchors]
    return per_anchor.mean()


def sample_label_columns(labels: torch.Tensor, num_negatives: int, generator: torch.Generator) -> torch.Tensor:
    """Columns for one batch: every column with a positive, plus `num_negatives` sampled among the
    columns that have an annotated negative and no positive. Sorted column indices.

    Memory then scales with (positive columns + K) instead of L: the head's features are
    N x (P + K) x D floats (with Open Images, K = 1024 and N = 64 at D = 1024: about 0.3 GB
    forward, 1 GB with gradients, against 1.9 / 6 GB for all 7,186 seen labels)."""
    keep = (labels == 1).any(0)
    candidates = ((labels == -1).any(0) & ~keep).nonzero().flatten().cpu()
    picked = candidates[torch.randperm(len(candidates), generator=generator)[:num_negatives]]
    chosen = torch.cat([keep.nonzero().flatten().cpu(), picked])
    return chosen.sort().values
