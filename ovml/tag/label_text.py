"""Text embeddings of a tag run's vocabulary.

From a cache, a name the cache already holds (matched on `name_key`) takes its stored embedding,
so a cache tags its own vocabulary with no CLIP weights at hand; only the other names go through
CLIP's text tower. That tower is built from the weights file alone: the image tower is never
wrapped as a `Backbone` nor run, and the weights must be the ones the cache was extracted with.
"""
from __future__ import annotations

import numpy as np
import torch

from ..cache.reader import CacheReader
from ..errors import UsageError
from ..extract.backbone.weights import BackboneError, load_clip
from ..extract.text import embed_labels
from .vocabulary import name_key


def load_text_model(model: str, device: str, download_root: str | None,
                    expected_sha256: str | None = None) -> torch.nn.Module:
    """CLIP built from `model`'s weights for its text tower (float32, eval, no gradients); refused
    when `expected_sha256` is given and the weights differ."""
    network, sha256 = load_clip(model, torch.device(device), download_root)
    if expected_sha256 and sha256 != expected_sha256:
        raise UsageError(f"{model}: not the CLIP the cache was extracted with (sha256 {sha256[:12]}... "
                         f"against {expected_sha256[:12]}...)")
    network.float()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def cache_label_text(reader: CacheReader, names: list[str], templates: list[str], model: str | None,
                     device: str, download_root: str | None, progress: bool) -> tuple[np.ndarray, list[str]]:
    """(L, D) float32 text of `names` over a cache, and a note on how many went through CLIP."""
    stored = {name_key(name): row for row, name in reversed(list(enumerate(reader.names)))}
    rows = [stored.get(name_key(name)) for name in names]
    text = np.zeros((len(names), reader.embed_dim), dtype=np.float32)
    for column, row in enumerate(rows):
        if row is not None:
            text[column] = reader.text[row]
    missing = [column for column, row in enumerate(rows) if row is None]
    if not missing:
        return text, []
    weights = model or reader.backbone.get("name") or "RN50"
    try:
        network = load_text_model(weights, device, download_root, reader.backbone.get("weights_sha256"))
    except BackboneError as err:
        shown = ", ".join(names[c] for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UsageError(f"{len(missing)} name(s) are not in {reader.path} ({shown}): their text needs the "
                         f"cache's CLIP, which cannot be loaded ({err}); pass --model FILE") from err
    text[missing] = embed_labels(network, [names[c] for c in missing], templates, device, progress=progress)
    note = (f"{len(names) - len(missing)} name(s) use the cache's stored text; {len(missing)} went through "
            f"CLIP's text tower ({weights})")
    return text, [note]
