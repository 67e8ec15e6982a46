"""Heads by name, so a new head is one file with a `@register` class."""
from __future__ import annotations

import torch

HEADS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a head available to `train-head --head NAME`."""
    HEADS[cls.name] = cls
    return cls


def build_head(name: str, pool: dict[str, torch.Tensor], num_heads: int, **options) -> torch.nn.Module:
    """A head initialised from CLIP's attention-pool weights (`pool/*` of the cache)."""
    from . import attention, linear  # noqa: F401  (registers the built-in heads)
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})")
    return HEADS[name].from_pool(pool, num_heads, **options)
