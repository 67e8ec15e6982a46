"""`ovml finetune` on the tiny CLIP: the image tower changes, the text tower does not, `extract
--model` reads the result, and an interrupted run resumes to the same weights."""
from __future__ import annotations

import json
import os

import pytest
import torch
import zarr
from click.testing import CliRunner

from ovml.cli import main
from ovml.config import FinetuneConfig
from ovml.errors import UsageError
from ovml.extract.backbone.weights import file_sha256, read_state_dict
from ovml.train import finetune as finetune_module
from ovml.train.finetune import finetune, sidecar


def config_for(root: str, model: str, out: str, **options) -> FinetuneConfig:
    return FinetuneConfig(**{"dataset": "folder", "root": root, "model": model, "out": out, "epochs": 2, "lr": 1e-3,
                             "batch_size": 8, "limit": 9, "workers": 0, "progress": False, **options})


def test_finetune_changes_the_image_tower_and_extract_reads_it(folder_dataset, tiny_clip, tmp_path):
    out = str(tmp_path / "tuned.pt")
    result = CliRunner().invoke(main, ["finetune", "--dataset", "folder", "--root", folder_dataset, "--model",
                                       tiny_clip, "--out", out, "--epochs", "1", "--lr", "1e-3", "--batch-size", "8",
                                       "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "extract" in result.output and not os.path.exists(os.path.join(sidecar(out), "checkpoint.pt"))
    with open(os.path.join(sidecar(out), "log.jsonl")) as handle:
        log = [json.loads(line) for line in handle]
    assert [entry["epoch"] for entry in log] == [1] and log[0]["unreadable"] > 0   # the broken images
    before, after = read_state_dict(tiny_clip), read_state_dict(out)
    assert before.keys() == after.keys()
    visual = [key for key in before if key.startswith("visual.")]
    assert any(not torch.equal(before[key].float(), after[key].float()) for key in visual)
    assert after["visual.conv1.weight"].dtype == torch.float16                    # OpenAI's layout
    for key in before:
        if not key.startswith("visual."):
            assert torch.equal(before[key].float(), after[key].float()), key     # the text tower is frozen

    cache = str(tmp_path / "tuned.zarr")
    result = CliRunner().invoke(main, ["extract", "--dataset", "folder", "--root", folder_dataset, "--model", out,
                                       "--out", cache, "--workers", "0", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    backbone = zarr.open_group(cache, mode="r").attrs["backbone"]
    assert backbone["weights_sha256"] == file_sha256(out) != file_sha256(tiny_clip)

    again = CliRunner().invoke(main, ["finetune", "--dataset", "folder", "--root", folder_dataset, "--model",
                                      tiny_clip, "--out", out, "--workers", "0"])
    assert again.exit_code == 1 and "--overwrite" in again.output


class Interrupted(Exception):
    pass


def test_interrupted_finetune_resumes_to_the_same_weights(folder_dataset, tiny_clip, tmp_path, monkeypatch):
    whole = str(tmp_path / "whole.pt")
    finetune(config_for(folder_dataset, tiny_clip, whole))
    broken = str(tmp_path / "broken.pt")
    real_epoch = finetune_module.Finetuner.epoch

    def stop_at_second(self, epoch):
        if epoch == 2:
            raise Interrupted
        return real_epoch(self, epoch)

    monkeypatch.setattr(finetune_module.Finetuner, "epoch", stop_at_second)
    with pytest.raises(Interrupted):
        finetune(config_for(folder_dataset, tiny_clip, broken))
    monkeypatch.setattr(finetune_module.Finetuner, "epoch", real_epoch)
    assert os.path.exists(os.path.join(sidecar(broken), "checkpoint.pt")) and not os.path.exists(broken)
    with pytest.raises(UsageError, match="other settings \\(lr\\)") as refused:
        finetune(config_for(folder_dataset, tiny_clip, broken, lr=1e-4))
    assert str(refused.value) == (f"{sidecar(broken)}: the run there has other settings (lr); resume it with its "
                                  "own settings or pass --overwrite to start again")      # as train-head's (test_train)
    finetune(config_for(folder_dataset, tiny_clip, broken))
    left, right = read_state_dict(whole), read_state_dict(broken)
    assert all(torch.equal(left[key], right[key]) for key in left)
    with open(os.path.join(sidecar(broken), "log.jsonl")) as handle:
        assert [json.loads(line)["epoch"] for line in handle] == [1, 2]


def test_finetune_refuses_a_split_without_seen_positives(folder_dataset, tiny_clip, tmp_path):
    with open(os.path.join(folder_dataset, "classes.csv"), "w") as handle:
        handle.write("name,seen\n" + "".join(f"{name},0\n" for name in
                                              ("red_square", "green_disc", "blue_bar", "yellow_dot", "white_ring")))
    with pytest.raises(UsageError, match="no seen labels"):
        finetune(config_for(folder_dataset, tiny_clip, str(tmp_path / "x.pt")))
