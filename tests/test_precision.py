"""`--amp` (mixed precision for the head): ignored with one line on the CPU, where results stay
float32 bit for bit; the autocast and loss-scaling wiring exercised on the CPU."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ovml.cli import main
from ovml.errors import UsageError
from ovml.train.run_folder import load_tensors
from ovml.precision import MixedPrecision, mixed_precision, scaled_step

TRAIN = ["--epochs", "1", "--batch-size", "32", "--lr", "1e-2", "--logit-scale", "20", "--seed", "3"]


def test_amp_is_ignored_off_cuda_and_checked():
    resolved = mixed_precision("bf16", "cpu")
    assert resolved.dtype is None and resolved.note == (
        "--amp bf16 ignored on cpu: the head runs in float32 (autocast is used on CUDA devices only)")
    assert mixed_precision(None, "cpu") == MixedPrecision("cpu", None)
    with pytest.raises(UsageError, match="--amp must be one of bf16, fp16"):
        mixed_precision("fp8", "cpu")
    assert not mixed_precision("fp16", "cpu").grad_scaler().is_enabled()


def test_train_and_eval_with_amp_on_cpu_say_so_and_stay_float32(small_world, tmp_path):
    runner = CliRunner()
    runs = {}
    for name, extra in (("plain", []), ("amp", ["--amp", "fp16"])):
        runs[name] = str(tmp_path / name)
        result = runner.invoke(main, ["train-head", "--cache", small_world, "--out", runs[name], *TRAIN, *extra])
        assert result.exit_code == 0, result.output
        said = [line for line in result.output.splitlines() if "--amp" in line]
        assert said == ([] if name == "plain" else ["--amp fp16 ignored on cpu: the head runs in float32 "
                                                    "(autocast is used on CUDA devices only)"])
    left, right = (load_tensors(os.path.join(runs[n], "head.pt")) for n in ("plain", "amp"))
    assert all(torch.equal(left[key], right[key]) for key in left)
    metrics = {}
    for name, extra in (("plain", []), ("amp", ["--amp", "bf16"])):
        result = runner.invoke(main, ["eval", "--cache", small_world, "--head", runs["plain"], "--alpha", "0",
                                      "--baselines", "none", "--out", str(tmp_path / f"eval-{name}"), *extra])
        assert result.exit_code == 0, result.output
        assert ("--amp bf16 ignored on cpu" in result.output) == (name == "amp")
        with open(tmp_path / f"eval-{name}" / "metrics.json") as handle:
            metrics[name] = json.load(handle)["rows"]
    assert metrics["plain"] == metrics["amp"]


def test_autocast_and_loss_scaling_wiring(small_world, tmp_path, monkeypatch):
    """The CUDA branch's code path (fp16 autocast, loss scaling, the scaler in the checkpoint and
    on --resume), run with the CPU's own autocast: it trains and resumes, and the eval wrapper
    returns float32 scores close to the float32 head's."""
    monkeypatch.setattr("ovml.train.trainer.mixed_precision",
                        lambda amp, device: MixedPrecision("cpu", torch.float16 if amp == "fp16" else None))
    run = str(tmp_path / "run")
    runner = CliRunner()
    result = runner.invoke(main, ["train-head", "--cache", small_world, "--out", run, *TRAIN, "--amp", "fp16"])
    assert result.exit_code == 0, result.output
    checkpoint = load_tensors(os.path.join(run, "checkpoint.pt"), flat=False)
    scaler = checkpoint["scaler"]
    assert 1 < scaler["scale"] < 2.0 ** 16 and "_growth_tracker" in scaler   # active: it dropped from its start
    assert checkpoint["schedule"]["last_epoch"] > 0                          # and steps were taken
    again = TRAIN[:1] + ["2"] + TRAIN[2:]
    result = runner.invoke(main, ["train-head", "--cache", small_world, "--out", run, *again, "--amp", "fp16",
                                  "--resume"])
    assert result.exit_code == 0, result.output
    assert load_tensors(os.path.join(run, "checkpoint.pt"), flat=False)["epoch"] == 2
    head = torch.nn.Linear(8, 4)
    inputs = torch.randn(3, 8)
    wrapped = MixedPrecision("cpu", torch.bfloat16).wrap(head)(inputs)
    assert wrapped.dtype == torch.float32
    assert np.allclose(wrapped.detach().numpy(), head(inputs).detach().numpy(), atol=0.05)


def test_a_step_the_scaler_skips_leaves_the_schedule_where_it_was():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    scaled_step((weight * float("inf")).sum(), optimizer, scaler, schedule)      # overflow: skipped
    assert schedule.last_epoch == 0 and torch.equal(weight.detach(), torch.ones(3))
    scaled_step(weight.sum(), optimizer, scaler, schedule)
    assert schedule.last_epoch == 1 and not torch.equal(weight.detach(), torch.ones(3))
