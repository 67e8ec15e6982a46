"""A training run's folder, the lifecycle `train-head` and `finetune` share.

Files: `config.json` (the settings and what the run was made from), `log.jsonl` (one line per
epoch), `checkpoint.pt` (everything an interrupted run resumes from, written after every epoch)
and, for `train-head`, `head.pt` (tensors only). A run holds the folder's writer lock throughout
(`lock`, ovml/lock.py); it is claimed (an existing one is refused unless resumed or overwritten),
then started fresh or resumed from its checkpoint once `check_resumable` has found it made from
the same source with the same settings.

Checkpoints load with `weights_only=True` and must hold nothing but tensors (fault R5 in
docs/benchmarks.md): a pickle payload or a corrupted file is refused with a one-line error. Every
JSON and tensor file is written atomically (`ovml/files.py`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from typing import Collection

import torch

from ..config import from_dict
from ..errors import UsageError
from ..files import save_tensors, write_json
from ..lock import FOLDER_LOCK, folder_lock

HEAD_FILE, CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE = "head.pt", "config.json", "log.jsonl", "checkpoint.pt"


class CheckpointError(UsageError):
    """A head or checkpoint file that is not a plain tensor file."""


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
    """Read a checkpoint with `weights_only=True`; `flat` demands a {name: tensor} mapping. Its
    tensors are read onto the CPU whatever device saved them, so a run saved on a GPU resumes on
    the CPU or another GPU (and one saved on the CPU on a GPU: the state is copied in place)."""
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
    """One run's folder and its files."""

    path: str

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def exists(self) -> bool:
        return os.path.exists(self.file(CONFIG_FILE))

    def has_checkpoint(self) -> bool:
        return os.path.exists(self.file(CHECKPOINT_FILE))

    def lock(self, enabled: bool = True):
        """The folder's writer lock (ovml/lock.py), held for a whole run: a second run on the same
        folder is refused at once."""
        return folder_lock(self.path, enabled)

    def claim(self, resume: bool, overwrite: bool) -> None:
        """Refuse a run already here unless it is to be resumed or overwritten; overwriting removes
        it (all but the lock file of the run that is claiming it)."""
        if self.exists() and not resume and not overwrite:
            raise UsageError(f"{self.path}: a run is already there; pass --resume to continue it "
                             "or --overwrite to replace it")
        if overwrite and os.path.isdir(self.path):
            for name in os.listdir(self.path):
                path = self.file(name)
                if name == FOLDER_LOCK:
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)

    def start(self) -> None:
        """A fresh run: the folder made, a stale log and checkpoint removed."""
        os.makedirs(self.path, exist_ok=True)
        for stale in (self.file(LOG_FILE), self.file(CHECKPOINT_FILE)):
            if os.path.exists(stale):
                os.remove(stale)

    def read_config(self) -> dict:
        try:
            with open(self.file(CONFIG_FILE), encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            raise UsageError(f"{self.path}: not a run folder (no {CONFIG_FILE})") from None
        except ValueError as err:
            raise UsageError(f"{self.file(CONFIG_FILE)}: not valid JSON ({err})") from None

    def write_config(self, config: dict) -> None:
        write_json(self.file(CONFIG_FILE), config, indent=2, sort_keys=True)

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

    def save_checkpoint(self, state: dict) -> None:
        save_tensors(self.file(CHECKPOINT_FILE), state)

    def load_checkpoint(self) -> dict:
        return load_tensors(self.file(CHECKPOINT_FILE), flat=False)

    def remove_checkpoint(self) -> None:
        if self.has_checkpoint():
            os.remove(self.file(CHECKPOINT_FILE))


def check_resumable(run: RunFolder, config, recorded: dict, may_change: Collection[str], source: str,
                    fingerprint: str, recorded_fingerprint: str | None) -> None:
    """A resumed run must continue from the same source and with the same settings: `fingerprint`
    (of the cache trained on, of the weights fine-tuned) must equal the run's `recorded_fingerprint`,
    and every field of `config` (a config dataclass) but those in `may_change` (epochs, I/O options)
    must equal the run's `recorded` fields (rebuilt with `from_dict`, so fields added since count as
    their defaults). `source` names the source in the refusal ("cache (PATH)")."""
    if recorded_fingerprint != fingerprint:
        raise UsageError(f"{run.path}: the run there was made from another {source}; resume it "
                         "from that one or pass --overwrite to start again")
    before = dataclasses.asdict(from_dict(type(config), recorded))
    now = dataclasses.asdict(config)
    changed = sorted(key for key in now if key not in may_change and before.get(key) != now[key])
    if changed:
        raise UsageError(f"{run.path}: the run there has other settings ({', '.join(changed)}); "
                         "resume it with its own settings or pass --overwrite to start again")
