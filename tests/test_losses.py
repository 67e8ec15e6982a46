"""The losses against hand-computed cases and brute-force loops; label 0 never contributes."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ovml.heads.attention import OVMLHead
from ovml.heads.base import cosine_scores
from ovml.heads.losses import (ProjectionHead, hinge_ranking_loss, ranking_loss, sample_label_columns,
                               supervised_contrastive_loss)

softplus = lambda x: math.log1p(math.exp(x))


def random_labels(n: int, l: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, (n, l), generator=g, dtype=torch.int8)


def ranking_reference(logits: torch.Tensor, labels: torch.Tensor) -> float:
    per_image = []
    for s, y in zip(logits.tolist(), labels.tolist()):
        positives = [j for j, v in enumerate(y) if v == 1]
        negatives = [k for k, v in enumerate(y) if v == -1]
        if positives:
            per_image.append(sum(softplus(s[k] - s[j]) for j in positives for k in negatives) / len(positives))
    return sum(per_image) / len(per_image) if per_image else 0.0


def contrastive_reference(z: torch.Tensor, classes: list[int], tau: float) -> float:
    losses = []
    for a in range(len(z)):
        others = [b for b in range(len(z)) if b != a]
        positives = [p for p in others if classes[p] == classes[a]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[a] @ z[b]) / tau) for b in others)
        losses.append(-sum(math.log(math.exp(float(z[a] @ z[p]) / tau) / denominator) for p in positives)
                      / len(positives))
    return sum(losses) / len(losses) if losses else 0.0


def test_ranking_loss_hand_computed():
    logits = torch.tensor([[2.0, 0.0, 1.0, 5.0],
                           [0.0, 1.0, 3.0, -1.0],
                           [1.0, 2.0, 3.0, 4.0],
                           [1.0, 2.0, 3.0, 4.0]])
    labels = torch.tensor([[1, -1, -1, 0],     # P = {0}, N = {1, 2}; column 3 (score 5) ignored
                           [1, 1, -1, -1],     # P = {0, 1}, N = {2, 3}
                           [-1, -1, 0, 0],     # no positive: not in the mean
                           [1, 0, 0, 0]])      # positive, no negative: counts as 0
    # image 0: softplus(0 - 2) + softplus(1 - 2)                              = 0.126928 + 0.313262 = 0.440190
    # image 1: (softplus(3 - 0) + softplus(-1 - 0) + softplus(3 - 1) + softplus(-1 - 1)) / 2
    #        = (3.048587 + 0.313262 + 2.126928 + 0.126928) / 2                = 2.807853
    # mean over images 0, 1, 3: (0.440190 + 2.807853 + 0) / 3                 = 1.082681
    image0 = softplus(-2) + softplus(-1)
    image1 = (softplus(3) + softplus(-1) + softplus(2) + softplus(-2)) / 2
    assert ranking_loss(logits, labels).item() == pytest.approx((image0 + image1 + 0) / 3, rel=1e-6)
    assert (image0 + image1) / 3 == pytest.approx(1.082681, abs=1e-6)


def test_ranking_loss_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = 10 * torch.randn(9, 30, generator=g)
    labels = random_labels(9, 30, 1)
    labels[0] = 0                                         # an image with nothing annotated
    labels[1] = torch.where(labels[1] == 1, 1, 0)         # positives only
    assert ranking_loss(logits, labels).item() == pytest.approx(ranking_reference(logits, labels), rel=1e-5)


def test_hinge_ranking_loss_hand_computed():
    logits = torch.tensor([[2.0, 0.0, 1.5, 9.0],
                           [0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([[1, -1, -1, 0],
                           [0, 0, 0, 0]])
    # image 0: max(0, 1 + 0 - 2) = 0 and max(0, 1 + 1.5 - 2) = 0.5: one violating pair -> 0.5 / (1 + 1e-8)
    # image 1: no pair -> 0;  mean over both images: 0.25
    assert hinge_ranking_loss(logits, labels).item() == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize("loss", [ranking_loss, hinge_ranking_loss])
def test_unannotated_scores_never_contribute(loss):
    g = torch.Generator().manual_seed(2)
    labels = random_labels(6, 20, 3)
    logits = torch.randn(6, 20, generator=g).requires_grad_()
    value = loss(logits, labels)
    value.backward()
    unannotated = labels == 0
    assert unannotated.any() and torch.equal(logits.grad[unannotated], torch.zeros(int(unannotated.sum())))
    changed = torch.where(unannotated, 100 * torch.randn(6, 20, generator=g), logits.detach())
    assert torch.equal(loss(changed, labels), value.detach())


@pytest.mark.parametrize("loss", [ranking_loss, hinge_ranking_loss])
def test_ranking_losses_without_positives_are_zero_with_a_graph(loss):
    logits = torch.randn(3, 5).requires_grad_()
    value = loss(logits, torch.tensor([[-1, 0, -1, 0, 0]] * 3))
    value.backward()
    assert value.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 5))


def test_contrastive_loss_hand_computed():
    # anchors in row-major order: (image 0, class 0), (image 0, class 1), (image 1, class 0)
    # with z0 = (1, 0), z1 = (0, 1), z2 = (1/2, sqrt(3)/2) and tau = 1:
    #   anchor z0 (class 0): P = {z2}; others {z1, z2}: -log(e^0.5 / (e^0 + e^0.5)) = log(1 + e^0.5) - 0.5
    #   anchor z1 (class 1): no other anchor of class 1 -> skipped
    #   anchor z2 (class 0): P = {z0}; others {z0, z1}: -log(e^0.5 / (e^0.5 + e^0.866)) = log(4.026164) - 0.5
    #   log(1 + e^0.5) - 0.5 = 0.974077 - 0.5 = 0.474077;  log(1.648721 + 2.377443) - 0.5 = 0.892814
    #   loss = mean of the two = (0.474077 + 0.892814) / 2 = 0.683446
    features = torch.tensor([[[2.0, 0.0], [0.0, 3.0]],
                             [[0.5, math.sqrt(3) / 2], [7.0, -7.0]]], requires_grad=True)
    labels = torch.tensor([[1, 1], [1, 0]])
    s = math.sqrt(3) / 2
    anchor0 = math.log(1 + math.exp(0.5)) - 0.5
    anchor2 = -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(s)))
    value = supervised_contrastive_loss(features, labels, torch.nn.Identity(), tau=1.0)
    assert value.item() == pytest.approx((anchor0 + anchor2) / 2, rel=1e-6)
    assert (anchor0 + anchor2) / 2 == pytest.approx(0.683446, abs=1e-6)
    value.backward()
    assert torch.equal(features.grad[1, 1], torch.zeros(2))       # label 0: no gradient
    assert features.grad[0, 1].abs().sum() > 0                    # skipped as an anchor, still in denominators


def test_contrastive_loss_matches_brute_force():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(6, 8, 16, generator=g)
    labels = random_labels(6, 8, 6)
    projector = ProjectionHead(16, hidden=32, out_dim=8)
    positive = labels == 1
    with torch.no_grad():
        z = projector(features[positive])
    classes = positive.nonzero()[:, 1].tolist()
    value = supervised_contrastive_loss(features, labels, projector, tau=0.2)
    assert value.item() == pytest.approx(contrastive_reference(z, classes, 0.2), rel=1e-5)


@pytest.mark.parametrize("labels", [torch.tensor([[1, 0, -1], [0, 1, -1]]),   # two anchors, different classes
                                    torch.tensor([[1, 0, -1], [0, 0, -1]]),   # a lone anchor
                                    torch.tensor([[0, 0, -1], [0, 0, -1]])])  # no anchor at all
def test_contrastive_loss_without_positive_pairs_is_zero_with_a_graph(labels):
    features = torch.randn(2, 3, 8, requires_grad=True)
    projector = ProjectionHead(8, out_dim=4)
    value = supervised_contrastive_loss(features, labels, projector, tau=0.2)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(features.grad).all() and torch.equal(features.grad, torch.zeros(2, 3, 8))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in projector.parameters())


def test_projection_head_is_normalised():
    out = ProjectionHead(32)(torch.randn(10, 32))
    assert out.shape == (10, 128)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(10))


def test_sample_label_columns_keeps_all_positives():
    labels = torch.tensor([[1, -1, 0, -1, 0, -1, -1, 0],
                           [0, -1, 1, 0, 0, -1, 0, 0]])
    # positives in columns 0, 2; negative-only columns 1, 3, 5, 6; column 4 and 7 never annotated
    for seed in range(5):
        columns = sample_label_columns(labels, 2, torch.Generator().manual_seed(seed))
        assert columns.dtype == torch.long and torch.equal(columns, columns.sort().values)
        chosen = set(columns.tolist())
        assert {0, 2} <= chosen and len(chosen - {0, 2}) == 2 and chosen - {0, 2} <= {1, 3, 5, 6}
    same = [sample_label_columns(labels, 2, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*same)
    assert sample_label_columns(labels, 99, None).tolist() == [0, 1, 2, 3, 5, 6]
    assert sample_label_columns(labels, 0, None).tolist() == [0, 2]


def test_gradients_flow_only_into_the_head():
    """A full training loss: the frozen cached inputs get no gradient, the head and projector do."""
    g = torch.Generator().manual_seed(8)
    c, d, hw = 16, 8, 4
    pool = {"positional_embedding": torch.randn(hw + 1, c, generator=g),
            **{f"{k}_weight": torch.randn(c, c, generator=g) / 4 for k in "qkv"},
            **{f"{k}_bias": torch.zeros(c) for k in "qkv"},
            "c_weight": torch.randn(d, c, generator=g) / 4, "c_bias": torch.zeros(d)}
    head = OVMLHead.from_pool(pool, 2, d)
    projector = ProjectionHead(d, out_dim=4)
    spatial, global_embedding = torch.randn(4, hw, c, generator=g), torch.randn(4, d, generator=g)
    text = F.normalize(torch.randn(6, d, generator=g), dim=-1)
    labels = random_labels(4, 6, 9)
    features = head(spatial, global_embedding, text)
    loss = (ranking_loss(20 * cosine_scores(features, text), labels)
            + supervised_contrastive_loss(features, labels, projector, 0.2))
    loss.backward()
    for frozen in (spatial, global_embedding, text):
        assert not frozen.requires_grad and frozen.grad is None
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is not None for p in projector.parameters())
