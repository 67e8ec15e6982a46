"""`--amp bf16|fp16` on CUDA, rehearsed on the CPU under CUDA autocast's dtype rules
(tests/autocast_emulation.py): the losses, and one epoch of `train-head` and `eval` for every head
kind, in both dtypes.

`--amp` itself is ignored on the CPU (precision.py), so these tests run the training under the
emulation and give the trainer a precision that says "fp16" (its gradient scaler then runs, as on
CUDA) without autocasting again. BiAM and LESA convolve the token grid: this machine's torch has
bfloat16 and float16 CPU convolution kernels, so they run under the emulation like the others. Read
for what the emulation cannot show: their BatchNorm takes the convolution's half-precision output
with float32 parameters (CUDA's batch norm accepts that mix, autocast leaves it alone), BiAM's
top-region weights are made in the regions' own dtype (`new_zeros`), and LESA's loss casts the
labels to the logits' dtype; none of them fills or compares with a float32-only constant.
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ovml.cli import main
from ovml.heads.losses import (ProjectionHead, hinge_ranking_loss, ranking_loss, supervised_contrastive_loss)
from ovml.precision import AMP_DTYPES, MixedPrecision
from ovml.synthetic.planted import PlantedWorld, write_planted_world
from ovml.train import trainer
from tests.autocast_emulation import EmulatedAutocast

DTYPES = sorted(AMP_DTYPES)   # bf16, fp16


class EmulatedPrecision(MixedPrecision):
    """A precision that says bf16 / fp16 (the fp16 gradient scaler on) but adds no autocast: the
    test's EmulatedAutocast already covers the whole run."""

    def autocast(self):
        return contextlib.nullcontext()


@pytest.fixture(scope="module")
def tiny_worlds(tmp_path_factory) -> dict[str, str]:
    """A tiny planted world of each backbone kind (64 train / 32 test images)."""
    folder = tmp_path_factory.mktemp("amp")
    shape = dict(seen=12, unseen=4, rank=6, channels=32, embed_dim=16, grid=4, num_heads=2, train_images=64,
                 test_images=32, unit_rows=16, big_cells=(3, 6))
    return {kind: write_planted_world(str(folder / f"{kind}.zarr"), PlantedWorld(**shape, backbone_kind=kind))
            for kind in ("resnet", "vit")}


def contrastive_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, ProjectionHead]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(6, 5, 16, generator=generator, requires_grad=True)        # (N, L, D)
    labels = torch.randint(-1, 2, (6, 5), generator=generator)                        # (N, L)
    labels[0, :2] = 1
    labels[1, :2] = 1
    torch.manual_seed(seed)
    return features, labels, ProjectionHead(16)


@pytest.mark.parametrize("amp", DTYPES)
def test_contrastive_loss_under_autocast_matches_float32(amp):
    """The similarity of anchors comes out of a matrix product, in half precision under autocast;
    its masked diagonal must take a value that dtype holds (float32's minimum does not)."""
    features, labels, projector = contrastive_inputs()
    with torch.no_grad():
        reference = supervised_contrastive_loss(features, labels, projector)
    with EmulatedAutocast(AMP_DTYPES[amp]):
        loss = supervised_contrastive_loss(features, labels, projector)
        loss.backward()
    loss = loss.detach()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(float(loss) - float(reference)) < 0.05 * abs(float(reference)) + 0.05
    assert features.grad is not None and torch.isfinite(features.grad).all()


@pytest.mark.parametrize("amp", DTYPES)
@pytest.mark.parametrize("loss_function", [ranking_loss, hinge_ranking_loss])
def test_ranking_losses_under_autocast(amp, loss_function):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(8, 16, generator=generator, requires_grad=True)            # (N, D)
    text = torch.randn(10, 16, generator=generator)                                   # (L, D)
    labels = torch.randint(-1, 2, (8, 10), generator=generator)
    with torch.no_grad():
        reference = loss_function(20 * features @ text.T, labels)
    with EmulatedAutocast(AMP_DTYPES[amp]):
        loss = loss_function(20 * features @ text.T, labels)
        loss.backward()
    loss = loss.detach()
    assert torch.isfinite(loss) and abs(float(loss) - float(reference)) < 0.05 * abs(float(reference)) + 0.05
    assert torch.isfinite(features.grad).all()


def test_the_emulation_casts_as_cuda_autocast_does():
    """Matrix products in the low precision, reductions and norms in float32, the rest promoted;
    in the backward too."""
    a = torch.randn(4, 8, requires_grad=True)
    with EmulatedAutocast(torch.bfloat16):
        product = a @ a.T
        norm = product.norm(dim=1)
        softmax = product.softmax(dim=1)
        mixed = product + a[:, :4]
        (norm.sum() + softmax.sum() + mixed.sum()).backward()
    assert product.dtype == torch.bfloat16 and norm.dtype == softmax.dtype == torch.float32
    assert mixed.dtype == torch.float32 and a.grad.dtype == torch.float32


HEADS = [("resnet", "ovml"), ("resnet", "linear"), ("resnet", "zssdl"), ("resnet", "biam"), ("resnet", "lesa"),
         ("vit", "ovml"), ("vit", "linear")]


@pytest.mark.parametrize("amp", DTYPES)
@pytest.mark.parametrize("kind,head", HEADS)
def test_train_head_and_eval_under_autocast(tiny_worlds, tmp_path, monkeypatch, kind, head, amp):
    """One epoch of `train-head --amp` (the range test, calibration, training steps with the
    fp16 gradient scaler, validation), then `eval --amp`, every op under autocast's rules."""
    monkeypatch.setattr(trainer, "mixed_precision", lambda requested, device: EmulatedPrecision(
        torch.device(device).type, AMP_DTYPES[requested]))
    cache, out = tiny_worlds[kind], str(tmp_path / "run")
    runner = CliRunner()
    with EmulatedAutocast(AMP_DTYPES[amp]):
        trained = runner.invoke(main, ["train-head", "--cache", cache, "--out", out, "--head", head, "--epochs", "1",
                                       "--batch-size", "16", "--lr-range-steps", "2", "--amp", amp])
        assert trained.exit_code == 0, trained.output + repr(trained.exception)
        evaluated = runner.invoke(main, ["eval", "--cache", cache, "--head", out, "--split", "all", "--alpha", "0",
                                         "--baselines", "none", "--json", "--amp", amp])
        assert evaluated.exit_code == 0, evaluated.output + repr(evaluated.exception)
    with open(os.path.join(out, "log.jsonl")) as handle:
        epoch = json.loads(handle.readline())
    assert np.isfinite(epoch["loss"]) and epoch["steps"] >= 1
    assert np.isfinite(json.loads(evaluated.output[evaluated.output.index("{"):])["rows"][0]["mAP"])
