"""A training run's folder: `head.pt` (tensors only), `config.json`, `log.jsonl`, `checkpoint.pt`.

Checkpoints load with `weights_only=True` and must hold nothing but tensors (fault R5 in
docs/benchmarks.md): a pickle payload or a corrupted file is refused with a one-line error.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..errors import UsageError

HEAD_FILE, CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE = "head.pt", "config.json", "log.jsonl", "checkpoint.pt"


class CheckpointError(UsageError):
    """A head or checkpoint file that is not a plain tensor file."""


def save_tensors(path: str, state: dict) -> None:
    """Write atomically (temp file + rename) so an interruption never leaves half a file."""
    temporary = path + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)


def schedule_state(schedule: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """A learning-rate schedule's state without functions, so `weights_only=True` can load it:
    before torch 2.4 OneCycleLR's state_dict carries its annealing function, which the schedule
    rebuilt from the same settings already has."""
    return {key: value for key, value in schedule.state_dict().items() if not callable(value)}


def _only_plain_values(value) -> bool:
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (int, float, str, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_only_plain_values(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _only_plain_values(v) for k, v in value.items())
    return False


def load_tensors(path: str, flat: bool = True) -> dict:
    """Read a checkpoint with `weights_only=True`; `flat` demands a {name: tensor} mapping."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a plain tensor file, refused ({reason[:200]})") from err
    if not isinstance(state, dict) or not _only_plain_values(state):
        raise CheckpointError(f"{path}: not a plain tensor file, refused (unexpected contents)")
    if flat and not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected only named tensors")
    return state


@dataclass
class RunFolder:
    """Paths inside one run folder."""

    path: str

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def exists(self) -> bool:
        return os.path.exists(self.file(CONFIG_FILE))

    def read_config(self) -> dict:
        try:
            with open(self.file(CONFIG_FILE), encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            raise UsageError(f"{self.path}: not a run folder (no {CONFIG_FILE})") from None
        except ValueError as err:
            raise UsageError(f"{self.file(CONFIG_FILE)}: not valid JSON ({err})") from None

    def write_config(self, config: dict) -> None:
        temporary = self.file(CONFIG_FILE) + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
        os.replace(temporary, self.file(CONFIG_FILE))

    def append_log(self, entry: dict) -> None:
        with open(self.file(LOG_FILE), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def read_log(self) -> list[dict]:
        if not os.path.exists(self.file(LOG_FILE)):
            return []
        with open(self.file(LOG_FILE), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def truncate_log(self, epochs: int) -> None:
        """Keep the first `epochs` lines (those the resumed checkpoint covers)."""
        kept = [entry for entry in self.read_log() if entry.get("epoch", 0) <= epochs]
        with open(self.file(LOG_FILE), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(entry, sort_keys=True) + "\n" for entry in kept)
