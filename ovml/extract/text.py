"""Label names to CLIP text embeddings: prompt-ensembled, L2-normalised (docs/cache.md `labels/text`)."""
from __future__ import annotations

import os
from importlib import resources

import numpy as np
import torch

from ..errors import OvmlError
from ..progress import progress as progress_bar
from .backbone.weights import import_clip

DEFAULT_PROMPTS = ("a photo of a {}.",)


class PromptError(OvmlError, ValueError):
    """A prompt file or template that cannot be used."""


def load_prompts(spec: str | None) -> list[str]:
    """Templates from `--prompts`: None (CLIP's single default), `imagenet80`, or a file (one per line)."""
    if spec is None or spec == "default":
        return list(DEFAULT_PROMPTS)
    if spec == "imagenet80":
        text = resources.files("ovml.extract").joinpath("prompts/imagenet80.txt").read_text()
        source = "imagenet80"
    elif os.path.isfile(spec):
        with open(spec, encoding="utf-8-sig") as handle:
            text = handle.read()
        source = spec
    else:
        raise PromptError(f"{spec}: not a prompt file, nor 'imagenet80'")
    templates = [line.strip() for line in text.splitlines() if line.strip()]
    for number, template in enumerate(templates, 1):
        if template.count("{}") != 1:
            raise PromptError(f"{source}:{number}: a template needs exactly one '{{}}', got {template!r}")
    if not templates:
        raise PromptError(f"{source}: no templates")
    return templates


def display_name(name: str) -> str:
    """The text CLIP reads for a label: underscores become spaces."""
    return name.replace("_", " ")


@torch.no_grad()
def embed_labels(model: torch.nn.Module, names: list[str], templates: list[str],
                 device: torch.device | str = "cpu", batch_size: int = 256,
                 progress: bool = True) -> np.ndarray:
    """(L, D) float32: per label, the mean of its normalised prompt embeddings, normalised again."""
    clip = import_clip()
    device = torch.device(device)
    sums = None
    prompts = [(row, template.format(display_name(name)))
               for row, name in enumerate(names) for template in templates]
    bar = progress_bar(total=len(prompts), desc="text", unit="prompt", enabled=progress)
    for start in range(0, len(prompts), batch_size):
        block = prompts[start:start + batch_size]
        tokens = clip.tokenize([text for _, text in block], truncate=True).to(device)
        embedded = model.encode_text(tokens).float()                          # (B, D)
        embedded = embedded / embedded.norm(dim=-1, keepdim=True)
        if sums is None:
            sums = torch.zeros(len(names), embedded.shape[1], device=device)
        rows = torch.tensor([row for row, _ in block], device=device)
        sums.index_add_(0, rows, embedded)
        bar.update(len(block))
    bar.close()
    if sums is None:
        return np.zeros((0, model.text_projection.shape[1]), dtype=np.float32)
    means = sums / len(templates)
    return (means / means.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)
