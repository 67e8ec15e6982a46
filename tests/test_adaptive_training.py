"""Training that adapts to the data: the learning-rate range test (--lr auto), the measured and
learnable logit scale, the dense-CLIP query start and the per-label temperature."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from click.testing import CliRunner

from ovml.cli import main
from ovml.config import PAPER_SETTINGS, TrainConfig, from_dict
from ovml.heads.attention import OVMLHead, dense_query
from ovml.heads.losses import LogitScale
from ovml.train.lr_range import choose_lr, learning_rates, run_range_test
from ovml.train.run_folder import load_tensors
from ovml.train.trainer import initial_logit_scale, train_head
from tests.test_heads import HEADS_N, random_pool


def test_learning_rates_are_geometric_and_the_rule_is_the_minimum_over_ten():
    rates = learning_rates(5, 1e-4, 1.0)
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1.0)
    assert all(b / a == pytest.approx(10.0) for a, b in zip(rates, rates[1:]))
    assert choose_lr([1e-3, 1e-2, 1e-1], [5.0, 2.0, 9.0]) == pytest.approx(1e-3)


def test_the_rule_skips_the_first_steps_and_takes_the_knee_of_a_long_plateau():
    lrs = learning_rates(20, 1e-6, 1.0)
    flat = [10.0] * 20
    flat[0] = 9.0                                   # a lucky first batch decides nothing
    flat[15] = 9.9
    assert choose_lr(lrs, flat, flat) == pytest.approx(lrs[15] / 10)
    plateau = [30.0] * 6 + [26.0, 22.0, 20.5] + [20.4 - 0.01 * k for k in range(11)]
    noisy = [value + (0.2 if k % 2 else -0.2) for k, value in enumerate(plateau)]
    assert choose_lr(lrs, plateau, noisy) == pytest.approx(lrs[7])  # the knee (80% of the drop), not lrs[19] / 10
    very_noisy = [value + (8.0 if k % 2 else -8.0) for k, value in enumerate(plateau)]
    assert choose_lr(lrs, plateau, very_noisy) == pytest.approx(lrs[19] / 10)  # a drop within the noise


def test_range_test_stops_once_the_loss_diverges():
    def step(lr):                        # a loss that falls until lr = 1e-2, then explodes
        return 10.0 - math.log10(lr) if lr < 1e-2 else 12.0 * (lr / 1e-2) ** 4
    record = run_range_test(step, steps=61, show=False)
    assert len(record.lrs) < 61 and record.lrs[-1] < 1.0
    assert 1e-4 < record.chosen < 1e-2
    assert record.summary()["rule"].startswith("min(lr at the lowest smoothed loss")


def test_dense_query_makes_attention_logits_dense_clip_similarities():
    """One head, invertible k_proj: q_j . k_i - t_j . u_i is the same for every location i."""
    pool = random_pool()
    head = OVMLHead.from_pool(pool, 1, pool["c_weight"].shape[0], q_init="dense")
    generator = torch.Generator().manual_seed(1)
    spatial = torch.randn(2, 9, 64, generator=generator)
    text = torch.nn.functional.normalize(torch.randn(5, 32, generator=generator), dim=-1)
    with torch.no_grad():
        tokens = head.tokens(spatial)
        logits = torch.einsum("lc,ntc->nlt", head.q_proj(text), head.k_proj(tokens))         # (N, L, T)
        dense = torch.einsum("ld,ntd->nlt", text, head.c_proj(head.v_proj(tokens)))         # (N, L, T)
    difference = (logits - dense).double()
    assert torch.allclose(difference, difference[..., :1].expand_as(difference), atol=1e-3)
    assert dense_query(pool, HEADS_N).shape == (64, 32)


def test_calibrated_query_spreads_logits_as_asked():
    pool = random_pool()
    head = OVMLHead.from_pool(pool, HEADS_N, 32, q_init="dense")
    spatial = torch.randn(8, 9, 64, generator=torch.Generator().manual_seed(2))
    text = torch.nn.functional.normalize(torch.randn(6, 32, generator=torch.Generator().manual_seed(3)), dim=-1)
    head.calibrate_query(spatial, text, logit_std=2.5)
    assert head.calibrate_query(spatial, text, logit_std=2.5) == pytest.approx(1.0, rel=1e-4)


def test_attention_scales_mix_softmaxes_at_each_sharpness_per_label():
    pool = random_pool()
    torch.manual_seed(0)
    plain = OVMLHead.from_pool(pool, HEADS_N, 32)
    torch.manual_seed(0)
    scaled = OVMLHead.from_pool(pool, HEADS_N, 32, attention_scales=[1.0, 5.0])
    spatial, text = torch.randn(3, 9, 64), torch.randn(4, 32)
    tokens = plain.tokens(spatial)
    with torch.no_grad():
        broad = plain.attention(tokens, plain.q_proj(text))                           # (N, L, h, T)
        sharp = plain.attention(tokens, 5.0 * plain.q_proj(text))
        torch.testing.assert_close(scaled.attention(tokens, scaled.q_proj(text), scaled.scale_weights(text)),
                                   0.5 * broad + 0.5 * sharp)                        # an even mix to start
        scaled.scale_mixture.bias.copy_(torch.tensor([0.0, 50.0]))                    # every label picks 5
        torch.testing.assert_close(scaled(spatial, None, text), plain.attend(spatial, 5.0 * plain.q_proj(text)))
    assert scaled.options["attention_scales"] == [1.0, 5.0] and "scale_mixture.weight" in scaled.state_dict()
    assert plain.options["attention_scales"] == [] and plain.scale_mixture is None


def test_logit_scale_is_clamped_and_may_be_fixed():
    scale = LogitScale(10.0)
    assert scale.value == pytest.approx(10.0) and scale.log_scale.requires_grad
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert scale.value == pytest.approx(100.0)
    assert not LogitScale(100.0, learnable=False).log_scale.requires_grad
    with pytest.raises(ValueError):
        LogitScale(500.0)
    cosines = torch.tensor([[0.1, 0.2, 0.3], [0.2, 0.2, 0.5]])
    assert initial_logit_scale(cosines, spread=2.0) == pytest.approx(2.0 / cosines.std(dim=1).mean().item())


def test_lr_auto_writes_its_curve_and_trains_as_the_chosen_rate_does(small_world, tmp_path):
    auto = str(tmp_path / "auto")
    train_head(TrainConfig(cache=small_world, out=auto, epochs=1, lr_range_steps=20, progress=False))
    config = json.load(open(os.path.join(auto, "config.json")))
    chosen = config["lr"]["max"]
    assert config["train"]["lr"] == "auto" and config["lr"]["range_test"]["chosen"] == chosen
    assert {"lr_range.json", "lr_range.png"} <= set(os.listdir(auto))
    curve = json.load(open(os.path.join(auto, "lr_range.json")))
    assert len(curve["lrs"]) == len(curve["losses"]) <= 20 and curve["chosen"] == chosen
    fixed = str(tmp_path / "fixed")
    train_head(TrainConfig(cache=small_world, out=fixed, epochs=1, lr=chosen, progress=False))
    left, right = load_tensors(os.path.join(auto, "head.pt")), load_tensors(os.path.join(fixed, "head.pt"))
    assert all(torch.equal(left[key], right[key]) for key in left)   # the test restored every weight


def test_paper_flag_gives_the_papers_settings_and_refuses_contradictions(small_world, tmp_path):
    out = str(tmp_path / "paper")
    result = CliRunner().invoke(main, ["train-head", "--cache", small_world, "--out", out, "--epochs", "1",
                                       "--paper"])
    assert result.exit_code == 0, result.output
    recorded = json.load(open(os.path.join(out, "config.json")))
    assert from_dict(TrainConfig, recorded["train"]) == TrainConfig(**{**recorded["train"], **PAPER_SETTINGS})
    assert recorded["calibration"]["logit_scale"] == {"initial": 100.0, "learnable": False, "final": 100.0}
    result = CliRunner().invoke(main, ["train-head", "--cache", small_world, "--out", out, "--paper",
                                       "--lr", "1e-2", "--overwrite"])
    assert result.exit_code == 2 and "--paper sets --lr" in result.output
