"""A trained head rebuilt from its run folder: the registry builds the module the run's
config.json describes over the cache's (or backbone's) pool weights, and `head.pt` fills it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..heads.registry import build_head
from .run_folder import HEAD_FILE, RunFolder, load_tensors


@dataclass
class TrainedHead:
    """A head loaded from a run folder, with what its config.json says."""

    run: str
    name: str
    module: torch.nn.Module
    config: dict


def load_trained_head(run_dir: str, pool: dict[str, torch.Tensor], num_heads: int,
                      device: torch.device) -> TrainedHead:
    """Rebuild the head the run describes and load `head.pt` (tensors only)."""
    folder = RunFolder(run_dir)
    config = folder.read_config()
    head = config["head"]
    module = build_head(head["name"], pool, num_heads, **head.get("options", {}))
    state = load_tensors(folder.file(HEAD_FILE))
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise UsageError(f"{folder.file(HEAD_FILE)}: does not fit this cache's dimensions "
                         f"({str(err).splitlines()[0]})") from err
    return TrainedHead(run_dir, head["name"], module.to(device).eval(), config)
