"""Stage 2 end to end on the planted world: learning, ablation, resume, checkpoints (R5 in docs/benchmarks.md)."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from ovml.cache.reader import CacheReader
from ovml.cache.schema import CacheError
from ovml.cli import main
from ovml.config import FinetuneConfig, TrainConfig
from ovml.errors import UsageError
from ovml.files import save_tensors
from ovml.heads.attention import OVMLHead
from ovml.train import finetune, trainer
from ovml.train.run_folder import CheckpointError, RunFolder, check_resumable, load_tensors, schedule_state
from ovml.train.trainer import Trainer, train_head
from ovml.synthetic.planted import PlantedWorld, write_planted_world
from tests.cache_arrays import all_arrays, assert_cache_checks, assert_same_arrays


def log_of(run: str) -> list[dict]:
    with open(os.path.join(run, "log.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def eval_json(cache: str, run: str, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["eval", "--cache", cache, "--head", run, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_planted_world_is_a_valid_cache_in_both_backends(planted_world, tmp_path):
    assert_cache_checks(planted_world)
    world = PlantedWorld(train_images=64, test_images=64)
    as_hdf5 = write_planted_world(str(tmp_path / "w.h5"), world)
    assert_cache_checks(as_hdf5)
    as_zarr = write_planted_world(str(tmp_path / "w.zarr"), world)
    assert_same_arrays(all_arrays(as_hdf5), all_arrays(as_zarr))  # seeded: the same world both times


@pytest.mark.slow  # trained_run: 10 epochs
def test_head_beats_clip_ml_on_unseen_labels(planted_world, trained_run, tmp_path):
    """Measured on this world: ZSL mAP 53.3 (head) vs 43.1 (CLIP-ML); assert half the margin."""
    log = log_of(trained_run)
    assert len(log) == 10 and min(epoch["loss"] for epoch in log[1:]) < log[0]["loss"]
    metrics = eval_json(planted_world, trained_run, "--alpha", "0,1", "--baselines", "clip-ml",
                        "--out", str(tmp_path / "eval"))
    rows = {(r["method"], r["alpha"]): r for r in metrics["rows"]}
    assert rows[("ovml", 0.0)]["mAP"] - rows[("clip-ml", None)]["mAP"] >= 5.0
    assert rows[("ovml", 0.0)]["F1@3"] > rows[("clip-ml", None)]["F1@3"]
    for key in ("mAP", "P@3", "R@3", "F1@3", "F1@5"):  # alpha = 1 is CLIP-ML exactly
        assert rows[("ovml", 1.0)][key] == rows[("clip-ml", None)][key]
    config = json.load(open(os.path.join(trained_run, "config.json")))
    assert config["cache"]["path"] == os.path.abspath(planted_world) and config["seed"] == 0
    assert set(torch.load(os.path.join(trained_run, "head.pt"), weights_only=True)) >= {"q_proj.weight"}


def test_no_contrastive_ablation_trains(planted_world, tmp_path):
    out = str(tmp_path / "ablation")
    result = CliRunner().invoke(main, ["train-head", "--cache", planted_world, "--out", out, "--epochs", "3",
                                       "--lr-range-steps", "30", "--no-contrastive"])
    assert result.exit_code == 0, result.output
    log = log_of(out)
    assert "contrastive" not in log[0] and min(epoch["rank"] for epoch in log[1:]) < log[0]["rank"]
    assert json.load(open(os.path.join(out, "config.json")))["train"]["contrastive_weight"] == 0.0


def small_config(cache: str, out: str, **options) -> TrainConfig:
    return TrainConfig(**{"cache": cache, "out": out, "epochs": 3, "lr": 1e-2, "logit_scale": 20.0,
                          "progress": False, **options})


class Interrupted(Exception):
    pass


RESUME_REFUSAL = ("{run}: the run there has other settings ({changed}); resume it with its own settings or pass "
                  "--overwrite to start again")


@pytest.mark.parametrize("config,may_change", [
    (TrainConfig(cache="c.zarr", out="run"), trainer.RESUMABLE_CHANGES),
    (FinetuneConfig(dataset="folder", root="data", out="tuned.pt"), finetune.RESUMABLE_CHANGES)])
def test_one_resume_rule_for_train_head_and_finetune(tmp_path, config, may_change):
    """The same source (fingerprint) and the same settings but epochs and I/O options."""
    run, recorded = RunFolder(str(tmp_path)), dataclasses.asdict(config)
    check_resumable(run, config, recorded, may_change, "cache", "f1", "f1")
    check_resumable(run, dataclasses.replace(config, epochs=config.epochs + 1, progress=False), recorded, may_change,
                    "cache", "f1", "f1")
    with pytest.raises(UsageError) as refused:
        check_resumable(run, dataclasses.replace(config, lr=0.5, seed=3), recorded, may_change, "cache", "f1", "f1")
    assert str(refused.value) == RESUME_REFUSAL.format(run=tmp_path, changed="lr, seed")
    with pytest.raises(UsageError, match="made from another cache"):
        check_resumable(run, config, recorded, may_change, "cache", "f2", "f1")


def test_building_a_trainer_runs_no_forward_pass(small_world, tmp_path, monkeypatch):
    """Construction is cheap; prepare() calibrates on the first batch and runs the range test."""
    calls = []
    forward, calibrate_query = OVMLHead.forward, OVMLHead.calibrate_query
    monkeypatch.setattr(OVMLHead, "forward", lambda head, *args: calls.append("forward") or forward(head, *args))
    monkeypatch.setattr(OVMLHead, "calibrate_query",
                        lambda head, *args: calls.append("calibrate_query") or calibrate_query(head, *args))
    config = TrainConfig(cache=small_world, out=str(tmp_path / "run"), lr_range_steps=10, progress=False)
    with CacheReader(small_world) as reader:
        built = Trainer(config, reader)                       # lr and logit scale "auto", q_init dense
        assert calls == [] and built.optimizer is None and built.logit_scale is None
        built.prepare()
    assert calls[:2] == ["calibrate_query", "forward"] and calls.count("forward") > 2   # then the range test
    assert built.range_test is not None and built.lr == built.range_test.chosen and built.optimizer is not None


def interrupt_after_first_epoch(world: str, out: str) -> None:
    """Train a run into `out` and interrupt it after its first epoch, as a kill would."""
    def stop_after_first(epoch):
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_head(small_config(world, out), on_epoch_end=stop_after_first)


def test_resume_ends_where_an_uninterrupted_run_ends(small_world, tmp_path):
    whole = str(tmp_path / "whole")
    train_head(small_config(small_world, whole))
    broken = str(tmp_path / "broken")

    interrupt_after_first_epoch(small_world, broken)
    with pytest.raises(UsageError, match="--resume"):
        train_head(small_config(small_world, broken))
    with pytest.raises(UsageError, match="other settings \\(lr\\)") as refused:
        train_head(small_config(small_world, broken, lr=1e-3), resume=True)
    assert str(refused.value) == RESUME_REFUSAL.format(run=broken, changed="lr")   # as finetune's (test_finetune)
    train_head(small_config(small_world, broken), resume=True)
    for name in ("head.pt", "checkpoint.pt"):
        left = load_tensors(os.path.join(whole, name), flat=False)
        right = load_tensors(os.path.join(broken, name), flat=False)
        assert torch.equal(left["q_proj.weight"] if name == "head.pt" else left["head"]["q_proj.weight"],
                           right["q_proj.weight"] if name == "head.pt" else right["head"]["q_proj.weight"])
    strip = lambda log: [{k: v for k, v in e.items() if k not in ("seconds", "images_per_second")} for e in log]
    assert strip(log_of(whole)) == strip(log_of(broken))


def test_a_run_resumes_on_another_device(small_world, tmp_path, monkeypatch):
    """`reproduce --gpu 0` over rows started on the CPU resumes their runs: the device may change
    on resume, and a checkpoint saved on one device loads on another (its storages read onto the
    CPU, then copied into the parameters and the optimiser's state where they live). Here a run
    made on cuda:0 (its config.json says so, and every storage of its checkpoint is tagged cuda:0,
    as torch.save tags a GPU's) resumes on this CPU and ends where an uninterrupted run ends."""
    assert "device" in trainer.RESUMABLE_CHANGES
    whole = str(tmp_path / "whole")
    train_head(small_config(small_world, whole))
    moved = str(tmp_path / "moved")

    interrupt_after_first_epoch(small_world, moved)
    folder = RunFolder(moved)
    config = folder.read_config()
    config["train"]["device"] = "cuda:0"
    folder.write_config(config)
    state = folder.load_checkpoint()
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        folder.save_checkpoint(state)
    if not torch.cuda.is_available():   # read back where it was saved, it needs a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(folder.file("checkpoint.pt"), weights_only=True)
    train_head(small_config(small_world, moved), resume=True)
    left = load_tensors(os.path.join(whole, "head.pt"))
    right = load_tensors(os.path.join(moved, "head.pt"))
    assert all(torch.equal(left[key], right[key]) for key in left)
    strip = lambda log: [{k: v for k, v in e.items() if k not in ("seconds", "images_per_second")} for e in log]
    assert strip(log_of(whole)) == strip(log_of(moved))


def test_training_steps_do_not_wait_for_the_device(small_world, tmp_path, monkeypatch):
    """The steps' losses stay on the device until the epoch ends (no float() per step: each would
    wait for the device and blur what --amp gains); the log's means are read once."""
    with CacheReader(small_world) as reader:
        built = Trainer(small_config(small_world, str(tmp_path / "run")), reader)
        built.prepare()
        reads = []
        read = torch.Tensor.__float__
        monkeypatch.setattr(torch.Tensor, "__float__", lambda tensor: reads.append(tensor.shape) or read(tensor))
        entry = built.train_epoch(1)
    assert entry["steps"] >= 4 and len(reads) <= 1          # the logit scale, once
    assert np.isfinite(entry["loss"]) and set(entry) >= {"loss", "rank", "contrastive"}


def test_streaming_and_in_memory_train_identically(small_world, tmp_path):
    streamed = train_head(small_config(small_world, str(tmp_path / "s"), epochs=2))
    in_memory = train_head(small_config(small_world, str(tmp_path / "m"), epochs=2, in_memory=True))
    assert streamed.last_loss == in_memory.last_loss
    left = load_tensors(str(tmp_path / "s" / "head.pt"))
    right = load_tensors(str(tmp_path / "m" / "head.pt"))
    assert all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("options", [{"head": "linear"}, {"negatives": 5}, {"rank_loss": "hinge"},
                                     {"q_init": "pinv", "contrastive_weight": 0.0}])
def test_other_heads_and_losses_train(small_world, tmp_path, options):
    result = train_head(small_config(small_world, str(tmp_path / "run"), epochs=2, **options))
    assert np.isfinite(result.last_loss) and result.best_epoch >= 1


@pytest.mark.slow  # trained_run: 10 epochs
def test_pickle_carrying_or_corrupt_head_is_refused(trained_run, planted_world, tmp_path):
    """R5: head.pt must be a plain tensor file."""
    import shutil
    for name, payload in (("evil", None), ("corrupt", b"\x80\x04garbage")):
        run = str(tmp_path / name)
        shutil.copytree(trained_run, run)
        with open(os.path.join(run, "head.pt"), "wb") as handle:
            if payload is None:
                pickle.dump({"q_proj.weight": Exploit()}, handle)
            else:
                handle.write(payload)
        with pytest.raises(CheckpointError, match="head.pt: not a plain tensor file"):
            load_tensors(os.path.join(run, "head.pt"))
        result = CliRunner().invoke(main, ["eval", "--cache", planted_world, "--head", run])
        assert result.exit_code == 1 and "not a plain tensor file" in result.output
    assert not os.path.exists(tmp_path / "pwned")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_schedule_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    """torch < 2.4 keeps OneCycleLR's annealing function in its state_dict; the checkpoint must not."""
    parameter = torch.nn.Parameter(torch.zeros(2))

    def one_cycle() -> torch.optim.lr_scheduler.OneCycleLR:
        return torch.optim.lr_scheduler.OneCycleLR(torch.optim.Adam([parameter], lr=1e-3), max_lr=1e-3,
                                                   total_steps=10)
    trained = one_cycle()
    for _ in range(3):
        trained.optimizer.step()
        trained.step()
    path = str(tmp_path / "checkpoint.pt")
    save_tensors(path, {"schedule": schedule_state(trained)})
    restored = one_cycle()
    restored.load_state_dict(load_tensors(path, flat=False)["schedule"])
    for schedule in (trained, restored):
        schedule.optimizer.step()
        schedule.step()
    assert restored.get_last_lr() == trained.get_last_lr()


@pytest.mark.slow  # trained_run: 10 epochs
def test_incomplete_cache_and_mismatched_head_are_refused(small_world, trained_run, tmp_path):
    import shutil
    partial = str(tmp_path / "partial.zarr")
    shutil.copytree(small_world, partial)
    zarr.open_group(partial, mode="a").attrs["complete"] = False
    with pytest.raises(CacheError, match="incomplete"):
        train_head(small_config(partial, str(tmp_path / "p")))
    other = write_planted_world(str(tmp_path / "other.zarr"),
                                PlantedWorld(channels=64, embed_dim=32, train_images=64, test_images=64))
    result = CliRunner().invoke(main, ["eval", "--cache", other, "--head", trained_run])
    assert result.exit_code == 1 and "does not fit" in result.output
